"""Collapse a stack of affine layers into the one ``nn.Linear`` it equals.

With no nonlinearity between them, affine layers compose into one affine map:

    W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2)

so a deep stack of them has exactly the capacity of a single layer. :func:`collapse`
computes that layer (in float64, then cast to the model's dtype), which both proves
the point and gives the cheaper equivalent model.

Understood modules, chained in ``nn.Sequential`` (nested is fine) or given alone:
``nn.Linear``, ``nn.Identity``, ``nn.Flatten`` (only the no-op kind for 2-D input,
``start_dim=1, end_dim=-1``), dropout in eval mode and ``nn.BatchNorm1d`` in eval mode
(running statistics: ``y = (x - mean) / sqrt(var + eps) * gamma + beta``). Inputs are
assumed 2-D, ``(batch, features)``.

>>> import torch
>>> from torch import nn
>>> _ = torch.manual_seed(0)
>>> deep = nn.Sequential(nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(16, 3))
>>> one = collapse(deep)
>>> one
Linear(in_features=4, out_features=3, bias=True)
>>> x = torch.randn(5, 4)
>>> torch.allclose(one(x), deep(x), atol=1e-6)
True
"""

from __future__ import annotations

import torch
from torch import nn

from gradvitals.activations import activation_name_for_module
from gradvitals.errors import UsageError

__all__ = ["collapse"]

_DROPOUT = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)

_UNDERSTOOD = (
    "nn.Linear, nn.Identity, nn.Flatten (start_dim=1), dropout and nn.BatchNorm1d "
    "(both in eval mode), chained in nn.Sequential"
)


def _label(name: str, module: nn.Module) -> str:
    return f"{name or '(the model)'!r} ({type(module).__name__})"


def _leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The modules of a (nested) ``nn.Sequential`` in call order."""
    if isinstance(model, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for child_name, child in model.named_children():
            out += _leaves(child, f"{prefix}.{child_name}" if prefix else child_name)
        return out
    return [(prefix, model)]


def _not_affine(name: str, module: nn.Module) -> UsageError:
    act = activation_name_for_module(module)
    if act is not None:
        why = (
            f"it is a nonlinearity ({act}), and a nonlinearity between layers is what "
            "gives the network its capacity, so the model is not one linear map"
        )
    elif any(True for _ in module.children()):
        why = (
            "it is a container whose forward() gradvitals cannot read; rebuild the "
            "stack as an nn.Sequential"
        )
    else:
        why = "gradvitals does not know it to be affine"
    return UsageError(
        f"cannot collapse: module {_label(name, module)} breaks the affine chain: {why}. "
        f"collapse() understands {_UNDERSTOOD}."
    )


def _needs_eval(name: str, module: nn.Module) -> UsageError:
    return UsageError(
        f"cannot collapse: module {_label(name, module)} is in training mode, where it is "
        "not a fixed affine map (dropout is random, batch norm uses batch statistics). "
        "Call model.eval() first."
    )


def collapse(model: nn.Module) -> nn.Linear:
    """The single ``nn.Linear`` equal to a stack of affine layers.

    Args:
        model: an ``nn.Sequential`` (possibly nested) or a single module, made of
            ``nn.Linear``, ``nn.Identity``, no-op ``nn.Flatten``, dropout (eval mode)
            and ``nn.BatchNorm1d`` (eval mode, with running statistics).

    Returns:
        A new ``nn.Linear(in_features, out_features)`` on the model's device and dtype,
        computed in float64: ``W = Wn ... W2 W1`` and ``b = Wn(...(W2 b1 + b2)...) + bn``.
        It has a bias unless no layer has one.

    Raises:
        UsageError: a module that is not affine (a nonlinearity, a custom container,
            anything unknown), naming it by its qualified name and type; dropout or
            batch norm in training mode (call ``model.eval()``); widths that do not
            chain; no Linear or BatchNorm1d layer at all.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"collapse() takes a torch.nn.Module (e.g. an nn.Sequential of nn.Linear), "
            f"got {type(model).__name__}"
        )
    weight: torch.Tensor | None = None  # (out, in) float64: the composed map so far
    bias: torch.Tensor | None = None
    has_bias = False
    like: torch.Tensor | None = None  # dtype/device of the result
    last = ""
    with torch.no_grad():
        for name, m in _leaves(model):
            if isinstance(m, nn.Identity):
                continue
            if isinstance(m, _DROPOUT):
                if m.training and m.p > 0:
                    raise _needs_eval(name, m)
                continue
            if isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim not in (-1, 1):
                    raise UsageError(
                        f"cannot collapse: module {_label(name, m)} has start_dim="
                        f"{m.start_dim}, end_dim={m.end_dim}; only nn.Flatten(start_dim=1) "
                        "is a no-op on (batch, features) input. Remove it or reshape first."
                    )
                continue
            if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
                if isinstance(m.weight, nn.parameter.UninitializedParameter):
                    raise UsageError(
                        f"cannot collapse: {_label(name, m)} is lazy and not initialised "
                        "yet; run one forward pass first."
                    )
                w = m.weight.detach().to(torch.float64)
                b = m.bias.detach().to(torch.float64) if m.bias is not None else None
                has_bias = has_bias or b is not None
            elif isinstance(m, nn.BatchNorm1d) and type(m).forward is nn.BatchNorm1d.forward:
                if m.training:
                    raise _needs_eval(name, m)
                if m.running_mean is None or m.running_var is None:
                    raise UsageError(
                        f"cannot collapse: {_label(name, m)} has track_running_stats=False, "
                        "so it normalises with batch statistics even in eval mode and is "
                        "not a fixed affine map."
                    )
                mean = m.running_mean.detach().to(torch.float64)
                var = m.running_var.detach().to(torch.float64)
                scale = 1.0 / torch.sqrt(var + m.eps)
                shift = -mean * scale
                if m.affine:
                    gamma = m.weight.detach().to(torch.float64)
                    scale, shift = scale * gamma, shift * gamma + m.bias.detach().to(torch.float64)
                w, b = torch.diag(scale), shift
                has_bias = True
            else:
                raise _not_affine(name, m)
            if like is None:
                like = m.weight if isinstance(m, nn.Linear) else m.running_mean
            if weight is None:
                weight, bias = w, b
            else:
                if w.shape[1] != weight.shape[0]:
                    raise UsageError(
                        f"cannot collapse: {_label(name, m)} expects {w.shape[1]} input "
                        f"features but {last!r} produces {weight.shape[0]}; the stack "
                        "would fail in forward() too."
                    )
                weight = w @ weight
                bias = w @ bias if bias is not None else None
                if b is not None:
                    bias = b if bias is None else bias + b
            last = name
        if weight is None or like is None:
            raise UsageError(
                "cannot collapse: the model has no nn.Linear or nn.BatchNorm1d layer, so "
                f"its width is unknown. collapse() understands {_UNDERSTOOD}."
            )
        out = nn.Linear(
            weight.shape[1], weight.shape[0], bias=has_bias, device=like.device, dtype=like.dtype
        )
        out.weight.copy_(weight.to(like.dtype))
        if out.bias is not None:
            out.bias.copy_(bias.to(like.dtype) if bias is not None else torch.zeros_like(out.bias))
    return out
