"""``linear-collapse``: a stack of linear layers is one affine map.

W2(W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2). So a deep *linear* net
can only draw a straight decision boundary: on a two-class set that needs a curved one
(moons, circles, spirals) it reaches the same accuracy as logistic regression, and the
same net with ReLU between the layers goes past it. ``gradvitals.collapse`` builds the
single equivalent ``nn.Linear``; the largest output difference measures the equivalence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gradvitals.lab._context import LabContext
from gradvitals.lab._data import TOY_SETS, Split, toy
from gradvitals.lab._nets import accuracy, mlp
from gradvitals.lab._plot import figure, save
from gradvitals.lab._result import LabResult
from gradvitals.lab._train import train

__all__ = ["CLAIM", "SIZES", "Config", "run"]

CLAIM = (
    "Without nonlinearities, depth adds nothing: a deep linear net equals one affine "
    "layer (logistic regression here), and a nonlinearity (ReLU) is what lets the same "
    "net fit a nonlinear boundary (algebra)."
)


@dataclass(frozen=True)
class Config:
    """Sizes and settings.

    Attributes:
        datasets: the 2-D sets (``moons``, ``circles``, ``spirals``).
        n: points per set (a quarter held out).
        noise: label noise of the generators.
        depth: hidden layers of the deep nets.
        width: units per hidden layer.
        steps: full-batch Adam steps.
        lr: Adam learning rate.
        tolerance: |deep linear - logistic regression| training accuracy counted as equal.
        margin: the ReLU net must beat the deep linear net by this much.
    """

    datasets: tuple[str, ...] = TOY_SETS
    n: int = 1000
    noise: float = 0.15
    depth: int = 6
    width: int = 32
    steps: int = 1500
    lr: float = 0.01
    tolerance: float = 0.02
    margin: float = 0.05


SIZES: dict[str, Config] = {
    "smoke": Config(datasets=("moons",), n=400, depth=4, width=16, steps=400),
    "default": Config(),
    "full": Config(n=3000, depth=10, width=32, steps=3000),
}


def _logreg(data: Split) -> tuple[float, float, Any]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=100.0, max_iter=2000)
    clf.fit(data.x_train.numpy(), data.y_train.numpy())
    tr = float(clf.score(data.x_train.numpy(), data.y_train.numpy()))
    te = float(clf.score(data.x_test.numpy(), data.y_test.numpy()))
    return tr, te, clf


def _lint_flags(model: torch.nn.Module) -> str:
    """Whether ``gradvitals.lint`` flags the stack as linear_collapse ("n/a" if no lint)."""
    import gradvitals

    try:
        found = gradvitals.lint(model)
    except ImportError:
        return "n/a"
    return "yes" if any(f.kind.value == "linear_collapse" for f in found) else "no"


def run(cfg: Config, ctx: LabContext) -> LabResult:
    """Train logistic regression, a deep linear and a deep ReLU net on each set."""
    import gradvitals

    rows: list[dict[str, Any]] = []
    panels: list[tuple[str, Split, list[tuple[str, Any]]]] = []
    bar = ctx.bar(len(cfg.datasets) * 3)
    for k, name in enumerate(cfg.datasets):
        data = toy(name, n=cfg.n, noise=cfg.noise, seed=ctx.seed + k)
        lr_tr, lr_te, clf = _logreg(data)
        bar.update()
        nets: dict[str, torch.nn.Module] = {}
        for act in (None, "relu"):
            torch.manual_seed(ctx.seed + 10 * k)
            net = mlp(2, cfg.width, cfg.depth, 2, act)
            label = "linear" if act is None else act
            train(
                net,
                data,
                steps=cfg.steps,
                lr=cfg.lr,
                seed=ctx.seed,
                batch=0,
                optimizer="adam",
                log_dir=ctx.log_dir(f"{name}-{label}"),
            )
            nets[label] = net
            bar.update()
        lin, relu = nets["linear"], nets["relu"]
        one = gradvitals.collapse(lin)
        with torch.no_grad():
            x_all = torch.cat([data.x_train, data.x_test])
            diff = float((lin(x_all) - one(x_all)).abs().max())
            scale = float(lin(x_all).abs().max())
        rows.append(
            {
                "data": name,
                "logreg train": lr_tr,
                f"linear {cfg.depth}x{cfg.width} train": accuracy(lin, data.x_train, data.y_train),
                f"relu {cfg.depth}x{cfg.width} train": accuracy(relu, data.x_train, data.y_train),
                "logreg test": lr_te,
                "linear test": accuracy(lin, data.x_test, data.y_test),
                "relu test": accuracy(relu, data.x_test, data.y_test),
                "collapsed test": accuracy(one, data.x_test, data.y_test),
                "collapse max|Δ|": diff,
                "output scale": scale,
                "lint flags it": _lint_flags(lin),
            }
        )
        panels.append(
            (name, data, [("logistic regression", clf), ("deep linear", lin), ("deep ReLU", relu)])
        )
    bar.close()

    lin_key = f"linear {cfg.depth}x{cfg.width} train"
    relu_key = f"relu {cfg.depth}x{cfg.width} train"
    gaps = [abs(r[lin_key] - r["logreg train"]) for r in rows]
    gains = [r[relu_key] - r[lin_key] for r in rows]
    diffs = [r["collapse max|Δ|"] for r in rows]
    holds = (
        max(gaps) <= cfg.tolerance
        and min(gains) >= cfg.margin
        and max(diffs) <= 1e-4 * max(1.0, max(r["output scale"] for r in rows))
    )

    def pct(key: str) -> str:
        return "/".join(f"{100 * r[key]:.1f}" for r in rows)

    verdict = (
        f"{'holds' if holds else 'does not hold'}: training accuracy on "
        f"{'/'.join(cfg.datasets)}: deep linear {cfg.depth}x{cfg.width} {pct(lin_key)}% vs "
        f"logistic regression {pct('logreg train')}% (max |Δ| {100 * max(gaps):.1f} pt), "
        f"the same net with ReLU {pct(relu_key)}%; collapse() reproduces the linear net's "
        f"outputs to max |Δ| {max(diffs):.1e}"
    )
    figs = [_plot(panels, ctx)]
    return LabResult(
        name=ctx.name,
        claim=CLAIM,
        table=rows,
        figures=figs,
        verdict=verdict,
        holds=holds,
        numbers={
            "linear_train_acc": {r["data"]: r[lin_key] for r in rows},
            "logreg_train_acc": {r["data"]: r["logreg train"] for r in rows},
            "relu_train_acc": {r["data"]: r[relu_key] for r in rows},
            "max_gap_linear_logreg": max(gaps),
            "min_gain_relu": min(gains),
            "collapse_max_abs_diff": max(diffs),
        },
        literature="An identity, not a measurement: W2(W1x+b1)+b2 = (W2W1)x + (W2b1+b2).",
    )


def _plot(panels: list[tuple[str, Split, list[tuple[str, Any]]]], ctx: LabContext) -> Any:
    fig = figure(2.4 * 3, 2.3 * len(panels))
    axes = np.atleast_2d(fig.subplots(len(panels), 3, squeeze=False))
    for i, (name, data, models) in enumerate(panels):
        x = torch.cat([data.x_train, data.x_test]).numpy()
        y = torch.cat([data.y_train, data.y_test]).numpy()
        if len(x) > 1000:  # keep the PNG small: 1000 points show the shape
            keep = np.random.default_rng(0).choice(len(x), 1000, replace=False)
            x, y = x[keep], y[keep]
        lo, hi = x.min(0) - 0.3, x.max(0) + 0.3
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
        grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
        for j, (title, model) in enumerate(models):
            ax = axes[i, j]
            if isinstance(model, torch.nn.Module):
                with torch.no_grad():
                    z = model(torch.from_numpy(grid)).argmax(1).numpy()
            else:
                z = model.predict(grid)
            ax.contourf(
                gx, gy, z.reshape(gx.shape), levels=[-0.5, 0.5, 1.5], cmap="coolwarm", alpha=0.35
            )
            ax.scatter(x[:, 0], x[:, 1], c=y, s=3, cmap="coolwarm", linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {title}", fontsize=8)
    return save(fig, ctx.figure("linear-collapse"))
