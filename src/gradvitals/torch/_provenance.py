"""NaN provenance by replay: which module and which op turned finite values into NaN/Inf.

When a sampled step's gradients or loss are found non-finite *before* the optimizer
applies them (the weights are still those of the failing forward), the monitor
re-runs that step's forward on the kept batch (a reference, not a copy) under
:func:`replay`. Every op is intercepted (``TorchFunctionMode``) and the first one whose
floating-point output holds a NaN while none of its inputs did, or an Inf in a 16-bit
format while its inputs were finite, is named with the module that ran it.

The replay changes nothing: it runs under ``torch.no_grad()``, with the random number
generators forked (dropout draws the same masks again, and the training run's RNG is
untouched), and the module buffers (BatchNorm's running statistics) copied before and
written back after. It costs one forward pass, only on a failing step: a healthy run
never replays.

>>> import torch
>>> from torch import nn
>>> class Attn(nn.Module):
...     def forward(self, x):
...         scores = x @ x.transpose(-1, -2)
...         scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool), float("-inf"))
...         return torch.softmax(scores, dim=-1) @ x
>>> model = nn.Sequential(nn.Linear(4, 4), Attn(), nn.Linear(4, 2))
>>> p = replay(model, (torch.randn(2, 3, 4),), {})
>>> p.module, p.op, p.kind
('1', 'softmax', 'nan_from_finite')
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from gradvitals.torch._batch import TARGET_KWARGS

__all__ = ["Provenance", "replay"]

_LOW = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Provenance:
    """Where a non-finite value was born.

    Attributes:
        module: the qualified name of the innermost module running the op (``""`` for
            the model itself).
        module_type: its class name.
        op: the op's name (``softmax``, ``log``, ``div``, ``matmul``...).
        kind: ``"nan_from_finite"`` (a NaN out of NaN-free inputs; ``-inf`` inputs are
            allowed, as in a masked softmax), ``"overflow"`` (an Inf out of finite
            16-bit inputs), ``"input"`` (the batch itself was not finite), ``"target"``
            (a ``labels=``-style argument was not), ``"weights"``
            (a parameter or buffer was already NaN/Inf before the forward: an earlier
            optimizer step made it so; ``module`` owns it, ``dtype`` is its format),
            ``"unexplained"`` (the output was not finite and no op was caught making
            it) or ``"replay_failed"`` (the forward raised on replay).
        dtype: the output's dtype.
        detail: one sentence for the finding.
        masked: for ``"nan_from_finite"``, some input of the op held ``-inf``/``inf`` (a
            mask, or an earlier overflow), not only finite values.
    """

    module: str
    module_type: str
    op: str
    kind: str
    dtype: str
    detail: str
    masked: bool = False

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _tensors(obj: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(obj)
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _has_nan(ts: list[torch.Tensor]) -> bool:
    return any(bool(torch.isnan(t).any()) for t in ts if t.numel())


def _has_inf(ts: list[torch.Tensor]) -> bool:
    return any(bool(torch.isinf(t).any()) for t in ts if t.numel())


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return name.rstrip("_")


class _Tracer(TorchFunctionMode):
    """Records the first op that makes a NaN (or a 16-bit Inf) out of clean inputs."""

    def __init__(self, stack: list[tuple[str, str]]) -> None:
        super().__init__()
        self.stack = stack
        self.found: Provenance | None = None

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.found is not None:
            return out
        outs = _tensors(out)
        if not outs:
            return out
        ins = _tensors((args, kwargs or {}))
        module, mtype = self.stack[-1] if self.stack else ("", "")
        op = _op_name(func)
        if _has_nan(outs) and not _has_nan(ins):
            masked = _has_inf(ins)
            self.found = Provenance(
                module,
                mtype,
                op,
                "nan_from_finite",
                str(outs[0].dtype).removeprefix("torch."),
                f"{op} in {module or 'the model'} ({mtype}) turned "
                + ("inputs holding -inf/inf (a mask)" if masked else "finite inputs")
                + " into NaN",
                masked,
            )
        elif outs[0].dtype in _LOW and _has_inf(outs) and not _has_inf(ins) and not _has_nan(ins):
            dtype = str(outs[0].dtype).removeprefix("torch.")
            self.found = Provenance(
                module,
                mtype,
                op,
                "overflow",
                dtype,
                f"{op} in {module or 'the model'} ({mtype}) overflowed {dtype} "
                f"(max {torch.finfo(outs[0].dtype).max:.4g}) from finite inputs",
            )
        return out


@contextlib.contextmanager
def _module_stack(model: nn.Module, stack: list[tuple[str, str]]) -> Iterator[None]:
    names = {id(m): n for n, m in model.named_modules()}
    handles = []

    def pre(mod: nn.Module, args: Any) -> None:
        stack.append((names.get(id(mod), type(mod).__name__), type(mod).__name__))

    def post(mod: nn.Module, args: Any, out: Any) -> None:
        if stack:
            stack.pop()

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post, always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _nonfinite_state(model: nn.Module) -> Provenance | None:
    """The first parameter or buffer (in ``named_modules`` order) holding a NaN/Inf."""
    for name, mod in model.named_modules():
        for pname, t in [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]:
            if t is None or not t.is_floating_point() or not t.numel():
                continue
            if not bool(torch.isfinite(t.detach()).all()):
                dtype = str(t.dtype).removeprefix("torch.")
                return Provenance(
                    name,
                    type(mod).__name__,
                    pname,
                    "weights",
                    dtype,
                    f"{name or 'the model'}.{pname} ({dtype}) already held NaN/Inf before the "
                    "forward: an optimizer step wrote it",
                )
    return None


def replay(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Provenance | None:
    """Re-run ``model(*args, **kwargs)`` and name the op that first made a NaN/Inf.

    Before running anything it checks the batch (``kind="input"``) and the weights
    (``kind="weights"``: then no op of this forward is to blame). Returns None when the
    forward stays finite (the NaN was born in the loss or the backward pass); a replay
    that raises is reported as ``kind="replay_failed"``, never raised: a replay must
    never break training.
    """
    targets = {k for k in kwargs if k in TARGET_KWARGS}
    inputs = _tensors((args, {k: v for k, v in kwargs.items() if k not in targets}))
    if _has_nan(inputs) or _has_inf(inputs):
        return Provenance(
            "", type(model).__name__, "input", "input", "", "the batch itself holds NaN/Inf"
        )
    labels = _tensors({k: kwargs[k] for k in targets})
    if _has_nan(labels) or _has_inf(labels):
        return Provenance(
            "",
            type(model).__name__,
            "target",
            "target",
            "",
            f"the targets passed to the model ({', '.join(sorted(targets))}=) hold NaN/Inf",
        )
    inputs += labels
    state = _nonfinite_state(model)
    if state is not None:
        return state
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = sorted({t.device.index for t in inputs if t.is_cuda and t.device.index is not None})
    stack: list[tuple[str, str]] = []
    tracer = _Tracer(stack)
    try:
        with (
            torch.random.fork_rng(devices=devices),
            torch.no_grad(),
            _module_stack(model, stack),
            tracer,
        ):
            out = model(*args, **kwargs)
    except Exception as e:
        return tracer.found or Provenance(
            "", type(model).__name__, "", "replay_failed", "", f"{type(e).__name__}: {e}"[:200]
        )
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    if tracer.found is None and any(
        not bool(torch.isfinite(t).all()) for t in _tensors(out) if t.numel()
    ):
        return Provenance(
            "",
            type(model).__name__,
            "",
            "unexplained",
            "",
            "the replayed output held NaN/Inf but no intercepted op made it (a fused kernel?)",
        )
    return tracer.found
