"""The one table of window statistics: what crosses from the device to the host.

Each *field* is a sufficient statistic of one scope, declared once with how it combines
across ranks (torchmetrics' ``add_state(..., dist_reduce_fx=...)`` idea): sums and
counts add, per-unit masks OR (``max``), minima take ``min``, and per-layer *squared*
norms are sums over parameter shards (``param_sum``: rank 0's value when parameters
are replicated, as under DDP; the sum over ranks when they are sharded, as under
FSDP). A mean is never reduced, and neither is a norm: ratios and norms are derived
on the host, so every combine is exact.

The collectors (PyTorch, Keras) pack one window into a flat ``float64`` vector in
:class:`Layout` order, the distributed combine reads the per-element reductions from
the same layout, and :meth:`Layout.unpack` turns the host copy back into named
fields. Nothing here imports a framework.

Packed order: for every site, the :data:`SITE_FIELDS` (``ever_positive`` has one
entry per unit, the rest one each); then each of the :data:`LAYER_FIELDS` for all
layers (field-major); then the :data:`LOSS_FIELDS` and the :data:`BATCH_FIELDS` (what
the batch brought: its finiteness and scale, stale gradients, bad targets).

>>> lay = Layout(sites=(("act", 3),), n_layers=2)
>>> lay.size  # 3 + 6 site scalars, 4 x 2 layer values, 6 loss and 8 batch values
31
>>> [(r.name, n) for r, n in lay.segments()][:3]
[('MAX', 3), ('SUM', 1), ('SUM', 1)]
>>> import numpy as np
>>> host = np.arange(lay.size, dtype=float)
>>> u = lay.unpack(host)
>>> u.sites["act"]["ever_positive"].tolist(), u.sites["act"]["n_zero"]
([0.0, 1.0, 2.0], 3.0)
>>> u.layers["weight_sq"].tolist(), u.loss["loss_count"]
([13.0, 14.0], 18.0)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import Enum, IntEnum

import numpy as np

__all__ = [
    "BATCH_FIELDS",
    "FIELDS",
    "LAYER_FIELDS",
    "LOSS_FIELDS",
    "SITE_FIELDS",
    "Field",
    "Layout",
    "Reduce",
    "Scope",
    "Unpacked",
    "combine_rows",
]


class Scope(str, Enum):
    """Where a statistic lives: an activation site, a layer (parameters), or the loss."""

    SITE = "site"
    LAYER = "layer"
    LOSS = "loss"
    BATCH = "batch"


class Reduce(IntEnum):
    """How a field combines across ranks (the integer is its code in a packed layout)."""

    SUM = 0  #: counts and sums add
    MAX = 1  #: masks OR; maxima; "any rank" flags
    MIN = 2  #: minima
    PARAM_SUM = 3  #: a sum over parameter elements: rank 0's when replicated, summed when sharded


@dataclass(frozen=True)
class Field:
    """One sufficient statistic.

    Attributes:
        name: the field name (the key in :class:`Unpacked`).
        scope: :class:`Scope`.
        reduce: :class:`Reduce` across ranks.
        per_unit: one value per unit of the site (else one per site/layer/loss).
        doc: what it counts, in one line.
    """

    name: str
    scope: Scope
    reduce: Reduce
    per_unit: bool = False
    doc: str = ""


SITE_FIELDS: tuple[Field, ...] = (
    Field("ever_positive", Scope.SITE, Reduce.MAX, True, "unit > 0 for some example (0/1)"),
    Field("n_zero", Scope.SITE, Reduce.SUM, doc="values exactly 0 (ReLU-like sites)"),
    Field("n_saturated", Scope.SITE, Reduce.SUM, doc="values within eps of an asymptote"),
    Field("n_nonfinite", Scope.SITE, Reduce.SUM, doc="units with a NaN/Inf value"),
    Field("min_value", Scope.SITE, Reduce.MIN, doc="smallest value seen"),
    Field("n_examples", Scope.SITE, Reduce.SUM, doc="examples seen"),
    Field("n_elements", Scope.SITE, Reduce.SUM, doc="values seen"),
)
LAYER_FIELDS: tuple[Field, ...] = (
    Field("grad_sq_sum", Scope.LAYER, Reduce.PARAM_SUM, doc="sum over sampled steps of ||g||^2"),
    Field("update_sq_sum", Scope.LAYER, Reduce.PARAM_SUM, doc="sum over sampled steps of ||dw||^2"),
    Field("weight_sq", Scope.LAYER, Reduce.PARAM_SUM, doc="||w||^2 after the last sampled step"),
    Field("n_grad_nonfinite", Scope.LAYER, Reduce.MAX, doc="sampled steps with a NaN/Inf grad"),
)
LOSS_FIELDS: tuple[Field, ...] = (
    Field("loss_sum", Scope.LOSS, Reduce.SUM, doc="sum of the finite losses"),
    Field("loss_count", Scope.LOSS, Reduce.SUM, doc="losses observed"),
    Field("loss_nonfinite", Scope.LOSS, Reduce.SUM, doc="non-finite losses"),
    Field("first_nonfinite_index", Scope.LOSS, Reduce.MIN, doc="index of the first bad loss"),
    Field("loss_neg_max", Scope.LOSS, Reduce.MIN, doc="minus the largest finite loss"),
    Field("loss_min", Scope.LOSS, Reduce.MIN, doc="the smallest finite loss"),
)
BATCH_FIELDS: tuple[Field, ...] = (
    Field("batch_steps", Scope.BATCH, Reduce.SUM, doc="training forwards seen (input checks)"),
    Field("input_nonfinite", Scope.BATCH, Reduce.SUM, doc="forwards whose input held NaN/Inf"),
    Field("first_input_nonfinite", Scope.BATCH, Reduce.MIN, doc="index of the first such"),
    Field("input_abs_max", Scope.BATCH, Reduce.MAX, doc="largest |input| (sampled steps)"),
    Field("input_sq_sum", Scope.BATCH, Reduce.SUM, doc="sum of input^2 (sampled steps)"),
    Field("input_count", Scope.BATCH, Reduce.SUM, doc="input values summed (sampled steps)"),
    Field("stale_grad", Scope.BATCH, Reduce.MAX, doc="a step began with last step's gradients"),
    Field("target_nonfinite", Scope.BATCH, Reduce.MAX, doc="a loss target held NaN/Inf"),
)
#: Every field, in packed order within each scope.
FIELDS: tuple[Field, ...] = SITE_FIELDS + LAYER_FIELDS + LOSS_FIELDS + BATCH_FIELDS


@dataclass
class Unpacked:
    """A window's host copy, by name: ``sites[site][field]``, ``layers[field]`` (one
    value per layer), ``loss[field]``, ``batch[field]``."""

    sites: dict[str, dict[str, np.ndarray | float]]
    layers: dict[str, np.ndarray]
    loss: dict[str, float]
    batch: dict[str, float]


@dataclass(frozen=True)
class Layout:
    """The packed layout of one window: its sites (name, units) and its layer count."""

    sites: tuple[tuple[str, int], ...]
    n_layers: int

    def segments(self) -> list[tuple[Reduce, int]]:
        """``(reduction, length)`` per contiguous segment, in packed order."""
        out: list[tuple[Reduce, int]] = []
        for _, units in self.sites:
            out += [(f.reduce, units if f.per_unit else 1) for f in SITE_FIELDS]
        out += [(f.reduce, self.n_layers) for f in LAYER_FIELDS]
        out += [(f.reduce, 1) for f in LOSS_FIELDS + BATCH_FIELDS]
        return out

    @property
    def size(self) -> int:
        return sum(n for _, n in self.segments())

    def reduce_codes(self) -> np.ndarray:
        """The reduction code of every packed element (``Reduce`` values)."""
        return np.concatenate(
            [np.full(n, int(r), dtype=np.int64) for r, n in self.segments() if n]
            or [np.zeros(0, np.int64)]
        )

    def fingerprint(self) -> int:
        """A CRC of the layout, so ranks with different layouts refuse to combine."""
        text = f"{self.n_layers}|" + ",".join(f"{n}:{u}" for n, u in self.sites)
        return zlib.crc32(text.encode())

    def unpack(self, host: np.ndarray) -> Unpacked:
        """Split a packed host vector into named fields."""
        if host.shape != (self.size,):
            raise ValueError(f"packed window has {host.shape} values, the layout {self.size}")
        pos = 0
        sites: dict[str, dict[str, np.ndarray | float]] = {}
        for name, units in self.sites:
            d: dict[str, np.ndarray | float] = {}
            for f in SITE_FIELDS:
                if f.per_unit:
                    d[f.name] = host[pos : pos + units]
                    pos += units
                else:
                    d[f.name] = float(host[pos])
                    pos += 1
            sites[name] = d
        layers: dict[str, np.ndarray] = {}
        for f in LAYER_FIELDS:
            layers[f.name] = host[pos : pos + self.n_layers]
            pos += self.n_layers
        loss = {f.name: float(host[pos + i]) for i, f in enumerate(LOSS_FIELDS)}
        pos += len(LOSS_FIELDS)
        batch = {f.name: float(host[pos + i]) for i, f in enumerate(BATCH_FIELDS)}
        return Unpacked(sites, layers, loss, batch)


def combine_rows(rows: np.ndarray, codes: np.ndarray, *, sharded: bool = False) -> np.ndarray:
    """Combine a ``(ranks, n)`` stack of packed windows element by element (numpy).

    The reference for the collectors' on-device combine: ``SUM`` adds, ``MAX`` and
    ``MIN`` reduce, ``PARAM_SUM`` takes rank 0's value (replicated parameters, DDP) or
    adds (``sharded`` parameters, FSDP).

    >>> rows = np.array([[3.0, 0.0, 5.0, 9.0], [4.0, 1.0, 7.0, 16.0]])
    >>> codes = np.array([Reduce.SUM, Reduce.MAX, Reduce.MIN, Reduce.PARAM_SUM])
    >>> combine_rows(rows, codes).tolist(), float(combine_rows(rows, codes, sharded=True)[3])
    ([7.0, 1.0, 5.0, 9.0], 25.0)
    """
    param = rows.sum(0) if sharded else rows[0]
    out = np.where(codes == Reduce.SUM, rows.sum(0), param)
    out = np.where(codes == Reduce.MAX, rows.max(0), out)
    return np.where(codes == Reduce.MIN, rows.min(0), out)
