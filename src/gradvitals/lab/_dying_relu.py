"""``dying-relu``: dead units vs learning rate, for ReLU and three variants.

A unit is *dead* when it is positive for no input (gradvitals' definition, and CS231n's
"never activate across the entire training dataset"). A 3-hidden-layer MLP trains on
digits with pixels in [0, 1] (all inputs non-negative, the usual preprocessing) with
Adam over a sweep of learning rates. We measure the dead fraction per layer in every
monitor window (a heat map, and ``lab/never_positive/*`` in TensorBoard, beside the
monitor's ``dead_fraction/*``) and, at the end, over the whole training set, with the
final accuracy.

For Leaky ReLU, ELU and GELU a unit that is never positive still gets a gradient
(slope 0.01, e^x, GELU's tail), so "never positive" means *inactive*, not
necessarily *dead for good*; it is the same measurement for all four. The monitor
logs ``dead_fraction`` and raises ``dying_relu`` only for ReLU/ReLU6, where a unit
never positive gets no gradient at all.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradvitals.lab._context import LabContext
from gradvitals.lab._data import digits
from gradvitals.lab._nets import accuracy, mlp
from gradvitals.lab._plot import figure, save
from gradvitals.lab._result import LabResult
from gradvitals.lab._tb import write_scalars
from gradvitals.lab._train import train

__all__ = ["CLAIM", "SIZES", "Config", "dead_fractions", "run"]

CLAIM = (
    "'As much as 40% of your network can be dead' (never active on the training set) "
    "'if the learning rate is set too high' (CS231n); a lower learning rate, or a "
    "variant without a flat zero region (Leaky ReLU, ELU, GELU), prevents it."
)

_TITLES = {"relu": "ReLU", "leaky_relu": "Leaky ReLU", "elu": "ELU", "gelu": "GELU"}


@dataclass(frozen=True)
class Config:
    """Sizes and settings.

    Attributes:
        activations: ReLU first, then the variants.
        lrs: Adam learning rates.
        depth: hidden layers.
        width: units per hidden layer.
        steps: Adam steps per run.
        seeds: seeds per (activation, lr); the table reports the median.
        inputs: ``unit`` (pixels in [0, 1]) or ``standard`` (standardised pixels).
        every: the monitor's window (steps).
        dead: the dead fraction that counts as "much of the network" (CS231n's 40%).
    """

    activations: tuple[str, ...] = ("relu", "leaky_relu", "elu", "gelu")
    lrs: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1)
    depth: int = 3
    width: int = 128
    steps: int = 300
    seeds: int = 2
    inputs: str = "unit"
    every: int = 10
    dead: float = 0.4


SIZES: dict[str, Config] = {
    "smoke": Config(activations=("relu", "leaky_relu"), lrs=(0.001, 0.03), steps=150, seeds=1),
    "default": Config(),
    "full": Config(lrs=(0.0003, 0.001, 0.003, 0.01, 0.03, 0.1), steps=1500, seeds=5),
}


@torch.no_grad()
def dead_fractions(model: nn.Sequential, x: torch.Tensor) -> list[float]:
    """Per activation layer: the fraction of units positive for no row of ``x`` (NaN if
    the activations are not finite)."""
    outs: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: outs.append(o))
        for m in model
        if not isinstance(m, nn.Linear | nn.BatchNorm1d)
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return [
        float((o.amax(0) <= 0).float().mean()) if torch.isfinite(o).all() else float("nan")
        for o in outs
    ]


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def run(cfg: Config, ctx: LabContext) -> LabResult:
    """Sweep activation x lr x seed; record dead fractions per window and at the end."""
    data = digits(seed=ctx.seed, scale=cfg.inputs)
    runs = [(a, lr, s) for a in cfg.activations for lr in cfg.lrs for s in range(cfg.seeds)]
    bar = ctx.bar(len(runs))
    per_run: list[dict[str, Any]] = []
    maps: dict[tuple[str, float], tuple[np.ndarray, list[int]]] = {}
    for act, lr, s in runs:
        seed = ctx.seed + s
        torch.manual_seed(seed)
        net = mlp(data.d_in, cfg.width, cfg.depth, data.n_classes, act)
        at_init = _mean(dead_fractions(net, data.x_train))
        log_dir = ctx.log_dir(f"{act}-lr{lr:g}-s{s}")
        log = train(
            net,
            data,
            steps=cfg.steps,
            lr=lr,
            seed=seed,
            optimizer="adam",
            every=cfg.every,
            log_dir=log_dir,
        )
        recs = [r for r in log.monitor.history if r.sites]
        series: dict[str, list[tuple[int, float]]] = {}
        for rec in recs:
            for site, st in rec.sites.items():
                series.setdefault(f"lab/never_positive/{site}", []).append(
                    (rec.step, st.dead_fraction)
                )
        write_scalars(log_dir, series)
        final = dead_fractions(net, data.x_train)
        fired = [f for f in log.monitor.findings if f.kind.value == "dying_relu"]
        per_run.append(
            {
                "act": act,
                "lr": lr,
                "seed": seed,
                "init": at_init,
                "final": final,
                "acc": accuracy(net, data.x_train, data.y_train),
                "fired": len(fired),
                "nan": log.first_nonfinite,
            }
        )
        if s == 0:
            grid = np.array([[st.dead_fraction for st in r.sites.values()] for r in recs]).T
            maps[(act, lr)] = (grid, [r.step for r in recs])
        bar.update()
    bar.close()

    rows: list[dict[str, Any]] = []
    med: dict[tuple[str, float], float] = {}
    for act in cfg.activations:
        for lr in cfg.lrs:
            cell = [r for r in per_run if r["act"] == act and r["lr"] == lr]
            dead = [_mean(r["final"]) for r in cell]
            med[(act, lr)] = statistics.median(dead)
            layers = np.median(np.array([r["final"] for r in cell]), axis=0)
            rows.append(
                {
                    "activation": _TITLES.get(act, act),
                    "lr": lr,
                    "dead at init": statistics.median(r["init"] for r in cell),
                    "dead after (mean of layers)": med[(act, lr)],
                    "range over seeds": f"{min(dead):.2f}–{max(dead):.2f}",
                    "per layer": " / ".join(f"{v:.2f}" for v in layers),
                    "train acc": statistics.median(r["acc"] for r in cell),
                    "dying_relu fired": f"{sum(r['fired'] > 0 for r in cell)}/{len(cell)}",
                    "NaN runs": sum(r["nan"] is not None for r in cell),
                }
            )

    verdict, holds, numbers = _verdict(cfg, med)
    return LabResult(
        name=ctx.name,
        claim=CLAIM,
        table=rows,
        figures=[_plot(maps, per_run, cfg, ctx)],
        verdict=verdict,
        holds=holds,
        numbers=numbers,
        literature=(
            "CS231n: 'as much as 40% of your network can be dead … if the learning rate is "
            "set too high' (an anecdote; no published % dead vs lr curve); "
            "Glorot et al. 2011: 68-83% exact zeros per example in healthy nets (sparsity, "
            "not death)."
        ),
    )


def _verdict(
    cfg: Config, med: dict[tuple[str, float], float]
) -> tuple[str, bool | None, dict[str, Any]]:
    relu = cfg.activations[0]
    lo, hi = min(cfg.lrs), max(cfg.lrs)
    curve = {lr: med[(relu, lr)] for lr in cfg.lrs}
    high = [lr for lr in cfg.lrs if curve[lr] >= cfg.dead]
    variants = cfg.activations[1:]
    numbers: dict[str, Any] = {
        "dead": {f"{a}@{lr:g}": med[(a, lr)] for a in cfg.activations for lr in cfg.lrs},
        "relu_low_lr": curve[lo],
        "relu_high_lr": curve[hi],
    }
    parts = [
        f"{_TITLES.get(relu, relu)} dead fraction (whole training set, mean of {cfg.depth} layers, "
        "median of seeds) by lr: " + ", ".join(f"{lr:g}: {curve[lr]:.2f}" for lr in cfg.lrs)
    ]
    if not high:
        parts.append(f"never reaches {cfg.dead:.0%}")
        return f"does not hold: {'; '.join(parts)}", False, numbers
    first = min(high)
    numbers["first_high_lr"] = first
    lower_ok = curve[lo] < cfg.dead
    at_first = {a: med[(a, first)] for a in variants}
    at_hi = {a: med[(a, hi)] for a in variants}
    variants_ok = bool(variants) and all(v < curve[first] for v in at_first.values())
    parts.append(f"lr {lo:g} keeps it at {curve[lo]:.2f}")
    if variants:
        parts.append(
            f"at lr {first:g} the variants have "
            + ", ".join(f"{_TITLES.get(a, a)} {v:.2f}" for a, v in at_first.items())
        )
        if hi != first:
            parts.append(
                f"at lr {hi:g}: ReLU {curve[hi]:.2f}, "
                + ", ".join(f"{_TITLES.get(a, a)} {v:.2f}" for a, v in at_hi.items())
                + (
                    " (no variant prevents it there)"
                    if all(v >= cfg.dead for v in at_hi.values())
                    else ""
                )
            )
    numbers["variants_at_first_high_lr"] = at_first
    numbers["variants_at_highest_lr"] = at_hi
    holds = lower_ok and variants_ok
    return f"{'holds' if holds else 'does not hold'}: {'; '.join(parts)}", holds, numbers


def _plot(
    maps: dict[tuple[str, float], tuple[np.ndarray, list[int]]],
    per_run: list[dict[str, Any]],
    cfg: Config,
    ctx: LabContext,
) -> Any:
    acts, lrs = cfg.activations, cfg.lrs
    fig = figure(1.9 * len(lrs) + 0.8, 1.35 * len(acts) + 0.6)
    axes = np.atleast_2d(fig.subplots(len(acts), len(lrs), squeeze=False))
    im = None
    for i, act in enumerate(acts):
        for j, lr in enumerate(lrs):
            ax = axes[i, j]
            grid, steps = maps.get((act, lr), (np.zeros((0, 0)), []))
            if grid.size:
                im = ax.imshow(
                    grid,
                    aspect="auto",
                    vmin=0,
                    vmax=1,
                    cmap="magma",
                    interpolation="nearest",
                    extent=(steps[0], steps[-1], grid.shape[0] + 0.5, 0.5),
                )
            r = next(r for r in per_run if r["act"] == act and r["lr"] == lr)
            ax.set_title(f"{_TITLES.get(act, act)} lr {lr:g}: acc {r['acc']:.2f}", fontsize=7)
            ax.set_yticks(range(1, cfg.depth + 1))
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel("layer", fontsize=7)
            if i == len(acts) - 1:
                ax.set_xlabel("step", fontsize=7)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.6)
        cb.set_label("dead fraction (units never positive in the window)", fontsize=7)
    return save(fig, ctx.figure("dying-relu"))
