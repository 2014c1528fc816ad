"""torch.distributed: combine each window's statistics across ranks (DDP, FSDP2).

Wiring only. The monitor packs a window's statistics into one flat float64 tensor laid
out by :class:`~gradvitals.stats.Layout`, whose fields each declare their reduction
(:mod:`gradvitals.stats._table`). Under ``torch.distributed`` every rank gathers every
rank's tensor and combines it the same way, so every rank decides on the same record:
the same findings and the same repairs, in step.

How each field combines (never a mean and never a norm: ratios and norms are derived
after the sync, so every combine is exact):

- ``SUM``: counts and sums (zeros, examples, losses) add;
- ``MAX``: per-unit "ever positive" masks OR: a unit is dead only if it is dead on
  every rank's data; "some rank saw a NaN" flags;
- ``MIN``: minima;
- ``PARAM_SUM``: per-layer squared gradient, weight and update norms. Under DDP they
  are the same on every rank (gradients are read after DDP's all-reduce, see
  :class:`AfterBackward`; weights are replicated), so rank 0's value is taken. With
  sharded parameters (FSDP2's ``fully_shard``, ``sharded=True``) each rank holds its
  shards' sums of squares, and they add: :math:`\\|g\\|^2 = \\sum_r \\|g^{(r)}\\|^2`.
  FSDP2 calls a sharded parameter's post-accumulate-grad hooks with the reduce-scattered
  (averaged) gradient shard, so gradients are read there, not deferred.

Cost per window: one tiny all-reduce of a layout fingerprint (a mismatch would abort
the process inside gloo or hang NCCL, so it is checked first) and one
all-gather (``all_gather_into_tensor``) of the packed statistics.

>>> import torch
>>> from gradvitals.stats import Layout
>>> lay = Layout(sites=(), n_layers=1)
>>> gathered = torch.stack([torch.arange(lay.size, dtype=torch.float64)] * 2)
>>> combine(gathered, torch.as_tensor(lay.reduce_codes()))[:4].tolist()  # 4 layer fields
[0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gradvitals.errors import UsageError
from gradvitals.stats import Layout, Reduce
from gradvitals.torch._params import is_sharded_tensor

__all__ = [
    "AfterBackward",
    "DistSetup",
    "Sharding",
    "combine",
    "is_distributed",
    "make_reducer",
    "plan",
    "sharding",
]

Reducer = Callable[[torch.Tensor, Layout], torch.Tensor]


#: ``all_gather_into_tensor`` was renamed ``all_gather_single`` in torch 2.13
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def is_distributed(group: Any = None) -> bool:
    """True when ``torch.distributed`` is initialized with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def combine(gathered: torch.Tensor, codes: torch.Tensor, *, sharded: bool = False) -> torch.Tensor:
    """Combine a ``(world, n)`` stack of packed statistics element by element.

    Args:
        gathered: row ``r`` is rank ``r``'s flat tensor.
        codes: the :class:`~gradvitals.stats.Reduce` code of each element, shape ``(n,)``.
        sharded: parameters are sharded (FSDP): ``PARAM_SUM`` fields add.

    Returns:
        The combined flat tensor, shape ``(n,)`` (the same rule as
        :func:`gradvitals.stats.combine_rows`).
    """
    codes = codes.to(gathered.device)
    param = gathered.sum(0) if sharded else gathered[0]
    out = torch.where(codes == int(Reduce.SUM), gathered.sum(0), param)
    out = torch.where(codes == int(Reduce.MAX), gathered.amax(0), out)
    return torch.where(codes == int(Reduce.MIN), gathered.amin(0), out)


