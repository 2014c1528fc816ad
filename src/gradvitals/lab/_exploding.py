"""``exploding``: which learning rates diverge, with and without BatchNorm and clipping.

A ReLU MLP on digits is trained with SGD (momentum 0.9) over a sweep of learning
rates, three ways: plain, with BatchNorm before each activation, and with global
gradient-norm clipping (Pascanu et al. 2013). A run's status is ``NaN`` (the loss went
NaN/Inf), ``blew up`` (finite, but the loss rose above 10x its first value) or ``ok``;
the first two *diverge*. Every run is watched by ``gradvitals.watch(every=5)``: on
diverging runs we count ``exploding_gradient``, ``nonfinite`` and ``diverged_plateau``
findings (nested consequences included) and how many
steps before the first NaN the first ``exploding_gradient`` came; on ``ok`` runs any
finding is a false alarm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gradvitals.lab._context import LabContext
from gradvitals.lab._data import digits
from gradvitals.lab._nets import accuracy, mlp
from gradvitals.lab._plot import figure, save
from gradvitals.lab._result import LabResult
from gradvitals.lab._train import RunLog, train

__all__ = ["CLAIM", "SIZES", "VARIANTS", "Config", "run"]

CLAIM = (
    "Too high a learning rate makes training explode (loss to NaN); gradient-norm clipping "
    "is the published fix (Pascanu et al. 2013) and BatchNorm lets you raise the learning "
    "rate (Ioffe & Szegedy 2015); gradvitals should say so before the NaN."
)

#: variant -> (BatchNorm, clip the gradient norm)
VARIANTS: dict[str, tuple[bool, bool]] = {
    "plain": (False, False),
    "batchnorm": (True, False),
    "clip": (False, True),
}


@dataclass(frozen=True)
class Config:
    """Sizes and settings.

    Attributes:
        lrs: the learning-rate sweep.
        variants: ``plain``, ``batchnorm``, ``clip``.
        depth: hidden ReLU layers.
        width: units per hidden layer.
        steps: SGD steps per run (a run stops 5 steps after its first NaN).
        momentum: SGD momentum.
        clip: the global gradient-norm threshold of the ``clip`` variant.
        every: the monitor's window (small, so detection has time).
        seeds: seeds per cell (a cell diverges if any seed does).
    """

    lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    variants: tuple[str, ...] = tuple(VARIANTS)
    depth: int = 4
    width: int = 128
    steps: int = 200
    momentum: float = 0.9
    clip: float = 1.0
    every: int = 5
    seeds: int = 1


SIZES: dict[str, Config] = {
    "smoke": Config(lrs=(0.01, 1.0, 3.0), variants=("plain", "clip"), steps=60),
    "default": Config(),
    "full": Config(lrs=(0.01, 0.03, 0.1, 0.3, 0.6, 1.0, 2.0, 3.0, 10.0), steps=600, seeds=3),
}


def _cell(r: dict[str, Any]) -> str:
    return f"{r['variant']}@lr{r['lr']:g}"


def _first(log: RunLog, kind: str) -> int | None:
    """The first step of a finding of ``kind``, nested consequences included."""
    steps = [g.step for f in log.monitor.findings for g in f.walk() if g.kind.value == kind]
    return min(steps) if steps else None


def _fired(r: dict[str, Any]) -> bool:
    return any(r[k] is not None for k in _CATCHES)


#: the findings that catch a divergence: the blow-up, its NaN, or the plateau after a jump
_CATCHES = ("exploding fired at", "nonfinite fired at", "plateau fired at")


def run(cfg: Config, ctx: LabContext) -> LabResult:
    """Sweep lr x variant (x seeds); watch every run with a small window."""
    for v in cfg.variants:
        if v not in VARIANTS:
            from gradvitals.errors import UsageError

            raise UsageError(f"unknown variant {v!r}; valid: {', '.join(VARIANTS)}")
    data = digits(seed=ctx.seed)
    runs = [(v, lr, s) for v in cfg.variants for lr in cfg.lrs for s in range(cfg.seeds)]
    bar = ctx.bar(len(runs))
    rows: list[dict[str, Any]] = []
    for v, lr, s in runs:
        bn, clipped = VARIANTS[v]
        seed = ctx.seed + s
        torch.manual_seed(seed)
        net = mlp(data.d_in, cfg.width, cfg.depth, data.n_classes, "relu", batchnorm=bn)
        log = train(
            net,
            data,
            steps=cfg.steps,
            lr=lr,
            seed=seed,
            batch=64,
            momentum=cfg.momentum,
            clip=cfg.clip if clipped else None,
            every=cfg.every,
            log_dir=ctx.log_dir(f"{v}-lr{lr:g}-s{s}"),
            stop_after_nonfinite=5,
        )
        exp = _first(log, "exploding_gradient")
        nonf = _first(log, "nonfinite")
        plateau = _first(log, "diverged_plateau")
        nan = log.first_nonfinite
        finite = [x for x in log.losses if math.isfinite(x)]
        max_loss = max(finite) if finite else math.nan
        status = "NaN" if nan is not None else "blew up" if max_loss > 10 * log.losses[0] else "ok"
        rows.append(
            {
                "variant": v,
                "lr": lr,
                "seed": seed,
                "status": status,
                "diverged": status != "ok",
                "first NaN step": nan,
                "exploding fired at": exp,
                "nonfinite fired at": nonf,
                "plateau fired at": plateau,
                "steps of warning before NaN": (nan - exp)
                if (nan is not None and exp is not None and exp < nan)
                else None,
                "max loss": max_loss,
                "train acc": accuracy(net, data.x_train, data.y_train),
            }
        )
        bar.update()
    bar.close()

    div = [r for r in rows if r["diverged"]]
    ok = [r for r in rows if not r["diverged"]]
    caught = [r for r in div if _fired(r)]
    n_exp = sum(r["exploding fired at"] is not None for r in div)
    with_nan = [r for r in div if r["first NaN step"] is not None]
    early = [r for r in with_nan if r["steps of warning before NaN"] is not None]
    false_alarms = [r for r in ok if _fired(r)]
    lo = min(cfg.lrs)
    low_ok = not any(r["diverged"] for r in rows if r["lr"] == lo)

    def stable(v: str) -> float | None:
        """The largest lr below which every run of variant ``v`` is ok."""
        best = None
        for lr in sorted(cfg.lrs):
            if any(r["diverged"] for r in rows if r["variant"] == v and r["lr"] == lr):
                break
            best = lr
        return best

    def describe(v: str) -> str:
        nan = sorted({r["lr"] for r in rows if r["variant"] == v and r["status"] == "NaN"})
        up = sorted({r["lr"] for r in rows if r["variant"] == v and r["status"] == "blew up"})
        out = f"{v}: max stable lr {stable(v)}"
        if nan:
            out += f", NaN at lr {','.join(f'{x:g}' for x in nan)}"
        if up:
            out += f", blew up (no NaN) at lr {','.join(f'{x:g}' for x in up)}"
        return out

    lead = f"exploding_gradient came before the first NaN on {len(early)}/{len(with_nan)} NaN runs"
    if early:
        leads = [r["steps of warning before NaN"] for r in early]
        lead += f", {min(leads)}-{max(leads)} steps ahead"
    holds = bool(div) and low_ok and len(caught) == len(div)
    if "plain" in cfg.variants and "batchnorm" in cfg.variants:
        holds = holds and (stable("batchnorm") or 0) >= (stable("plain") or 0)
    verdict = (
        f"{'holds' if holds else 'does not hold'}: {len(div)}/{len(rows)} runs diverge "
        f"({'; '.join(describe(v) for v in cfg.variants)}); lr {lo:g} "
        f"{'never diverges' if low_ok else 'diverges too'}; gradvitals fired on "
        f"{len(caught)}/{len(div)} diverging runs ({n_exp} exploding_gradient, "
        f"{sum(r['nonfinite fired at'] is not None for r in div)} nonfinite, "
        f"{sum(r['plateau fired at'] is not None for r in div)} diverged_plateau); {lead}; "
        f"false alarms on {len(false_alarms)}/{len(ok)} ok runs"
        + (f" ({', '.join(_cell(r) for r in false_alarms)})" if false_alarms else "")
    )
    return LabResult(
        name=ctx.name,
        claim=CLAIM,
        table=rows,
        figures=[_plot(rows, cfg, ctx)],
        verdict=verdict,
        holds=holds,
        numbers={
            "diverged": {f"{r['variant']}@{r['lr']:g}#{r['seed']}": r["diverged"] for r in rows},
            "n_diverged": len(div),
            "n_caught": len(caught),
            "n_exploding": n_exp,
            "n_warned_before_nan": len(early),
            "n_nan": len(with_nan),
            "n_false_alarms": len(false_alarms),
            "max_stable_lr": {v: stable(v) for v in cfg.variants},
            "low_lr_ok": low_ok,
        },
        literature=(
            "Pascanu et al. 2013: clipping thresholds from 0.5x to 10x the average norm "
            "still converge; Ioffe & Szegedy 2015: BN-x5 Inception trains at 5x the lr that "
            "sent the original to 'machine infinity', 14x fewer steps to 72.2%."
        ),
    )


def _plot(rows: list[dict[str, Any]], cfg: Config, ctx: LabContext) -> Any:
    variants = list(cfg.variants)
    lrs = list(cfg.lrs)
    acc = np.full((len(variants), len(lrs)), np.nan)
    notes = [["" for _ in lrs] for _ in variants]
    for i, v in enumerate(variants):
        for j, lr in enumerate(lrs):
            cell = [r for r in rows if r["variant"] == v and r["lr"] == lr]
            vals = [
                r["train acc"] for r in cell if not r["diverged"] and not math.isnan(r["train acc"])
            ]
            acc[i, j] = min(vals) if len(vals) == len(cell) else np.nan
            d = sum(r["diverged"] for r in cell)
            nan = [r["first NaN step"] for r in cell if r["first NaN step"] is not None]
            exp = [r["exploding fired at"] for r in cell if r["exploding fired at"] is not None]
            txt = f"{'NaN' if nan else 'blew up'} {d}/{len(cell)}" if d else f"{acc[i, j]:.2f}"
            if nan:
                txt += f"\nNaN@{min(nan)}"
            if exp:
                txt += f"\nexpl.@{min(exp)}"
            notes[i][j] = txt
    fig = figure(1.1 * len(lrs) + 1.6, 0.8 * len(variants) + 1.2)
    ax = fig.subplots()
    masked = np.ma.masked_invalid(acc)
    im = ax.imshow(masked, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_facecolor("#b03030")
    for i in range(len(variants)):
        for j in range(len(lrs)):
            ax.text(
                j,
                i,
                notes[i][j],
                ha="center",
                va="center",
                fontsize=6,
                color="white" if not acc[i, j] >= 0.6 else "black",
            )
    ax.set_xticks(range(len(lrs)), [f"{x:g}" for x in lrs])
    ax.set_yticks(range(len(variants)), variants)
    ax.set_xlabel(f"learning rate (SGD, momentum {cfg.momentum:g})")
    ax.set_title(
        "final training accuracy; red = diverged (NaN, or loss > 10x its start); "
        "expl.@k: exploding_gradient fired at step k",
        fontsize=7,
    )
    fig.colorbar(im, ax=ax, shrink=0.8)
    return save(fig, ctx.figure("exploding"))
