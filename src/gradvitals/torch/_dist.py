"""torch.distributed: combine each window's statistics across ranks (DDP, FSDP).

Wiring only. The monitor packs a window's statistics into one flat float64 tensor with
a parallel list of ``(reduction, length)`` segments (``_monitor._collect``). Under
``torch.distributed`` every rank gathers every rank's tensor and combines it the same
way, so every rank decides on the same record: the same findings and the same repairs,
in step.

How each segment combines (never a mean: ratios are derived after the sync):

- ``SUM``: counts and sums (zeros, examples, losses) add;
- ``MAX``: per-unit "ever positive" masks OR: a unit is dead only if it is dead on
  every rank's data;
- ``MIN``: minima;
- ``REPLICATED``: per-layer gradient, weight and update norms. Under DDP they are the
  same on every rank (gradients are read after DDP's all-reduce, see
  :class:`AfterBackward`; weights are replicated), so rank 0's value is taken. Under
  FSDP (``sharded=True``) each rank holds one shard and stores its shard's norm, so
  the norms combine as :math:`\\sqrt{\\sum_r \\|x_r\\|^2}`. The monitor keeps the *sum*
  of per-step norms over a window's sampled steps; combining sums of norms this way is
  exact for one sampled step and otherwise a lower bound (Minkowski), equal when the
  shards' share of the norm does not change between the sampled steps. (The monitor
  refuses FSDP models for now, see :func:`attach`: the reducer is ready, the
  collectors are not.)

Cost per window: one tiny all-reduce of a layout fingerprint (a mismatch would abort
the process inside gloo or hang NCCL, so it is checked first) and one
all-gather (``all_gather_into_tensor``) of the packed statistics.

>>> import torch
>>> from gradvitals.torch._monitor import MAX, MIN, REPLICATED, SUM
>>> gathered = torch.tensor([[3., 0., 5., 2.], [4., 1., 7., 9.]], dtype=torch.float64)
>>> ops = [(SUM, 1), (MAX, 1), (MIN, 1), (REPLICATED, 1)]
>>> combine(gathered, ops).tolist()
[7.0, 1.0, 5.0, 2.0]
>>> combine(gathered, ops, sharded=True).tolist()
[7.0, 1.0, 5.0, 9.219544457292887]
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from gradvitals.errors import UsageError
from gradvitals.torch._monitor import MAX, MIN, SUM

if TYPE_CHECKING:
    from gradvitals.torch._monitor import Monitor

__all__ = ["AfterBackward", "attach", "combine", "is_distributed", "make_reducer"]

Ops = list[tuple[int, int]]
Reducer = Callable[[torch.Tensor, Ops], torch.Tensor]


#: ``all_gather_into_tensor`` was renamed ``all_gather_single`` in torch 2.13
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def is_distributed(group: Any = None) -> bool:
    """True when ``torch.distributed`` is initialized with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def combine(gathered: torch.Tensor, ops: Ops, *, sharded: bool = False) -> torch.Tensor:
    """Combine a ``(world, n)`` stack of packed statistics segment by segment.

    Args:
        gathered: row ``r`` is rank ``r``'s flat tensor.
        ops: ``(reduction, length)`` per segment, lengths summing to ``n``.
        sharded: combine ``REPLICATED`` norms as shard norms (FSDP), see module doc.

    Returns:
        The combined flat tensor, shape ``(n,)``.
    """
    codes = torch.tensor([op for op, _ in ops], device=gathered.device)
    lengths = torch.tensor([n for _, n in ops], device=gathered.device)
    op = torch.repeat_interleave(codes, lengths)  # (n,) reduction of each element
    # DDP: the same on every rank, take rank 0's; FSDP: shard norms, root sum of squares
    replicated = gathered.square().sum(0).sqrt() if sharded else gathered[0]
    out = torch.where(op == SUM, gathered.sum(0), replicated)
    out = torch.where(op == MAX, gathered.amax(0), out)
    return torch.where(op == MIN, gathered.amin(0), out)


def make_reducer(
    group: Any = None,
    *,
    sharded: bool = False,
    layout_key: Callable[[], str] | None = None,
) -> Reducer:
    """A ``(flat, ops) -> flat`` hook that combines packed statistics across ranks.

    Args:
        group: the process group (default: the world).
        sharded: parameters are sharded (FSDP): norms combine as a root sum of squares.
        layout_key: optional text naming what the segments are (e.g. the site names);
            ranks whose keys differ are refused rather than silently mixed.

    Returns:
        The reducer. Every rank must call it at the same point (the monitor does, once
        per window, since all ranks count the same optimizer steps).
    """

    def reduce(flat: torch.Tensor, ops: Ops) -> torch.Tensor:
        world = dist.get_world_size(group)
        key = repr(ops) + (layout_key() if layout_key is not None else "")
        h = float(zlib.crc32(key.encode()))
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
        return combine(gathered.view(world, -1), ops, sharded=sharded)

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


def _is_sharded(model: nn.Module) -> bool:
    if any(type(m).__name__ in ("FullyShardedDataParallel", "FSDPModule") for m in model.modules()):
        return True
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def attach(monitor: Monitor, *, required: bool = False, group: Any = None) -> None:
    """Make ``monitor`` combine its windows across ranks, if there are several.

    Sets ``monitor._reduce``, makes rank 0 the only one that logs, and reads gradients
    after DDP's all-reduce. Does nothing on a single process unless ``required``.
    Refuses FSDP-sharded models: the reducer can combine shard norms
    (``make_reducer(sharded=True)``), but the collectors do not read DTensor shards yet.
    """
    if not is_distributed(group):
        if required:
            raise UsageError(
                "distributed=True needs torch.distributed initialized with more than one "
                "rank: call torch.distributed.init_process_group() first (torchrun does "
                "this for you), or leave distributed unset to detect it."
            )
        return
    if _is_sharded(monitor.model):
        raise UsageError(
            "gradvitals cannot watch FSDP-sharded parameters yet: FSDP writes the "
            "reduce-scattered gradient shards without passing through the per-parameter "
            "hooks gradvitals reads. Watch the model under DDP (or a single process); "
            "see docs/scale-out.md, 'FSDP'."
        )

    def layout() -> str:  # the live sites, in the order ``_collect`` packs them
        return monitor._packing_layout

    monitor._reduce = make_reducer(group, layout_key=layout)
    monitor.is_main_process = dist.get_rank(group) == 0
    monitor._on_grad = AfterBackward(monitor._on_grad, monitor._fail)
