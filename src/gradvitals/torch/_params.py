"""Per-layer gradient, weight and update norms, reduced on the device.

A *layer* is a module that owns trainable parameters directly. On a sampled step:

- a ``post_accumulate_grad`` hook per parameter records :math:`\\|g\\|_2` as soon as the
  gradient is complete, i.e. **before** any clipping in the training loop;
- :math:`\\|\\Delta w\\|_2` of the optimizer step is taken from a *sample* of each
  parameter's elements copied before the step (see :func:`sample_stride`): tensors of up
  to :data:`EXACT_ELEMENTS` elements are copied whole (exact), larger ones by a fixed
  stride, and :math:`\\|\\Delta w\\|^2` is the sample's sum of squares scaled by
  ``n / m``. The update ratio is meaningful under Adam, where gradients alone mislead;
  the peak extra memory is :math:`\\sum_p \\min(n_p, \\max(2^{16}, \\lceil n_p/64
  \\rceil))` elements, about 1.6% of the parameters of a large model, not a second copy;
- per-layer sums of squares are formed with one ``index_add_``, never a host sync, and
  kept as squares (:data:`~gradvitals.stats.LAYER_FIELDS`): they add exactly across
  sampled steps and across parameter shards.

Sharded parameters (FSDP2's ``fully_shard``: DTensor parameters and gradients) are read
through their *local shard* (:func:`local_shard`), never through DTensor operations,
which would run a collective per parameter. Each rank packs its shard's sums of
squares, and the distributed combine adds them (``Reduce.PARAM_SUM`` with
``sharded=True``): :math:`\\|g\\|^2 = \\sum_r \\|g^{(r)}\\|^2` exactly. A copy replicated
along a mesh dimension (HSDP) is counted by one rank only (:func:`counted_here`). The
update sample is taken from the local shard, with the stride and ``n / m`` of the
shard's own size, so it is exact wherever each shard has at most
:data:`EXACT_ELEMENTS` elements, and an unbiased estimate above.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
from torch import nn

from gradvitals.stats._table import LAYER_FIELDS

__all__ = [
    "EXACT_ELEMENTS",
    "LayerTable",
    "ParamAccumulator",
    "counted_here",
    "grad_norm",
    "is_sharded_tensor",
    "local_shard",
    "module_kind",
    "sample_stride",
]

#: Parameters with at most this many elements have their update measured exactly.
EXACT_ELEMENTS = 1 << 16
#: Larger ones keep at least one element in this many (and at least EXACT_ELEMENTS).
SAMPLE_FRACTION = 64


def sample_stride(numel: int) -> int:
    """The stride of the update sample of a parameter with ``numel`` elements.

    1 (every element: exact) up to :data:`EXACT_ELEMENTS`; above, the stride keeping
    :math:`m = \\max(2^{16}, \\lceil n/64 \\rceil)` elements. Strided (systematic)
    sampling of the flattened tensor: every row and column of a matrix is hit once the
    stride and the row length are not multiples of each other, and the estimate
    :math:`\\tfrac{n}{m}\\sum_{i \\in S} \\Delta w_i^2` of :math:`\\|\\Delta w\\|^2` has a
    relative error of about :math:`\\sqrt{2/m} \\le 0.6\\%` for unstructured updates.

    >>> sample_stride(4096), sample_stride(1 << 20), sample_stride(100_000_000)
    (1, 16, 64)
    """
    if numel <= EXACT_ELEMENTS:
        return 1
    keep = max(EXACT_ELEMENTS, math.ceil(numel / SAMPLE_FRACTION))
    return max(1, numel // keep)


def is_sharded_tensor(t: object) -> bool:
    """True for a ``torch.distributed`` DTensor (FSDP2's parameters and gradients).

    Reads ``sys.modules`` only: no tensor can be a DTensor before
    ``torch.distributed.tensor`` is imported, and importing it costs about a second.

    >>> is_sharded_tensor(torch.zeros(2))
    False
    """
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``t``: a DTensor's local shard (detached, no collective), any
    other tensor itself.

    >>> x = torch.arange(3.0)
    >>> local_shard(x) is x
    True
    """
    if is_sharded_tensor(t):
        with torch.no_grad():
            return t.to_local()  # type: ignore[attr-defined,no-any-return]
    return t


def counted_here(t: torch.Tensor) -> bool:
    """Whether this rank's copy of ``t`` counts in a sum over ranks.

    A DTensor sharded along every mesh dimension (FSDP) is counted by every rank: the
    shards are disjoint. Along a ``Replicate`` dimension (HSDP's replica groups) every
    coordinate holds the same values, so only coordinate 0 counts them. A plain tensor
    always counts (a single process, or one rank on its own).

    >>> counted_here(torch.zeros(2))
    True
    """
    if not is_sharded_tensor(t):
        return True
    coord = t.device_mesh.get_coordinate()  # type: ignore[attr-defined]
    if coord is None:  # this rank is not in the mesh: it holds nothing
        return False
    placements = t.placements  # type: ignore[attr-defined]
    return all(c == 0 for c, pl in zip(coord, placements, strict=True) if pl.is_replicate())


def module_kind(mod: nn.Module) -> str:
    """The class name of ``mod`` as the user wrote it: ``fully_shard`` swaps a module's
    class for a subclass named ``FSDP<Class>``, which is undone here.

    >>> module_kind(torch.nn.Linear(2, 2))
    'Linear'
    """
    cls = type(mod)
    if cls.__name__.startswith("FSDP") and any(b.__name__ == "FSDPModule" for b in cls.__bases__):
        cls = next((b for b in cls.__bases__ if b.__name__ != "FSDPModule"), cls)
    return cls.__name__


def grad_norm(g: torch.Tensor, wide: bool = False) -> torch.Tensor:
    """:math:`\\|g\\|_2` of a gradient of any layout PyTorch trains, as a real tensor.

    - float16/bfloat16/float32 are reduced in float32 (float64 when ``wide``: AMP-scaled
      gradients overflow float32), float64 in float64;
    - complex: the norm of the magnitudes (``vector_norm`` does it);
    - sparse COO (``nn.Embedding(sparse=True)``): the norm of the coalesced values.

    >>> grad_norm(torch.tensor([3.0, 4.0])).item(), grad_norm(torch.tensor([3j, 4.0])).item()
    (5.0, 5.0)
    >>> grad_norm(torch.tensor([[0.0, 3.0], [4.0, 0.0]]).to_sparse()).item()
    5.0
    >>> grad_norm(torch.tensor([3.0, 4.0], dtype=torch.float64)).dtype
    torch.float64
    """
    g = g.detach()
    if g.layout is torch.sparse_coo:
        g = g.coalesce().values()
    elif g.layout is not torch.strided:  # CSR and friends
        g = g.to_dense()
    real = g.real if g.is_complex() else g
    dtype = torch.float64 if (wide or real.dtype == torch.float64) else torch.float32
    return torch.linalg.vector_norm(g, dtype=dtype if not g.is_complex() else None).to(dtype)


@dataclass
class LayerTable:
    """Trainable parameters grouped by owning module (name order = registration order).

    ``numel`` counts a layer's elements over all shards; the update sample's strides
    and scales are those of this rank's shards (:func:`local_shard`).
    """

    names: list[str]
    kinds: list[str]
    params: list[nn.Parameter]
    layer_of_param: list[int]
    numel: list[int]

    @property
    def strides(self) -> list[int]:
        """Per parameter, the stride of its update sample (:func:`sample_stride`)."""
        cached = self.__dict__.get("_strides")
        if cached is None:
            cached = self.__dict__["_strides"] = [
                sample_stride(local_shard(p).numel()) for p in self.params
            ]
        return cached  # type: ignore[no-any-return]

    def scale(self, device: torch.device) -> torch.Tensor:
        """Per parameter, ``n / m``: a sample's sum of squares times this estimates the
        whole (local) tensor's (1 where the sample is the whole tensor; 0 where this
        rank's copy is not counted, see :meth:`counted`)."""
        key = f"_scale_{device}"
        cached = self.__dict__.get(key)
        if cached is None:
            sizes = [local_shard(p).numel() for p in self.params]
            ratios = [
                n / max(1, len(range(0, n, s))) for n, s in zip(sizes, self.strides, strict=True)
            ]
            scale = torch.tensor(ratios, dtype=torch.float64, device=device)
            cached = self.__dict__[key] = scale * self.counted(device)
        return cached  # type: ignore[no-any-return]

    def counted(self, device: torch.device) -> torch.Tensor:
        """Per parameter, 1.0 where this rank's copy counts in a sum over ranks, else 0.0
        (:func:`counted_here`; all ones without sharding)."""
        key = f"_counted_{device}"
        cached = self.__dict__.get(key)
        if cached is None:
            flags = [float(counted_here(p)) for p in self.params]
            cached = self.__dict__[key] = torch.tensor(flags, dtype=torch.float64, device=device)
        return cached  # type: ignore[no-any-return]

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
            names.append(name or module_kind(mod))
            kinds.append(module_kind(mod))
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
        self._counted_cache: dict[tuple[int, ...], torch.Tensor] = {}
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
        other._counted_cache = self._counted_cache
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

    def _counted_for(self, idx: list[int]) -> torch.Tensor:
        """:meth:`LayerTable.counted` of the given parameters, cached on the device."""
        counted = self.table.counted(self.device)
        if len(idx) == len(self.table.params):
            return counted
        key = tuple(idx)
        cached = self._counted_cache.get(key)
        if cached is None:
            cached = self._counted_cache[key] = counted[list(key)]
        return cached

    # -- hooks -------------------------------------------------------------------------
    def on_grad(self, i: int, p: torch.Tensor) -> None:
        if p.grad is not None:
            # float64 when gradients are AMP-scaled: a norm of 2**k-scaled values overflows fp32
            wide = self.norm_dtype == torch.float64
            self.grad_norms[i] = grad_norm(local_shard(p.grad), wide)

    def _sample(self, p: torch.Tensor, stride: int) -> torch.Tensor:
        flat = local_shard(p).detach().reshape(-1)
        return flat if stride == 1 else flat[::stride]

    def snapshot_weights(self) -> None:
        """Copy the update sample of every parameter (before the optimizer step)."""
        strides = self.table.strides
        self.before = [
            self._sample(p, s).clone() for p, s in zip(self.table.params, strides, strict=True)
        ]

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
            sq.index_add_(0, self._index_for(idx), norms.square() * self._counted_for(idx))
            self.grad_sq_sum += sq
            self.n_grad_nonfinite += (~torch.isfinite(sq)).double()
            for i in idx:
                self.has_grad[t.layer_of_param[i]] = True
        weights = [local_shard(p).detach() for p in t.params]
        if weights:
            w = torch.stack([x.to(self.device) for x in torch._foreach_norm(weights)]).double()
            wsq = torch.zeros(n, dtype=torch.float64, device=self.device).index_add_(
                0, self.index, w.square() * t.counted(self.device)
            )
            self.weight_sq = wsq
            if self.before is not None:
                after = [self._sample(p, s) for p, s in zip(t.params, t.strides, strict=True)]
                torch._foreach_sub_(self.before, after)  # in place: before <- -(delta w)
                d = torch.stack([x.to(self.device) for x in torch._foreach_norm(self.before)])
                dsq = torch.zeros(n, dtype=torch.float64, device=self.device).index_add_(
                    0, self.index, d.double().square() * self.table.scale(self.device)
                )
                self.update_sq_sum += dsq
                self.has_update = True
        self.before = None
        self.grad_norms = {}
        self.grad_scale = None
        self.n_samples += 1
