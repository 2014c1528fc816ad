"""Turn a window's packed host copy into a :class:`~gradvitals.stats.WindowRecord`.

Shared by every collector: they pack in :class:`~gradvitals.stats.Layout` order, copy
to the host once, and call :func:`assemble_record` with what they know on the host
(names, activations, which layers got gradients, how many steps were sampled).

Per-layer norms are root-mean-squares over the window's sampled steps,
:math:`\\|g\\| = \\sqrt{\\frac{1}{S}\\sum_s \\|g_s\\|^2}`: sums of squares combine
exactly across ranks and shards, norms and means would not.

>>> import numpy as np
>>> from gradvitals.stats._table import Layout
>>> lay = Layout(sites=(("act", 2),), n_layers=1)
>>> batch = [3, 0, np.inf, 1.0, 48.0, 48, 0, 0]  # 3 forwards, clean inputs of RMS 1
>>> host = np.array([1, 0, 5, 0, 0, 0.0, 64, 128,  8.0, 2e-6, 4.0, 0,  6.0, 3, 0, np.inf, -2.5, 1.5,
...                  *batch])
>>> rec = assemble_record(index=0, start=0, end=9, layout=lay, host=host,
...     sites=[SiteInfo("act", "relu")], layers=[LayerInfo("fc", "Linear", 10)],
...     has_grad=[True], n_samples=2, has_update=True)
>>> rec.sites["act"].dead_fraction, rec.layers["fc"].grad_norm, rec.layers["fc"].weight_norm
(0.5, 2.0, 2.0)
>>> rec.loss.mean, rec.loss.max, rec.batch.input_rms
(2.0, 2.5, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradvitals.stats._records import BatchStats, LayerStats, LossStats, SiteStats, WindowRecord
from gradvitals.stats._table import Layout

__all__ = ["LayerInfo", "SiteInfo", "assemble_record"]


@dataclass(frozen=True)
class SiteInfo:
    """What a collector knows about a site on the host: its activation and role."""

    name: str
    activation: str
    role: str = "output"


@dataclass(frozen=True)
class LayerInfo:
    """What a collector knows about a layer on the host: its class name and size."""

    name: str
    kind: str
    numel: int


def assemble_record(
    *,
    index: int,
    start: int,
    end: int,
    layout: Layout,
    host: np.ndarray,
    sites: Sequence[SiteInfo],
    layers: Sequence[LayerInfo],
    has_grad: Sequence[bool],
    n_samples: int,
    has_update: bool,
    layer_order: Sequence[int] | None = None,
    loss_steps: Sequence[int] = (),
    skipped_steps: int = 0,
    batch_steps: Sequence[int] = (),
) -> WindowRecord:
    """The :class:`WindowRecord` of one packed window.

    Args:
        index, start, end: the window's index and its first and last step.
        layout: the packed layout (sites in ``sites`` order, ``len(layers)`` layers).
        host: the packed values, after any cross-rank combine.
        sites: per packed site, its activation and role.
        layers: per packed layer, its name, class and element count.
        has_grad: per layer, whether any of its parameters got a gradient.
        n_samples: sampled steps in the window.
        has_update: whether update norms were measured.
        layer_order: the packed indices in forward order (default: packed order).
        loss_steps: the step of each observed loss, in observation order.
        skipped_steps: optimizer steps an AMP scaler skipped.
        batch_steps: the step of each checked forward, in order.
    """
    u = layout.unpack(host)
    site_stats: dict[str, SiteStats] = {}
    for info in sites:
        d = u.sites[info.name]
        mask = np.asarray(d["ever_positive"]) > 0.5
        site_stats[info.name] = SiteStats(
            name=info.name,
            activation=info.activation,
            units=int(mask.size),
            n_examples=int(d["n_examples"]),
            n_elements=int(d["n_elements"]),
            n_zero=round(float(d["n_zero"])),
            n_saturated=round(float(d["n_saturated"])),
            n_nonfinite=int(d["n_nonfinite"]),
            min_value=float(d["min_value"]),
            ever_positive=mask,
            role=info.role,
        )
    s = max(n_samples, 1)
    g, w, d_ = u.layers["grad_sq_sum"], u.layers["weight_sq"], u.layers["update_sq_sum"]
    nonfinite = u.layers["n_grad_nonfinite"]
    order = list(layer_order) if layer_order is not None else list(range(len(layers)))
    layer_stats: dict[str, LayerStats] = {}
    for i in order:
        lay = layers[i]
        layer_stats[lay.name] = LayerStats(
            name=lay.name,
            grad_norm=math.sqrt(g[i] / s) if has_grad[i] else math.nan,
            weight_norm=math.sqrt(w[i]) if n_samples else math.nan,
            update_norm=math.sqrt(d_[i] / s) if has_update else math.nan,
            numel=lay.numel,
            n_grad_nonfinite=int(nonfinite[i]),
            n_samples=n_samples,
            has_grad=bool(has_grad[i]),
            kind=lay.kind,
        )
    return WindowRecord(
        index=index,
        step_start=start,
        step_end=end,
        sites=site_stats,
        layers=layer_stats,
        loss=_loss(u.loss, start, loss_steps),
        skipped_steps=skipped_steps,
        batch=_batch(u.batch, batch_steps),
    )


def _loss(v: dict[str, float], start: int, steps: Sequence[int]) -> LossStats | None:
    count = int(v["loss_count"])
    if not count:
        return None
    bad = int(v["loss_nonfinite"])
    first = None
    idx = v["first_nonfinite_index"]
    if bad and math.isfinite(idx):
        first = int(steps[int(idx)]) if int(idx) < len(steps) else start + int(idx)
    neg_max, lo = v["loss_neg_max"], v["loss_min"]
    return LossStats(
        sum=float(v["loss_sum"]),
        count=count,
        n_nonfinite=bad,
        first_nonfinite_step=first,
        min=float(lo) if math.isfinite(lo) else math.nan,
        max=float(-neg_max) if math.isfinite(neg_max) else math.nan,
    )


def _batch(v: dict[str, float], steps: Sequence[int]) -> BatchStats | None:
    n = int(v["batch_steps"])
    if not n and not v["stale_grad"] and not v["target_nonfinite"]:
        return None
    idx = v["first_input_nonfinite"]
    first = None
    if int(v["input_nonfinite"]) and math.isfinite(idx):
        first = int(steps[int(idx)]) if int(idx) < len(steps) else None
    count = v["input_count"]
    return BatchStats(
        steps=n,
        n_input_nonfinite=int(v["input_nonfinite"]),
        first_input_nonfinite_step=first,
        input_abs_max=v["input_abs_max"] if count else math.nan,
        input_rms=math.sqrt(v["input_sq_sum"] / count) if count else math.nan,
        stale_grad=v["stale_grad"] > 0,
        target_nonfinite=v["target_nonfinite"] > 0,
    )
