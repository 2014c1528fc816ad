"""``born-dead``: how likely is a narrow, deep ReLU net to be constant at initialisation?

Setting (after Lu et al. 2019, 'Dying ReLU and initialization'): bias-free MLP, ``d_in = 1``, ``L - 1`` hidden ReLU layers of
width ``N`` and a linear output layer (``L`` layers in all), weights N(0, 2/fan_in)
(He). At one input point a width-N layer is all-zero with probability 2^-N,
independently across layers, so

    P(dead at x = +1) = 1 - (1 - 2^-N)^(L-1).

Being bias-free, the net is positively homogeneous: it is constant (born dead) exactly
when both the x = +1 and the x = -1 branches hit an all-zero layer, so the closed form
upper-bounds P(born dead).

The check is gradvitals' own definition of a dead unit, "not positive for any input"
(``SiteStats.ever_positive``), applied to whole layers: :func:`dead_branches` runs
thousands of nets at once with batched matmuls. A sample of real ``nn.Sequential`` nets
is also checked by the library itself: ``gradvitals.lint(net, x)`` (its born-dead
"layer entirely dead on example_input" finding) and ``gradvitals.watch`` (a ReLU site
with ``dead_fraction == 1``) must agree with the batched check, at ``x = +1`` and at
``x = +-1``.

>>> import torch
>>> w = [torch.tensor([[[1.0], [-1.0]]]), torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])]
>>> dead_branches(w, torch.tensor([1.0, -1.0])).tolist()  # x=-1 dies in layer 2
[[False, True]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradvitals.lab._context import LabContext
from gradvitals.lab._plot import figure, save
from gradvitals.lab._result import LabResult

__all__ = [
    "CLAIM",
    "REFERENCE",
    "SIZES",
    "Config",
    "closed_form",
    "dead_branches",
    "lint_says_dead",
    "monitor_says_dead",
    "monte_carlo",
    "run",
]

CLAIM = (
    "A random bias-free ReLU MLP of width N and L layers (He init, d_in = 1) is dead at "
    "an input with probability 1-(1-2^-N)^(L-1) (Lu et al. 2019: "
    "'born dead' nets; Rister & Rubin 2020)."
)

#: an independent Monte Carlo run (numpy, seed 0): (N, L) -> (P(born dead) bias-free, P(x>0 dead)), 20k trials.
REFERENCE: dict[tuple[int, int], tuple[float, float]] = {
    (2, 10): (0.879, 0.925),
    (2, 20): (0.993, 0.996),
    (3, 10): (0.579, 0.699),
    (3, 20): (0.887, 0.920),
    (3, 50): (0.997, 0.998),
    (4, 10): (0.293, 0.439),
    (4, 20): (0.625, 0.708),
    (4, 50): (0.948, 0.960),
    (5, 10): (0.127, 0.249),
    (5, 20): (0.358, 0.450),
    (5, 50): (0.755, 0.794),
    (10, 10): (0.001, 0.008),
    (10, 20): (0.007, 0.018),
    (10, 50): (0.036, 0.049),
}


@dataclass(frozen=True)
class Config:
    """Sizes and settings.

    Attributes:
        widths: hidden widths N.
        depths: depths L (hidden ReLU layers + the linear output layer).
        trials: random nets per (N, L) cell.
        check_nets: real ``nn.Sequential`` nets per cell cross-checked with ``lint``.
        monitor_nets: of those, how many are also run under ``gradvitals.watch``.
        biased_trials: nets per cell with N(0, 1) biases, judged constant on a grid of
            ``grid`` points in [-1, 1] (0: skip).
        grid: grid points for the biased nets.
        tolerance: allowed |Monte Carlo - closed form| (at least 3 standard errors).
    """

    widths: tuple[int, ...] = (2, 3, 4, 5, 10)
    depths: tuple[int, ...] = (10, 20, 50)
    trials: int = 20_000
    check_nets: int = 40
    monitor_nets: int = 4
    biased_trials: int = 0
    grid: int = 2001
    tolerance: float = 0.02


SIZES: dict[str, Config] = {
    "smoke": Config(
        widths=(2, 3, 5, 10), depths=(10, 20), trials=3000, check_nets=10, monitor_nets=2
    ),
    "default": Config(),
    "full": Config(trials=200_000, check_nets=200, monitor_nets=20, biased_trials=2000),
}


def closed_form(width: int, depth: int) -> float:
    """1 - (1 - 2^-N)^(L-1): P(an all-zero hidden layer at one input point).

    >>> round(closed_form(3, 10), 3), round(closed_form(10, 50), 3)
    (0.699, 0.047)
    """
    return 1.0 - (1.0 - 2.0**-width) ** (depth - 1)


def _weights(
    trials: int, width: int, depth: int, gen: torch.Generator, dtype: torch.dtype = torch.float32
) -> list[torch.Tensor]:
    """He-initialised hidden-layer matrices, batched over trials: (T, N, fan_in) each."""
    ws = [torch.randn(trials, width, 1, generator=gen, dtype=dtype) * math.sqrt(2.0)]
    for _ in range(depth - 2):
        w = torch.randn(trials, width, width, generator=gen, dtype=dtype)
        ws.append(w * math.sqrt(2.0 / width))
    return ws


@torch.no_grad()
def dead_branches(
    weights: list[torch.Tensor], x: torch.Tensor, biases: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """For T nets at once: does input ``x[p]`` hit a layer with no unit positive?

    Args:
        weights: hidden layers, ``(T, out, in)`` each; the first has ``in = 1``.
        x: ``(P,)`` scalar inputs.
        biases: optional ``(T, out)`` per layer.

    Returns:
        ``(T, P)`` bool. Once a layer is all zero every later one is too (for a
        bias-free net), so the net is constant on ``x`` iff every entry of a row is True.
    """
    h = weights[0] * x[None, None, :]  # (T, N, 1) * (1, 1, P) -> (T, N, P)
    dead = torch.zeros(weights[0].shape[0], x.numel(), dtype=torch.bool)
    for i, w in enumerate(weights):
        if i:
            h = torch.bmm(w, h)  # (T, N, N) x (T, N, P) -> (T, N, P)
        if biases is not None:
            h = h + biases[i][:, :, None]
        h = h.clamp_min(0.0)
        dead |= ~(h > 0).any(1)  # no unit positive: the layer is dead at this input
    return dead


@torch.no_grad()
def monte_carlo(
    width: int, depth: int, trials: int, x: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """:func:`dead_branches` for ``trials`` fresh He-initialised nets. Nets dead on every
    input are dropped as they die (they stay dead), so later layers are drawn only for the
    living ones."""
    h = (torch.randn(trials, width, 1, generator=gen) * math.sqrt(2.0) * x).clamp_min_(0.0)
    cur = ~(h > 0).any(1)  # (T_alive, P): dead so far, for the nets still tracked
    idx = torch.arange(trials)
    out = torch.zeros(trials, x.numel(), dtype=torch.bool)
    for _ in range(depth - 2):
        done = cur.all(1)
        n_done = int(done.sum())
        if n_done == len(idx):
            break
        if n_done > len(idx) // 4:  # compact: forget nets that are dead everywhere
            out[idx[done]] = True
            keep = ~done
            idx, h, cur = idx[keep], h[keep], cur[keep]
        w = torch.randn(len(idx), width, width, generator=gen) * math.sqrt(2.0 / width)
        h = torch.bmm(w, h).clamp_min_(0.0)  # (T, N, N) x (T, N, P) -> (T, N, P)
        cur |= ~(h > 0).any(1)
    out[idx] = cur
    return out


def _biased_constant(width: int, depth: int, trials: int, grid: int, gen: torch.Generator) -> float:
    """P(constant on [-1, 1]) with N(0, 1) biases: some hidden layer's output is identical
    at every grid point. In float64: in float32 a deep layer's tiny dependence on x rounds
    away and the net looks constant when it is not (+0.03 at N=5, L=50)."""
    f64 = torch.float64
    x = torch.linspace(-1.0, 1.0, grid, dtype=f64)
    const = 0
    for start in range(0, trials, 250):
        t = min(250, trials - start)
        ws = _weights(t, width, depth, gen, f64)
        bs = [torch.randn(t, width, generator=gen, dtype=f64) for _ in ws]
        h = ws[0] * x[None, None, :]
        flat = torch.zeros(t, dtype=torch.bool)
        for i, w in enumerate(ws):
            if i:
                h = torch.bmm(w, h)
            h = (h + bs[i][:, :, None]).clamp_min(0.0)
            flat |= (h.amax(2) - h.amin(2)).amax(1) <= 1e-12  # layer output constant in x
        const += int(flat.sum())
    return const / trials


def _net(w: list[torch.Tensor]) -> nn.Sequential:
    """The real bias-free ``nn.Sequential`` with one trial's hidden weights."""
    layers: list[nn.Module] = []
    for m in w:
        lin = nn.Linear(m.shape[1], m.shape[0], bias=False)
        lin.weight.data.copy_(m)
        layers += [lin, nn.ReLU()]
    layers.append(nn.Linear(w[-1].shape[0], 1, bias=False))
    return nn.Sequential(*layers)