def make_reducer(
    group: Any = None,
    *,
    sharded: bool = False,
    layout_key: Callable[[], str] | None = None,
) -> Reducer:
    """A ``(flat, layout) -> flat`` hook that combines packed statistics across ranks.

    Args:
        group: the process group (default: the world).
        sharded: parameters are sharded (FSDP): squared norms add across ranks.
        layout_key: optional text naming what the segments are (e.g. the site names);
            ranks whose keys differ are refused rather than silently mixed.

    Returns:
        The reducer. Every rank must call it at the same point (the monitor does, once
        per window, since all ranks count the same optimizer steps).
    """
    codes_cache: dict[Layout, torch.Tensor] = {}

    def reduce(flat: torch.Tensor, layout: Layout) -> torch.Tensor:
        world = dist.get_world_size(group)
        extra = layout_key() if layout_key is not None else ""
        h = float(zlib.crc32(f"{layout.fingerprint()}|{extra}".encode()))
        n = float(flat.numel())
        # 1. agree on the layout: [n, h, -n, -h] reduced by max is [n, h, -n, -h] on
        #    every rank iff every rank has the same n and h
        head = torch.tensor([n, h, -n, -h], dtype=torch.float64, device=flat.device)
        dist.all_reduce(head, op=dist.ReduceOp.MAX, group=group)
        if head[0] != -head[2] or head[1] != -head[3]:
            raise UsageError(
                "gradvitals: ranks observed different activation sites or layers in the "
                "same window (data-dependent control flow, e.g. mixture-of-experts "
                "routing, or a rank that skipped a forward pass), so their statistics "
                "cannot be combined. Watch with distributed=False to monitor each rank "
                "separately."
            )
        # 2. one gather of every rank's statistics, combined locally
        gathered = torch.empty(world * flat.numel(), dtype=flat.dtype, device=flat.device)
        _all_gather(gathered, flat.contiguous(), group=group)
        codes = codes_cache.get(layout)
        if codes is None:
            codes = codes_cache[layout] = torch.as_tensor(layout.reduce_codes())
        return combine(gathered.view(world, -1), codes, sharded=sharded)

    return reduce


class AfterBackward:
    """Defers a gradient hook to the end of the backward pass, after DDP's all-reduce.

    A parameter's ``post_accumulate_grad`` hook sees the *local* gradient: DDP copies
    the averaged gradient into ``.grad`` in a callback queued at the end of backward.
    This wrapper records which parameters were ready, queues a callback that queues
    another (so it runs after DDP's), and calls ``fn(i, p)`` there.
    """

    def __init__(self, fn: Callable[[int, torch.Tensor], None], on_error: Callable[..., None]):
        self.fn = fn
        self.on_error = on_error
        self.pending: dict[int, torch.Tensor] = {}

    def __call__(self, i: int, p: torch.Tensor) -> None:
        if not self.pending:
            torch.autograd.Variable._execution_engine.queue_callback(self._requeue)
        self.pending[i] = p

    def _requeue(self) -> None:
        torch.autograd.Variable._execution_engine.queue_callback(self._flush)

    def _flush(self) -> None:
        pending, self.pending = self.pending, {}
        try:
            for i, p in pending.items():
                self.fn(i, p)
        except Exception as e:  # never break the user's backward pass
            self.on_error(e)


_FSDP1 = (
    "gradvitals cannot watch FullyShardedDataParallel (FSDP1) models: FSDP1 flattens "
    "each wrapped module's parameters into one FlatParameter and writes the gradient "
    "shards outside the per-parameter hooks gradvitals reads, so per-layer norms cannot "
    "be made exact. Shard the model with torch.distributed.fsdp.fully_shard (FSDP2), "
    "which gradvitals watches, or train it under DDP; see docs/scale-out.md, 'FSDP2'."
)


@dataclass(frozen=True)
class Sharding:
    """How a model's trainable parameters are sharded across ranks (FSDP2).

    Attributes:
        group: the process group the shards span, over which every window is combined
            (None: the default group).
        ranks: the number of ranks holding a part of the parameters.
    """

    group: Any
    ranks: int


def _is_fsdp_module(m: nn.Module) -> bool:
    return any(c.__name__ == "FSDPModule" for c in type(m).__mro__)


