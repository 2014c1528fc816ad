"""Per-layer gradient, weight and update norms, reduced on the device.

A *layer* is a module that owns trainable parameters directly. On a sampled step:

- a ``post_accumulate_grad`` hook per parameter records :math:`\\|g\\|_2` as soon as the
  gradient is complete, i.e. **before** any clipping in the training loop;
- the weights are copied before the optimizer step and :math:`\\|\\Delta w\\|_2` is taken
  after it (the update ratio is meaningful under Adam, where gradients alone mislead);
- per-layer sums of squares are formed with one ``index_add_``, never a host sync, and
  kept as squares (:data:`~gradvitals.stats.LAYER_FIELDS`): they add exactly across
  sampled steps and across parameter shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradvitals.stats._table import LAYER_FIELDS

__all__ = ["LayerTable", "ParamAccumulator"]


@dataclass
class LayerTable:
    """Trainable parameters grouped by owning module (name order = registration order)."""

    names: list[str]
    kinds: list[str]
    params: list[nn.Parameter]
    layer_of_param: list[int]
    numel: list[int]

    @classmethod
    def from_model(cls, model: nn.Module) -> LayerTable:
        names: list[str] = []
        kinds: list[str] = []
        params: list[nn.Parameter] = []
        owner: list[int] = []
        numel: list[int] = []
        seen: set[int] = set()
        for name, mod in model.named_modules():
            own = [
                p for p in mod.parameters(recurse=False) if p.requires_grad and id(p) not in seen
            ]
            if not own:
                continue
            names.append(name or type(mod).__name__)
            kinds.append(type(mod).__name__)
            numel.append(sum(p.numel() for p in own))
            for p in own:
                seen.add(id(p))
                params.append(p)
                owner.append(len(names) - 1)
        return cls(names, kinds, params, owner, numel)


class ParamAccumulator:
    """Window accumulators for the layer statistics (all on the parameters' device)."""

    def __init__(self, table: LayerTable) -> None:
        self.table = table
        self.grad_norms: dict[int, torch.Tensor] = {}  # param index -> ||g|| (this step)
        self.grad_scale: torch.Tensor | None = None
        self.before: list[torch.Tensor] | None = None
        self.norm_dtype = torch.float32
        self.device = table.params[0].device if table.params else torch.device("cpu")
        self.index = torch.tensor(table.layer_of_param, device=self.device, dtype=torch.long)
        self._index_cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.reset()

    def reset(self) -> None:
        n = len(self.table.names)
        self.grad_sq_sum = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.update_sq_sum = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.weight_sq = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.n_grad_nonfinite = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.has_grad = [False] * n
        self.has_update = False
        self.n_samples = 0

    def fresh(self) -> ParamAccumulator:
        """A new, empty accumulator over the same table (double buffering of windows)."""
        other = ParamAccumulator.__new__(ParamAccumulator)
        other.table, other.device, other.index = self.table, self.device, self.index
        other.grad_norms, other.grad_scale, other.before = {}, None, None
        other.norm_dtype = self.norm_dtype
        other._index_cache = self._index_cache
        other.reset()
        return other

    def pack(self) -> torch.Tensor:
        """The layers' segment of the packed window, in :data:`LAYER_FIELDS` order."""
        return torch.cat([getattr(self, f.name).reshape(-1) for f in LAYER_FIELDS])

    def _index_for(self, idx: list[int]) -> torch.Tensor:
        """Layer index of the given parameters, cached on the device (no host copy)."""
        if len(idx) == len(self.table.params):
            return self.index
        key = tuple(idx)
        cached = self._index_cache.get(key)
        if cached is None:
            cached = self._index_cache[key] = self.index[list(key)]
        return cached

    # -- hooks -------------------------------------------------------------------------
    def on_grad(self, i: int, p: torch.Tensor) -> None:
        if p.grad is not None:
            # float64 when gradients are AMP-scaled: a norm of 2**k-scaled values overflows fp32
            self.grad_norms[i] = torch.linalg.vector_norm(p.grad.detach(), dtype=self.norm_dtype)

    def snapshot_weights(self) -> None:
        self.before = [p.detach().clone() for p in self.table.params]

    # -- commit at the end of a sampled step -------------------------------------------
    @torch.no_grad()
    def commit(self) -> None:
        t = self.table
        n = len(t.names)
        if self.grad_norms:
            idx = sorted(self.grad_norms)
            norms = torch.stack([self.grad_norms[i] for i in idx]).double()
            if self.grad_scale is not None:
                norms = norms / self.grad_scale.double()
            sq = torch.zeros(n, dtype=torch.float64, device=self.device)
            sq.index_add_(0, self._index_for(idx), norms.square())
            self.grad_sq_sum += sq
            self.n_grad_nonfinite += (~torch.isfinite(sq)).double()
            for i in idx:
                self.has_grad[t.layer_of_param[i]] = True
        weights = [p.detach() for p in t.params]
        if weights:
            w = torch.stack(torch._foreach_norm(weights)).double()
            wsq = torch.zeros(n, dtype=torch.float64, device=self.device).index_add_(
                0, self.index, w.square()
            )
            self.weight_sq = wsq
            if self.before is not None:
                torch._foreach_sub_(self.before, weights)  # in place: before <- -(delta w)
                d = torch.stack(torch._foreach_norm(self.before)).double()
                dsq = torch.zeros(n, dtype=torch.float64, device=self.device).index_add_(
                    0, self.index, d.square()
                )
                self.update_sq_sum += dsq
                self.has_update = True
        self.before = None
        self.grad_norms = {}
        self.grad_scale = None
        self.n_samples += 1