def lint_says_dead(net: nn.Module, x: torch.Tensor) -> bool:
    """``gradvitals.lint(net, x)`` reports a ReLU layer entirely dead on the inputs ``x``."""
    import gradvitals

    return any(
        f.kind.value == "born_dead"
        and f.layer is not None
        and f.evidence.get("dead_fraction", 0) >= 1.0
        for f in gradvitals.lint(net, x[:, None])
    )


def monitor_says_dead(net: nn.Module, x: torch.Tensor) -> bool:
    """Run one step of ``net`` on ``x`` under ``gradvitals.watch``: does some ReLU site
    have ``dead_fraction == 1`` (no unit positive for any input)?"""
    import gradvitals

    monitor = gradvitals.watch(net, None, every=1, console=False, lint=False)
    net(x[:, None]).sum().backward()
    monitor.step()
    monitor.close()
    return any(s.dead_fraction == 1.0 for s in monitor.history[0].sites.values())


def run(cfg: Config, ctx: LabContext) -> LabResult:
    """Monte Carlo over every (N, L) cell; cross-check a sample with the monitor."""
    gen = torch.Generator().manual_seed(ctx.seed)
    x = torch.tensor([1.0, -1.0])
    rows: list[dict[str, Any]] = []
    checked = agreed = 0  # lint at x=+1 and x=+-1, and the monitor at x=+-1
    cells = [(n, d) for n in cfg.widths for d in cfg.depths]
    bar = ctx.bar(len(cells))
    for n, d in cells:
        dead = monte_carlo(n, d, cfg.trials, x, gen)
        if cfg.check_nets:
            ws = _weights(cfg.check_nets, n, d, gen)
            batched = dead_branches(ws, x)
            for t in range(cfg.check_nets):
                net = _net([w[t] for w in ws])
                truth = [bool(batched[t, 0]), bool(batched[t].all())]
                said = [lint_says_dead(net, x[:1]), lint_says_dead(net, x)]
                if t < cfg.monitor_nets:
                    truth.append(truth[1])
                    said.append(monitor_says_dead(net, x))
                agreed += sum(a == b for a, b in zip(truth, said, strict=True))
                checked += len(truth)
        p_pos = float(dead[:, 0].float().mean())
        p_bd = float(dead.all(1).float().mean())
        cf = closed_form(n, d)
        se = math.sqrt(max(cf * (1 - cf), 1e-6) / cfg.trials)
        ref = REFERENCE.get((n, d))
        row: dict[str, Any] = {
            "N": n,
            "L": d,
            "P(x>0 dead) MC": p_pos,
            "closed form": cf,
            "|Δ|": abs(p_pos - cf),
            "tolerance": max(cfg.tolerance, 3 * se),
            "P(born dead) MC": p_bd,
            "reference x>0": ref[1] if ref else None,
            "reference born dead": ref[0] if ref else None,
        }
        if cfg.biased_trials:
            row["P(constant) with biases"] = _biased_constant(
                n, d, cfg.biased_trials, cfg.grid, gen
            )
        rows.append(row)
        bar.update()
    bar.close()

    worst = max(rows, key=lambda r: r["|Δ|"] / r["tolerance"])
    within = all(r["|Δ|"] <= r["tolerance"] for r in rows)
    bounded = all(r["P(born dead) MC"] <= r["closed form"] + r["tolerance"] for r in rows)
    holds = within and bounded and agreed == checked
    ref_dev = [
        abs(r["P(x>0 dead) MC"] - r["reference x>0"])
        for r in rows
        if r["reference x>0"] is not None
    ]
    example = next((r for r in rows if (r["N"], r["L"]) == (3, 10)), rows[0])
    verdict = (
        f"{'holds' if holds else 'does not hold'}: Monte Carlo P(dead at x>0) matches "
        f"1-(1-2^-N)^(L-1) in {sum(r['|Δ|'] <= r['tolerance'] for r in rows)}/{len(rows)} cells "
        f"(max |Δ| {max(r['|Δ|'] for r in rows):.4f} at N={worst['N']}, L={worst['L']}; "
        f"{cfg.trials:,} nets per cell); P(born dead) is lower, e.g. N={example['N']}, "
        f"L={example['L']}: {example['P(born dead) MC']:.3f} vs {example['closed form']:.3f}; "
        f"gradvitals.lint and the monitor agree with it on {agreed}/{checked} checks of real nets"
    )
    return LabResult(
        name=ctx.name,
        claim=CLAIM,
        table=rows,
        figures=[_plot(rows, ctx)],
        verdict=verdict,
        holds=holds,
        numbers={
            "cells": {f"N={r['N']},L={r['L']}": r["P(x>0 dead) MC"] for r in rows},
            "born_dead": {f"N={r['N']},L={r['L']}": r["P(born dead) MC"] for r in rows},
            "max_abs_diff": max(r["|Δ|"] for r in rows),
            "max_abs_diff_vs_reference": max(ref_dev) if ref_dev else None,
            "monitor_agreement": f"{agreed}/{checked}",
            "trials": cfg.trials,
        },
        literature=(
            "Lu et al. 2019 (figure, depth 10): width 10 < 1%, width 5 > 10%, width 3 about 60% "
            "born dead; an independent numpy Monte Carlo run (20k trials)."
        ),
    )


def _plot(rows: list[dict[str, Any]], ctx: LabContext) -> Any:
    fig = figure(6.0, 3.6)
    ax = fig.subplots()
    depths = np.arange(2, max(r["L"] for r in rows) + 6)
    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    for i, n in enumerate(sorted({r["N"] for r in rows})):
        c = colors[i % len(colors)]
        ax.plot(
            depths, [closed_form(n, int(d)) for d in depths], c=c, lw=1, label=f"N={n} closed form"
        )
        pts = [r for r in rows if r["N"] == n]
        ax.plot([r["L"] for r in pts], [r["P(x>0 dead) MC"] for r in pts], "o", c=c, ms=5)
        ax.plot([r["L"] for r in pts], [r["P(born dead) MC"] for r in pts], "x", c=c, ms=6)
    ax.plot([], [], "ko", ms=5, label="MC: dead at x>0")
    ax.plot([], [], "kx", ms=6, label="MC: born dead (x=±1)")
    ax.set_xlabel("depth L (hidden ReLU layers + output layer)")
    ax.set_ylabel("probability")
    ax.set_title("Born-dead ReLU nets: Monte Carlo vs 1-(1-2^-N)^(L-1)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return save(fig, ctx.figure("born-dead"))
