"""The last healthy state of a model and its optimizer, as copies, for roll-back.

Memory: one copy of ``model.state_dict()`` (parameters and buffers) plus one of the
optimizer's per-parameter state: about 1x the parameters for plain SGD, 2x with
momentum, 3x for Adam/AdamW (weights, ``exp_avg``, ``exp_avg_sq``). The copies live
on the tensors' own devices unless ``offload_to_cpu=True``. The buffers are allocated
once and overwritten in place by later snapshots while the structure is unchanged.

Taking a snapshot only reads: no RNG is drawn, no value is written to the model, so a
healthy run stays bitwise identical to an unwatched one.

>>> import torch
>>> model = torch.nn.Linear(2, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> snap = Snapshot(model, opt)
>>> snap.capture(step=0)
True
>>> with torch.no_grad():
...     _ = model.weight.fill_(float("nan"))
>>> snap.capture(step=5)  # a non-finite state is never kept
False
>>> snap.restore(); bool(torch.isfinite(model.weight).all()), snap.step
(True, 0)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["Snapshot"]


def _finite(tensors: list[Any]) -> bool:
    """True when every floating-point tensor is finite (one host sync per device)."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
            by_device.setdefault(t.device, []).append(t)
    for ts in by_device.values():
        flags = torch.stack([torch.isfinite(t).all() for t in ts])
        if not bool(flags.all()):
            return False
    return True


class Snapshot:
    """Copies of ``model.state_dict()`` and the optimizer's per-parameter state.

    Args:
        model: the model; restored with ``load_state_dict`` (in place: parameter
            identities, and so the optimizer's references, are kept).
        optimizer: its optimizer; only per-parameter state (momentum, moments, step
            counts) is restored. Hyper-parameters (``lr``...) keep their current
            values, so a learning-rate change made by a repair, or by a scheduler since
            the snapshot, is not undone.
        offload_to_cpu: keep the copies in (pinned, when CUDA is used) CPU memory.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        offload_to_cpu: bool = False,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.offload_to_cpu = offload_to_cpu
        self.step: int | None = None
        self._model_state: dict[str, Any] = {}
        self._params: list[torch.Tensor] = []
        self._opt_state: list[dict[str, Any]] = []
        self._devices: dict[tuple[int, str], torch.device] = {}

    @property
    def taken(self) -> bool:
        return self.step is not None

    @property
    def nbytes(self) -> int:
        """Bytes held by the copies."""
        n = sum(
            t.numel() * t.element_size()
            for t in self._model_state.values()
            if isinstance(t, torch.Tensor)
        )
        for s in self._opt_state:
            n += sum(
                v.numel() * v.element_size() for v in s.values() if isinstance(v, torch.Tensor)
            )
        return n

    def _buffer(self, src: torch.Tensor, old: Any) -> torch.Tensor:
        """A destination for a copy of ``src``: ``old`` when it fits, else a new tensor."""
        device = torch.device("cpu") if self.offload_to_cpu else src.device
        if (
            isinstance(old, torch.Tensor)
            and old.shape == src.shape
            and old.dtype == src.dtype
            and old.device == device
        ):
            return old
        pin = self.offload_to_cpu and src.is_cuda
        return torch.empty(src.shape, dtype=src.dtype, device=device, pin_memory=pin)

    @torch.no_grad()
    def capture(self, step: int) -> bool:
        """Copy the current state; keep the previous snapshot and return False when a
        weight or buffer is NaN/Inf."""
        live = self.model.state_dict()
        if not _finite(list(live.values())):
            return False
        state: dict[str, Any] = {}
        for k, v in live.items():
            if not isinstance(v, torch.Tensor):  # get_extra_state(): any picklable object
                state[k] = copy.deepcopy(v)
                continue
            buf = self._buffer(v, self._model_state.get(k))
            buf.copy_(v.detach(), non_blocking=buf.is_pinned())
            state[k] = buf
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        same = len(params) == len(self._params) and all(
            a is b for a, b in zip(params, self._params, strict=False)
        )
        opt_state: list[dict[str, Any]] = []
        for i, p in enumerate(params):
            old = self._opt_state[i] if same else {}
            entry: dict[str, Any] = {}
            for k, v in self.optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor):
                    buf = self._buffer(v, old.get(k))
                    buf.copy_(v.detach(), non_blocking=buf.is_pinned())
                    self._devices[(i, k)] = v.device
                    entry[k] = buf
                else:
                    entry[k] = copy.deepcopy(v)
            opt_state.append(entry)
        self._model_state = state
        self._params = params
        self._opt_state = opt_state
        self.step = step
        return True

    @torch.no_grad()
    def restore(self) -> None:
        """Write the copies back into the model and optimizer.

        Raises:
            RuntimeError: the model's structure changed since the snapshot
                (``load_state_dict`` lists the missing and unexpected keys).
        """
        if self.step is None:
            raise RuntimeError("no snapshot was taken yet")
        self.model.load_state_dict(self._model_state)
        state = self.optimizer.state
        current = [p for g in self.optimizer.param_groups for p in g["params"]]
        known = {id(p) for p in self._params}
        for p in current:
            if id(p) not in known and p in state:
                del state[p]  # a parameter added since: start it fresh
        for i, p in enumerate(self._params):
            saved = self._opt_state[i]
            if not saved:
                state.pop(p, None)
                continue
            entry: dict[str, Any] = {}
            for k, v in saved.items():
                if isinstance(v, torch.Tensor):
                    entry[k] = v.to(self._devices.get((i, k), v.device), copy=True)
                else:
                    entry[k] = copy.deepcopy(v)
            state[p] = entry
        for p in current:
            p.grad = None  # a non-finite gradient must not reach the next step
