"""``vanishing``: per-layer gradients vs depth for sigmoid, tanh and ReLU, two inits each.

Glorot & Bengio (2010) in the linear regime: the back-propagated gradient
:math:`\\delta_l = \\partial C/\\partial s_l` scales by :math:`\\sqrt{n\\,Var(W)}\\,|f'|` per
layer toward the input. With PyTorch's default init ``n Var(W) = 1/3`` (Glorot's
"standard" init), so tanh loses a factor 0.577 per layer (Glorot & Bengio 2010); sigmoid adds
its f' <= 1/4; ReLU's half-active units give 1/sqrt(2). Xavier (``n Var(W) = 1``) and
He (``n Var(W) = 2``) cancel the weight factor; nothing cancels sigmoid's 1/4.

Measured at initialisation: the RMS of delta at every hidden layer (and its geometric
mean ratio per layer), and the RMS *weight* gradient per layer, which is what the
monitor compares (``LayerStats.grad_rms``). Then each net trains under
``gradvitals.watch``, and we report which runs raised ``vanishing_gradient``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradvitals.lab._context import LabContext
from gradvitals.lab._data import Split, digits
from gradvitals.lab._nets import accuracy, mlp
from gradvitals.lab._plot import figure, save
from gradvitals.lab._result import LabResult
from gradvitals.lab._train import train

__all__ = ["CLAIM", "PREDICTED", "SIZES", "Config", "profile", "run"]

CLAIM = (
    "Saturating activations with standard init make gradients vanish toward the input "
    "(Glorot & Bengio 2010: tanh std x0.577 per layer with standard init); "
    "matched init (Xavier for tanh, He for ReLU) keeps them level, and gradvitals' "
    "vanishing detector fires on the deep sigmoid net but not on ReLU + He."
)

#: Linear-regime prediction of delta's per-layer factor: sqrt(n Var W) x rms f' [C].
#: n Var W: default 1/3, xavier 1 (equal widths), he 2; rms f': sigmoid 1/4, tanh 1,
#: relu 1/sqrt(2) (half the units pass the gradient).
PREDICTED: dict[tuple[str, str], float] = {
    ("sigmoid", "default"): math.sqrt(1 / 3) / 4,
    ("sigmoid", "matched"): 1 / 4,
    ("tanh", "default"): math.sqrt(1 / 3),
    ("tanh", "matched"): 1.0,
    ("relu", "default"): math.sqrt(1 / 3 / 2),
    ("relu", "matched"): 1.0,
}

_MATCHED = {"sigmoid": "Xavier", "tanh": "Xavier", "relu": "He"}


@dataclass(frozen=True)
class Config:
    """Sizes and settings.

    Attributes:
        activations: hidden activations compared.
        inits: ``default`` (PyTorch's) and ``matched`` (Xavier for sigmoid/tanh, He for ReLU).
        depth: hidden layers.
        width: units per hidden layer (equal to the 64 inputs of digits).
        batches: batches of ``batch`` examples averaged for the profile at init.
        batch: examples per batch.
        steps: SGD steps of the watched training run.
        lr: SGD learning rate (momentum 0.9).
        every: the monitor's window (steps).
    """

    activations: tuple[str, ...] = ("sigmoid", "tanh", "relu")
    inits: tuple[str, ...] = ("default", "matched")
    depth: int = 10
    width: int = 64
    batches: int = 8
    batch: int = 128
    steps: int = 300
    lr: float = 0.01
    every: int = 10


SIZES: dict[str, Config] = {
    "smoke": Config(activations=("sigmoid", "relu"), batches=2, steps=80),
    "default": Config(),
    "full": Config(depth=20, batches=32, steps=1500),
}


def profile(
    model: nn.Sequential, data: Split, batches: int, batch: int, seed: int
) -> dict[str, Any]:
    """RMS of delta = dC/ds at each Linear output, and RMS weight gradient per Linear layer,
    averaged over ``batches`` batches; the model is left untouched (gradients zeroed)."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    outs: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        outs.append(out)

    handles = [m.register_forward_hook(keep) for m in linears]
    gen = torch.Generator().manual_seed(seed)
    delta = np.zeros(len(linears))
    grad = np.zeros(len(linears))
    try:
        for _ in range(batches):
            outs.clear()
            idx = torch.randint(0, len(data.x_train), (batch,), generator=gen)
            model.zero_grad()
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            for i, (m, s) in enumerate(zip(linears, outs, strict=True)):
                assert s.grad is not None
                # the loss is a batch mean: x batch gives the per-example scale
                delta[i] += float(s.grad.pow(2).mean().sqrt()) * batch
                g = torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None])
                grad[i] += float(g.pow(2).mean().sqrt())
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    delta /= batches
    grad /= batches
    hidden = delta[:-1]  # the output layer's delta is softmax - onehot, not a hidden layer
    factor = (
        float(np.exp(np.mean(np.log(hidden[:-1] / hidden[1:])))) if len(hidden) > 1 else math.nan
    )
    return {"delta_rms": delta, "grad_rms": grad, "factor": factor}