def sharding(model: nn.Module, group: Any = None) -> Sharding | None:
    """The sharding of ``model``'s trainable parameters, or None when none is sharded.

    Accepts FSDP2 (``fully_shard``: DTensor parameters sharded along one mesh
    dimension, optionally replicated along another, as HSDP does). Refuses, with what
    to do instead: FSDP1 (``FullyShardedDataParallel``); trainable parameters of which
    only some are sharded; DTensor parameters not managed by ``fully_shard`` or sharded
    along two dimensions (tensor parallelism, whose activations are split by unit
    across ranks); a multi-dimensional mesh that does not span the process group.
    """
    if any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()):
        raise UsageError(_FSDP1)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sharded = [(n, p) for n, p in named if is_sharded_tensor(p)]
    if not sharded:
        return None
    plain = [n for n, p in named if not is_sharded_tensor(p)]
    if plain:
        raise UsageError(
            f"gradvitals: {len(plain)} trainable parameters are not sharded while the "
            f"others are (first: {plain[0]!r}). Nothing averages their gradients across "
            "ranks, so the ranks would train different values. Call fully_shard on the "
            "root module too (after its submodules): fully_shard(block) for each block, "
            "then fully_shard(model)."
        )
    if not any(_is_fsdp_module(m) for m in model.modules()):
        raise UsageError(
            "gradvitals watches DTensor parameters sharded by fully_shard (FSDP2); this "
            "model has DTensor parameters but no fully_shard module (tensor parallelism?). "
            "Tensor parallelism splits activations by unit across ranks, which gradvitals "
            "cannot combine yet: watch the model under fully_shard or DDP."
        )
    meshes = {id(p.device_mesh): p for _, p in sharded}  # type: ignore[attr-defined]
    ranks = {tuple(p.device_mesh.mesh.flatten().tolist()) for p in meshes.values()}  # type: ignore[attr-defined]
    if len(ranks) > 1:
        raise UsageError(
            "gradvitals: the model's parameters are sharded over different sets of ranks "
            f"({sorted(ranks)}); every rank must shard every parameter over the same "
            "device mesh to combine their statistics."
        )
    for name, p in sharded:
        placements = p.placements  # type: ignore[attr-defined]
        shard_dims = sum(pl.is_shard() for pl in placements)
        if shard_dims > 1 or not all(pl.is_shard() or pl.is_replicate() for pl in placements):
            raise UsageError(
                f"gradvitals: parameter {name!r} is placed as {tuple(placements)}; it can "
                "combine parameters sharded along one mesh dimension and replicated along "
                "the others (fully_shard, HSDP), not tensor-parallel layouts."
            )
    mesh = next(iter(meshes.values())).device_mesh  # type: ignore[attr-defined]
    if mesh.ndim == 1:
        return Sharding(mesh.get_group(), mesh.size())
    if mesh.size() != dist.get_world_size(group):
        raise UsageError(
            f"gradvitals: the parameters' {mesh.ndim}-dimensional device mesh spans "
            f"{mesh.size()} ranks, the process group {dist.get_world_size(group)}; "
            "watch a model whose mesh covers every rank of the job."
        )
    return Sharding(group, mesh.size())


@dataclass(frozen=True)
class DistSetup:
    """How a monitor takes part in a distributed run.

    Attributes:
        reduce: combines a window's packed statistics across ranks.
        is_main: this rank logs (rank 0 of the combining group).
        sharded: parameters are FSDP2 shards: gradients are read as the hooks see them
            (FSDP2 calls them with the reduced shard), not deferred past a DDP
            all-reduce; squared norms add across ranks.
    """

    reduce: Reducer
    is_main: bool
    sharded: bool = False


def plan(
    model: nn.Module,
    *,
    required: bool = False,
    group: Any = None,
    layout_key: Callable[[], str] | None = None,
    repair: bool = False,
) -> DistSetup | None:
    """The distributed wiring for ``model``, or None on a single process.

    The monitor then combines every window with the returned reducer and logs from
    rank 0 only. Replicated parameters (DDP): gradients are read after DDP's
    all-reduce (:class:`AfterBackward`) and rank 0's squared norms are taken.
    Sharded parameters (FSDP2's ``fully_shard``, see :func:`sharding`): each rank
    reads its local shards and the squared norms add across the shard group, over
    which the window is combined. Repair is refused on sharded models (its roll-back
    and re-initialisation act on whole tensors).
    """
    if not is_distributed(group):
        if required:
            raise UsageError(
                "distributed=True needs torch.distributed initialized with more than one "
                "rank: call torch.distributed.init_process_group() first (torchrun does "
                "this for you), or leave distributed unset to detect it."
            )
        return None
    shards = sharding(model, group)
    if shards is None:
        return DistSetup(make_reducer(group, layout_key=layout_key), dist.get_rank(group) == 0)
    if repair:
        raise UsageError(
            "repair=True is not available on FSDP-sharded models yet: its roll-back and "
            "re-initialisations act on whole tensors. Watch without repair (findings and "
            "remedies are reported on every rank), or repair under DDP."
        )
    if shards.ranks == 1:  # every rank shards over itself alone: nothing to combine
        return None
    reduce = make_reducer(shards.group, sharded=True, layout_key=layout_key)
    return DistSetup(reduce, dist.get_rank(shards.group) == 0, sharded=True)
