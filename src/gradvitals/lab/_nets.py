"""MLPs built from the activation catalog, initialisation schemes, accuracy.

Activation modules come from :func:`gradvitals.activations.get`: its ``torch_name`` and
``torch_defaults`` (so ``"leaky_relu"`` is ``nn.LeakyReLU(negative_slope=0.01)``), and
its ``gain`` sets the He initialisation.

>>> import torch
>>> net = mlp(4, 8, 2, 3, "relu", init="matched")
>>> [type(m).__name__ for m in net]
['Linear', 'ReLU', 'Linear', 'ReLU', 'Linear']
>>> float(net[0].bias.detach().abs().sum())
0.0
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradvitals.activations import Saturation, get

__all__ = ["INITS", "accuracy", "activation", "init_", "mlp"]

#: ``default``: PyTorch's U(+-1/sqrt(fan_in)) (Glorot's "standard" init, Var = 1/(3 fan_in));
#: ``xavier``: Glorot-Bengio U(+-sqrt(6/(fan_in+fan_out))), zero bias; ``he``: N(0, gain^2/fan_in)
#: with the activation's gain, zero bias; ``matched``: xavier for saturating activations,
#: he for the others.
INITS = ("default", "xavier", "he", "matched")


def activation(name: str) -> nn.Module:
    """A fresh ``torch.nn`` module for the catalog activation ``name``."""
    entry = get(name)
    if entry.torch_name is None:
        raise ValueError(f"activation {entry.name!r} has no torch.nn module")
    cls = getattr(nn, entry.torch_name)
    return cls(**dict(entry.torch_defaults))


def init_(model: nn.Module, scheme: str, act: str | None) -> None:
    """Re-initialise every Linear layer of ``model`` in place with ``scheme`` (see :data:`INITS`)."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    if scheme == "default":
        return
    if scheme == "matched":
        saturating = act is not None and get(act).saturates_right is not Saturation.NONE
        scheme = "xavier" if saturating or act is None else "he"
    gain = get(act).gain if act is not None else 1.0
    for m in model.modules():
        if not isinstance(m, nn.Linear):
            continue
        with torch.no_grad():
            if scheme == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                m.weight.normal_(0.0, gain / math.sqrt(m.in_features))
            if m.bias is not None:
                m.bias.zero_()


def mlp(
    d_in: int,
    width: int,
    depth: int,
    d_out: int,
    act: str | None,
    *,
    batchnorm: bool = False,
    init: str = "default",
    bias: bool = True,
) -> nn.Sequential:
    """``depth`` hidden layers ``Linear -> [BatchNorm1d] -> act`` of ``width`` units, then a
    linear output layer. ``act=None`` leaves the stack purely affine."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers.append(nn.Linear(d, width, bias=bias))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        if act is not None:
            layers.append(activation(act))
        d = width
    layers.append(nn.Linear(d, d_out, bias=bias))
    net = nn.Sequential(*layers)
    init_(net, init, act)
    return net


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Classification accuracy of ``model`` on ``(x, y)`` in eval mode (restores the mode)."""
    was = model.training
    model.eval()
    try:
        out = model(x)
        if not torch.isfinite(out).all():
            return float("nan")
        return float((out.argmax(1) == y).float().mean())
    finally:
        model.train(was)
