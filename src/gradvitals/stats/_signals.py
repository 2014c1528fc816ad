"""The one table of vital signs: the values derived from a window and shown to people.

A *signal* is a ratio or norm derived on the host from a window's sufficient
statistics (:mod:`gradvitals.stats._table`). Each is declared once here with its
scope, caption, whether the report draws it as a layers x steps heat map (and on a
log scale), and how to read it off a record. ``WindowRecord.scalars()``, the
TensorBoard writer, its dashboard layout and the report's heat maps all iterate this
table. Tags are ``<signal>/<key>``: the key is the site or layer name, or a fixed
key for model-wide signals (``loss/train``, ``grad_norm_total/model``).

The records are read by attribute (duck typing), so this module imports nothing of
``gradvitals`` and ``_records`` can use it freely.

>>> [s.name for s in SIGNALS]
['dead_fraction', 'zero_fraction', 'saturation', 'grad_norm', 'update_ratio', 'loss', 'grad_norm_total']
>>> [s.name for s in SIGNALS if s.heatmap]
['dead_fraction', 'saturation', 'grad_norm', 'update_ratio']
>>> tag(get("loss"), "train")
'loss/train'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SIGNALS", "Signal", "get", "record_scalars", "tag"]


@dataclass(frozen=True)
class Signal:
    """One vital sign.

    Attributes:
        name: the TensorBoard section (``"dead_fraction"``).
        scope: ``"site"`` (per activation site), ``"layer"`` (per layer with
            parameters) or ``"model"`` (one value per window).
        title: a short human title (``"Dead units"``).
        caption: what the value means, one line.
        value: reads the value off a site, layer or record.
        applies: whether the signal is defined for that site, layer or record.
        heatmap: the report draws it as a layers x steps heat map.
        log_scale: shown on a log scale.
        key: the fixed tag key of a model-scope signal.
        label: a short column or axis label (``"dead fraction"``).
        group: the dashboard section it is charted in (``"Dead units"``).
        cmap: the heat map's colour map.
    """

    name: str
    scope: str
    title: str
    caption: str
    value: Callable[[Any], float]
    applies: Callable[[Any], bool]
    heatmap: bool = False
    log_scale: bool = False
    key: str = ""
    label: str = ""
    group: str = ""
    cmap: str = "viridis"


def _loss(record: Any) -> float:
    loss = record.loss
    return float(loss.mean) if loss is not None and loss.count else math.nan


SIGNALS: tuple[Signal, ...] = (
    Signal(
        "dead_fraction",
        "site",
        "Dead units",
        "fraction of units never positive for any example of the window",
        value=lambda s: s.dead_fraction,
        applies=lambda s: s.relu_like,
        heatmap=True,
        label="dead fraction",
        group="Dead units",
        cmap="magma",
    ),
    Signal(
        "zero_fraction",
        "site",
        "Zero fraction",
        "fraction of values exactly zero (sparsity, not death)",
        value=lambda s: s.zero_fraction,
        applies=lambda s: s.relu_like,
        label="zero fraction",
        group="Dead units",
    ),
    Signal(
        "saturation",
        "site",
        "Saturation",
        "fraction of sigmoid/tanh outputs within eps of an asymptote",
        value=lambda s: s.saturation,
        applies=lambda s: s.saturating,
        heatmap=True,
        label="saturation",
        group="Saturation",
        cmap="magma",
    ),
    Signal(
        "grad_norm",
        "layer",
        "Gradient norm",
        "the layer's gradient norm (pre-clip)",
        value=lambda lay: lay.grad_norm,
        applies=lambda lay: lay.has_grad,
        heatmap=True,
        log_scale=True,
        label="gradient norm",
        group="Gradient norms",
    ),
    Signal(
        "update_ratio",
        "layer",
        "Update ratio",
        "|update| / |weight| of the optimizer step; healthy is about 1e-3, larger is too "
        "large, smaller too small",
        value=lambda lay: lay.update_ratio,
        applies=lambda lay: lay.has_grad,
        heatmap=True,
        log_scale=True,
        label="update ratio",
        group="Update ratios",
        cmap="RdBu_r",
    ),
    Signal(
        "loss",
        "model",
        "Loss",
        "training loss (window mean of the observed losses)",
        value=_loss,
        applies=lambda rec: True,
        key="train",
        label="loss",
        group="Loss",
    ),
    Signal(
        "grad_norm_total",
        "model",
        "Global gradient norm",
        "the model's global gradient norm",
        value=lambda rec: rec.total_grad_norm,
        applies=lambda rec: True,
        log_scale=True,
        key="model",
        label="global gradient norm",
        group="Gradient norms",
    ),
)

_BY_NAME = {s.name: s for s in SIGNALS}


def get(name: str) -> Signal:
    """The signal called ``name``; a ``KeyError`` lists the known names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no signal {name!r}; known: {', '.join(_BY_NAME)}") from None


def tag(signal: Signal, key: str) -> str:
    """The TensorBoard tag ``<signal>/<key>``."""
    return f"{signal.name}/{key}"


def _nonfinite(record: Any) -> bool:
    loss = record.loss
    if loss is not None and loss.n_nonfinite:
        return True
    if any(s.n_nonfinite for s in record.sites.values()):
        return True
    return any(lay.n_grad_nonfinite for lay in record.layers.values())


def record_scalars(record: Any) -> dict[str, float]:
    """Every signal of one window record as ``tag -> value``.

    A NaN means "not measured" and is omitted, except in a window whose data held NaN/Inf:
    there a NaN is the measurement, and it is kept (the window is counted, and shown as
    NaN, never as "dead").
    """
    keep_nan = _nonfinite(record)
    out: dict[str, float] = {}
    for sig in SIGNALS:
        if sig.scope == "site":
            items = record.sites.items()
        elif sig.scope == "layer":
            items = record.layers.items()
        else:
            items = [(sig.key, record)]
        for key, obj in items:
            if sig.applies(obj):
                v = float(sig.value(obj))
                if keep_nan or not math.isnan(v):
                    out[tag(sig, key)] = v
    return out
