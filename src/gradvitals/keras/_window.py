"""One window's device buffers, and their host copy turned into a :class:`WindowRecord`.

Device side (:class:`WindowBuffer`): the packed probe tensors of the sampled steps,
the packed weight/update tensors, and reads of the loss tracker. They are concatenated
and copied to the host **once**, when the window closes.

Host side (:func:`assemble`, pure numpy): unpacks them into
:class:`~gradvitals.stats.SiteStats`, :class:`~gradvitals.stats.LayerStats` and
:class:`~gradvitals.stats.LossStats`.

**Non-finite weights** count as a non-finite gradient of their layer: they came from
one, and they can hide from the probe (a fused ``MatMul+BiasAdd+Relu`` kernel may map
NaN to 0, so a ReLU layer with NaN weights looks dead rather than NaN).

**Loss.** Keras' loss tracker (the ``Mean`` metric behind ``logs["loss"]``) holds the
running ``total`` and ``count`` of the epoch's training losses. The difference of two
reads is the exact mean training loss of the steps between them, with no per-batch
host sync. Reads are taken when a window closes inside an epoch and at the end of each
epoch (before validation resets the tracker). Once the tracker holds a NaN it stays
NaN until the epoch ends; the probe losses then stand in for it.

>>> import numpy as np
>>> base = LossBase()
>>> loss, base = loss_stats([("batch", 10, np.array([20.0, 40.0]))], [], base)
>>> loss.mean, loss.count, base.step
(0.5, 10, 10)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradvitals.keras._layout import LayerTable, Site
from gradvitals.keras._probe import SITE_SCALARS, ProbeLayout
from gradvitals.stats import LayerStats, LossStats, SiteStats, WindowRecord

__all__ = ["LossBase", "WindowBuffer", "assemble", "loss_stats"]


@dataclass
class WindowBuffer:
    """Device tensors gathered during one window (nothing here has been copied)."""

    #: ``(step, packed probe tensor)`` per sampled step
    probes: list[tuple[int, Any]] = field(default_factory=list)
    #: ``(packed [w_sq (L), delta_sq (L)] tensor, optimizer steps it spans)``
    updates: list[tuple[Any, int]] = field(default_factory=list)
    #: ``(kind, global step, [total, count] tensor)``; kind ``"batch"`` or ``"epoch_end"``
    reads: list[tuple[str, int, Any]] = field(default_factory=list)

    def clear(self) -> None:
        self.probes.clear()
        self.updates.clear()
        self.reads.clear()

    def tensors(self) -> list[Any]:
        """Every buffered tensor, in :func:`assemble` order."""
        return (
            [t for _, t in self.probes] + [t for t, _ in self.updates] + [t for *_, t in self.reads]
        )

    @property
    def empty(self) -> bool:
        return not (self.probes or self.updates or self.reads)


@dataclass
class LossBase:
    """The last loss-tracker read (host values), which the next read is measured from."""

    total: float = 0.0
    count: float = 0.0
    step: int = 0

    def to_dict(self) -> dict[str, float]:
        return {"total": self.total, "count": self.count, "step": self.step}


def loss_stats(
    reads: list[tuple[str, int, np.ndarray]],
    probe_losses: list[tuple[int, float]],
    base: LossBase,
) -> tuple[LossStats | None, LossBase]:
    """The window's :class:`LossStats` from tracker reads, else from the probe losses.

    Each read gives the mean training loss of the steps since the previous read
    (``delta total / delta count``), weighted by those steps. After an ``epoch_end``
    read the base restarts at zero: Keras resets the tracker each epoch.
    """
    finite_sum, finite_steps, n_bad = 0.0, 0, 0
    means: list[float] = []
    first_bad: int | None = None
    for kind, step, pair in reads:
        total, count = float(pair[0]), float(pair[1])
        steps, d_count = step - base.step, count - base.count
        if steps > 0 and d_count > 0 and math.isfinite(base.total):
            d_total = total - base.total
            if math.isfinite(d_total):
                mean = d_total / d_count
                finite_sum += mean * steps
                finite_steps += steps
                means.append(mean)
            else:  # the mean over these steps is NaN/Inf (which step first: unknown)
                n_bad += steps
        base = LossBase(total, count, step)
        if kind == "epoch_end":
            base = LossBase(0.0, 0.0, step)
    tracker_seen = finite_steps + n_bad > 0
    tracker_bad = n_bad > 0
    for step, value in probe_losses:
        if math.isfinite(value):
            if not tracker_seen:  # no usable tracker read: the probe losses stand in
                finite_sum += value
                finite_steps += 1
                means.append(value)
        elif not tracker_bad:  # a NaN the tracker did not show (or could not)
            n_bad += 1
            first_bad = step if first_bad is None else min(first_bad, step)
    if not finite_steps and not n_bad:
        return None, base
    loss = LossStats(
        sum=finite_sum,
        count=finite_steps + n_bad,
        n_nonfinite=n_bad,
        first_nonfinite_step=first_bad,
        min=min(means) if means else math.nan,
        max=max(means) if means else math.nan,
    )
    return loss, base


def assemble(
    *,
    index: int,
    start: int,
    end: int,
    host: np.ndarray,
    buffer: WindowBuffer,
    layout: ProbeLayout,
    table: LayerTable,
    sites: list[Site],
    has_grad: list[bool],
    base: LossBase,
) -> tuple[WindowRecord, LossBase]:
    """Unpack the window's host copy (``host``, in :meth:`WindowBuffer.tensors` order)."""
    n = len(table.names)
    pos = 0
    probe_losses: list[tuple[int, float]] = []
    grad_sum = np.zeros(n)
    grad_bad = np.zeros(n, dtype=int)
    acc: dict[str, dict[str, Any]] = {}
    for step, _ in buffer.probes:
        chunk = host[pos : pos + layout.size]
        pos += layout.size
        probe_losses.append((step, float(chunk[0])))
        g_sq, bad = chunk[1 : 1 + n], chunk[1 + n : 1 + 2 * n]
        grad_sum += np.sqrt(np.where(bad > 0, 0.0, g_sq))
        grad_bad += (bad > 0).astype(int)
        q = 1 + 2 * n
        for site, u in zip(sites, layout.site_units, strict=True):
            mask = chunk[q : q + u] > 0.5
            vals = dict(zip(SITE_SCALARS, chunk[q + u : q + u + len(SITE_SCALARS)], strict=True))
            q += u + len(SITE_SCALARS)
            a = acc.get(site.name)
            if a is None:
                acc[site.name] = {"mask": mask.copy(), **vals}
            else:
                a["mask"] |= mask
                for k in ("n_zero", "n_saturated", "n_nonfinite", "n_examples", "n_elements"):
                    a[k] += vals[k]
                a["min_value"] = min(a["min_value"], vals["min_value"])
    w_last = np.full(n, np.nan)
    upd_sum = np.zeros(n)
    weight_bad = np.zeros(n, dtype=int)
    for _, steps in buffer.updates:
        chunk = host[pos : pos + 2 * n]
        pos += 2 * n
        w_last = np.sqrt(chunk[:n])
        upd_sum += np.sqrt(chunk[n:]) / max(steps, 1)
        # NaN/Inf weights came from a non-finite training gradient; they can hide from the
        # probe (a fused MatMul+ReLU may map NaN to 0), so they count as one here
        weight_bad += (~np.isfinite(chunk[:n]) | ~np.isfinite(chunk[n:])).astype(int)
    reads = []
    for kind, step, _ in buffer.reads:
        reads.append((kind, step, host[pos : pos + 2]))
        pos += 2

    samples = len(buffer.probes)
    layers: dict[str, LayerStats] = {}
    for i, name in enumerate(table.names):
        ok = samples - grad_bad[i]
        has = has_grad[i] and samples > 0
        if not has:
            g = math.nan
        elif ok > 0:
            g = float(grad_sum[i] / ok)
        else:
            g = math.nan
        layers[name] = LayerStats(
            name=name,
            grad_norm=g,
            weight_norm=float(w_last[i]),
            update_norm=float(upd_sum[i] / len(buffer.updates)) if buffer.updates else math.nan,
            numel=table.numel[i],
            n_grad_nonfinite=int(grad_bad[i] + weight_bad[i]),
            n_samples=samples,
            has_grad=has,
            kind=table.kinds[i],
        )
    site_stats: dict[str, SiteStats] = {}
    for site in sites:
        a = acc.get(site.name)
        if a is None:
            continue
        site_stats[site.name] = SiteStats(
            name=site.name,
            activation=site.activation,
            units=int(a["mask"].size),
            n_examples=int(a["n_examples"]),
            n_elements=int(a["n_elements"]),
            n_zero=int(a["n_zero"]),
            n_saturated=int(a["n_saturated"]),
            n_nonfinite=int(a["n_nonfinite"]),
            min_value=float(a["min_value"]),
            ever_positive=a["mask"],
            role="output",
        )
    loss, base = loss_stats(reads, probe_losses, base)
    record = WindowRecord(
        index=index,
        step_start=start,
        step_end=end,
        sites=site_stats,
        layers=layers,
        loss=loss,
    )
    return record, base