def run(cfg: Config, ctx: LabContext) -> LabResult:
    """Profile each (activation, init) at init, then train it under gradvitals.watch."""
    data = digits(seed=ctx.seed)
    combos = [(a, i) for a in cfg.activations for i in cfg.inits]
    bar = ctx.bar(len(combos))
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, Any]] = {}
    fired: dict[str, bool] = {}
    for k, (act, init) in enumerate(combos):
        torch.manual_seed(ctx.seed + k)
        net = mlp(data.d_in, cfg.width, cfg.depth, data.n_classes, act, init=init)
        prof = profile(net, data, cfg.batches, cfg.batch, ctx.seed)
        label = f"{act}+{_MATCHED.get(act, init) if init == 'matched' else 'default'}"
        curves[label] = prof
        log = train(
            net,
            data,
            steps=cfg.steps,
            lr=cfg.lr,
            seed=ctx.seed,
            batch=64,
            momentum=0.9,
            every=cfg.every,
            log_dir=ctx.log_dir(label.replace("+", "-")),
        )
        kinds = [f.kind.value for f in log.monitor.findings]
        van = [f for f in log.monitor.findings if f.kind.value == "vanishing_gradient"]
        fired[label] = bool(van)
        g = prof["grad_rms"]
        rows.append(
            {
                "activation": act,
                "init": label.split("+")[1],
                "δ factor/layer (measured)": prof["factor"],
                "predicted (linear regime)": PREDICTED.get((act, init)),
                "δ first/last hidden": float(prof["delta_rms"][0] / prof["delta_rms"][-2]),
                "weight-grad RMS first/max later": float(g[0] / g[1:].max()),
                "vanishing fired": bool(van),
                "fired at step": van[0].step if van else None,
                "other findings": ", ".join(sorted(set(kinds) - {"vanishing_gradient"})) or "–",
                f"train acc after {cfg.steps} steps": accuracy(net, data.x_train, data.y_train),
            }
        )
        bar.update()
    bar.close()

    sig = next((r for r in rows if r["activation"] == "sigmoid" and r["init"] == "default"), None)
    he = next((r for r in rows if r["activation"] == "relu" and r["init"] == "He"), None)
    tanh = next((r for r in rows if r["activation"] == "tanh" and r["init"] == "default"), None)
    fired_on = [k for k, v in fired.items() if v]
    holds: bool | None = None
    parts: list[str] = []
    if sig is not None and he is not None:
        holds = bool(sig["vanishing fired"]) and not he["vanishing fired"]
        parts.append(
            f"vanishing_gradient fired on {', '.join(fired_on) or 'no run'} "
            f"(deep sigmoid: {'yes' if sig['vanishing fired'] else 'no'}, "
            f"at step {sig['fired at step']}; ReLU+He: {'yes' if he['vanishing fired'] else 'no'})"
        )
        parts.append(
            f"at init δ shrinks x{sig['δ factor/layer (measured)']:.3f}/layer with sigmoid "
            f"(weight-grad RMS first/last {sig['weight-grad RMS first/max later']:.1e}) vs "
            f"x{he['δ factor/layer (measured)']:.2f} with ReLU+He"
        )
    if tanh is not None:
        parts.append(
            f"tanh default: x{tanh['δ factor/layer (measured)']:.3f}/layer vs predicted 0.577"
        )
        if holds is not None:
            holds = holds and abs(tanh["δ factor/layer (measured)"] - math.sqrt(1 / 3)) < 0.1
    verdict = (
        f"{'holds' if holds else 'does not hold' if holds is False else 'mixed'} ({cfg.depth} hidden layers): "
        + "; ".join(parts)
    )
    return LabResult(
        name=ctx.name,
        claim=CLAIM,
        table=rows,
        figures=[_plot(curves, cfg, ctx)],
        verdict=verdict,
        holds=holds,
        numbers={
            "fired": fired,
            "delta_factor": {k: v["factor"] for k, v in curves.items()},
            "predicted_factor": {f"{a}+{i}": p for (a, i), p in PREDICTED.items()},
            "weight_grad_ratio": {
                f"{r['activation']}+{r['init']}": r["weight-grad RMS first/max later"] for r in rows
            },
        },
        literature=(
            "Glorot & Bengio 2010: back-propagated gradient variance x1/3 per layer with "
            "standard init in the linear regime (tanh std x0.577); Xavier keeps "
            "it x1; He et al. 2015: a 30-layer ReLU net stalls with Xavier, trains with He."
        ),
    )


def _plot(curves: dict[str, dict[str, Any]], cfg: Config, ctx: LabContext) -> Any:
    fig = figure(8.0, 3.3)
    ax1, ax2 = fig.subplots(1, 2)
    for i, (label, prof) in enumerate(curves.items()):
        style = "-" if label.endswith("default") else "--"
        c = f"C{i // 2}"
        d = prof["delta_rms"][:-1]
        ax1.semilogy(np.arange(1, len(d) + 1), d, style, c=c, marker="o", ms=3, label=label)
        g = prof["grad_rms"]
        ax2.semilogy(np.arange(1, len(g) + 1), g, style, c=c, marker="o", ms=3, label=label)
    tanh = curves.get("tanh+default")
    if tanh is not None:
        d = tanh["delta_rms"][:-1]
        k = np.arange(1, len(d) + 1)
        ax1.semilogy(
            k, d[-1] * math.sqrt(1 / 3) ** (len(d) - k), ":", c="k", lw=1, label="x0.577/layer"
        )
    ax1.set_title("back-propagated δ = dC/ds at init (RMS)", fontsize=9)
    ax1.set_xlabel("hidden layer (1 = next to the input)")
    ax2.set_title("weight-gradient RMS at init (what the monitor compares)", fontsize=9)
    ax2.set_xlabel("Linear layer (last = output)")
    ax1.legend(fontsize=6)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return save(fig, ctx.figure("vanishing"))
