"""Host-side records of one sync window: the sufficient statistics, and what follows.

Adapters (PyTorch, Keras) accumulate sums, counts and masks on the device and copy
them to the host once per window. This module holds that host copy and derives the
ratios (``dead_fraction``, ``update_ratio``...) from it. Nothing here imports a
framework.

How each sufficient statistic is packed and combined across ranks is declared once,
in :mod:`gradvitals.stats._table`; which values are shown (TensorBoard tags, report
columns) is declared once, in :mod:`gradvitals.stats._signals`.

>>> import numpy as np
>>> s = SiteStats(name="fc1.act", activation="relu", units=4, n_examples=64,
...               n_elements=256, n_zero=180, ever_positive=np.array([1, 1, 0, 1], bool))
>>> s.dead_fraction, round(s.zero_fraction, 3)
(0.25, 0.703)
>>> layer = LayerStats(name="fc1", grad_norm=0.5, weight_norm=10.0, update_norm=0.01)
>>> layer.update_ratio
0.001
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradvitals.stats._signals import record_scalars

__all__ = [
    "DIES_WHEN_NEVER_POSITIVE",
    "SATURATING",
    "BatchStats",
    "LayerStats",
    "LossStats",
    "SiteStats",
    "WindowRecord",
    "asymptotes",
    "history_scalars",
]


def _dies_when_never_positive() -> frozenset[str]:
    """Catalog entries whose unit is dead exactly when it is never positive.

    The derivative is 0 on the whole left half-line (``saturates_left`` is flat) and
    the output is never below 0: a unit that is never positive sits in the flat part
    for every example (ReLU, ReLU6, hard sigmoid). Leaky ReLU, ELU, GELU... pass
    gradient there, so a never-positive unit of theirs is not dead.
    """
    from gradvitals.activations import Saturation, entries

    return frozenset(
        a.name
        for a in entries()
        if a.saturates_left is Saturation.FLAT and a.output_range[0] == 0.0
    )


def _saturating() -> frozenset[str]:
    """Catalog entries bounded on both sides whose derivative vanishes at both
    asymptotes, and that are not dead-when-never-positive: sigmoid, tanh, softsign,
    hard tanh. Their sites report ``saturation``."""
    from gradvitals.activations import Saturation, entries

    return frozenset(
        a.name
        for a in entries()
        if a.saturates_left is not Saturation.NONE
        and a.saturates_right is not Saturation.NONE
        and all(abs(b) != float("inf") for b in a.output_range)
        and a.name not in DIES_WHEN_NEVER_POSITIVE
    )


@functools.cache
def asymptotes(activation: str) -> tuple[float, float]:
    """The output range ``(low, high)`` of a catalog activation (its asymptotes).

    >>> asymptotes("tanh")
    (-1.0, 1.0)
    """
    from gradvitals.activations import get

    lo, hi = get(activation).output_range
    return float(lo), float(hi)


#: Activations whose unit is dead exactly when it is never positive (from the catalog).
DIES_WHEN_NEVER_POSITIVE: frozenset[str] = _dies_when_never_positive()

#: Activations whose outputs saturate at two asymptotes (from the catalog).
SATURATING: frozenset[str] = _saturating()


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else float(x)


@dataclass
class SiteStats:
    """Activation statistics of one site over a window.

    A *site* is where activations are observed: the output of an activation module
    (``role="output"``) or the input of a Linear/Conv layer that follows a functional
    activation (``role="input"``). A *unit* is a feature (last dim) or conv channel.

    Attributes:
        name: qualified module name.
        activation: the activation's catalog name (``"relu"``, ``"sigmoid"``...), or
            ``"unknown"`` for an input site.
        units: number of units.
        n_examples: examples seen in the window (sampled steps only).
        n_elements: activation values seen.
        n_zero: values exactly 0 (per-example sparsity; *not* death).
        n_saturated: values within ``eps`` of an asymptote (saturating kinds only).
        n_nonfinite: units with a NaN/Inf value.
        min_value: smallest value seen (tells a ReLU-like input site from others).
        ever_positive: per-unit mask, True if the unit was > 0 for any example.
        role: ``"output"`` or ``"input"``.
    """

    name: str
    activation: str
    units: int
    n_examples: int = 0
    n_elements: int = 0
    n_zero: int = 0
    n_saturated: int = 0
    n_nonfinite: int = 0
    min_value: float = 0.0
    ever_positive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    role: str = "output"

    @property
    def dead_mask(self) -> np.ndarray:
        """Units never positive for any example of the window: ``~ever_positive``."""
        return ~np.asarray(self.ever_positive, bool)

    @property
    def dead_fraction(self) -> float:
        r"""Fraction of units not positive for any example: :math:`\frac{1}{U}\sum_u [\max_x a_u(x) \le 0]`.

        NaN when the window held NaN/Inf activations: a NaN unit is not positive, but it
        is not dead either.
        """
        if self.units == 0 or self.n_examples == 0 or self.n_nonfinite:
            return float("nan")
        return float(self.dead_mask.mean())

    @property
    def zero_fraction(self) -> float:
        """Fraction of activation values exactly zero (healthy ReLU nets: 0.6-0.85)."""
        return self.n_zero / self.n_elements if self.n_elements else float("nan")

    @property
    def saturation(self) -> float:
        """Fraction of values at an asymptote, for saturating activations, else NaN."""
        if not self.saturating or not self.n_elements:
            return float("nan")
        return self.n_saturated / self.n_elements

    @property
    def saturating(self) -> bool:
        """True for a saturating activation's output (see :data:`SATURATING`)."""
        return self.role == "output" and self.activation in SATURATING

    @property
    def relu_like(self) -> bool:
        """True when dead units are meaningful here: a ReLU/ReLU6 output (see
        :data:`DIES_WHEN_NEVER_POSITIVE`), or an input site whose values were never
        negative (it follows a functional ReLU)."""
        if self.role == "input":
            return self.n_examples > 0 and self.min_value >= 0.0
        return self.activation in DIES_WHEN_NEVER_POSITIVE

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["ever_positive"] = np.asarray(self.ever_positive, bool).tolist()
        return d


@dataclass
class LayerStats:
    """Gradient and update statistics of one layer (a module owning parameters).

    Norms are Euclidean over all the layer's own trainable parameters, taken on the
    sampled steps of the window and averaged over them (``grad_sq`` etc. hold the
    per-step squared norms summed over those steps).

    Attributes:
        name: qualified module name.
        grad_norm: mean pre-clip gradient norm :math:`\\|g\\|_2` over sampled steps.
        weight_norm: :math:`\\|w\\|_2` after the step.
        update_norm: :math:`\\|\\Delta w\\|_2` of the optimizer step.
        numel: number of parameter elements (for RMS values).
        n_grad_nonfinite: sampled steps whose gradient had a NaN/Inf.
        n_samples: sampled steps.
        has_grad: False when no parameter of the layer received a gradient.
        kind: the module's class name (``"Linear"``, ``"Conv2d"``...), for filtering.
    """

    name: str
    grad_norm: float = float("nan")
    weight_norm: float = float("nan")
    update_norm: float = float("nan")
    numel: int = 0
    n_grad_nonfinite: int = 0
    n_samples: int = 0
    has_grad: bool = True
    kind: str = ""

    @property
    def is_weight_layer(self) -> bool:
        """Linear, convolution and recurrent layers: the ones whose depth order matters
        for vanishing/exploding (normalization and embedding layers are excluded)."""
        k = self.kind
        if not k:
            return True
        return k.startswith(
            ("Linear", "Conv", "Bilinear", "RNN", "LSTM", "GRU", "LazyLinear", "LazyConv", "Dense")
        )

    @property
    def update_ratio(self) -> float:
        r"""Update-to-weight ratio :math:`\|\Delta w\|_2 / \|w\|_2` (healthy: about 1e-3)."""
        if not self.weight_norm or math.isnan(self.weight_norm):
            return float("nan")
        return self.update_norm / self.weight_norm

    @property
    def grad_rms(self) -> float:
        r"""Root-mean-square gradient :math:`\|g\|_2/\sqrt{n}`: comparable across layer sizes."""
        return self.grad_norm / math.sqrt(self.numel) if self.numel else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class LossStats:
    """The observed loss over a window: sums and counts, so it reduces across ranks."""

    sum: float = 0.0
    count: int = 0
    n_nonfinite: int = 0
    first_nonfinite_step: int | None = None
    min: float = float("nan")
    max: float = float("nan")

    @property
    def mean(self) -> float:
        """Mean of the finite losses observed in the window."""
        finite = self.count - self.n_nonfinite
        return self.sum / finite if finite > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class BatchStats:
    """What the window's batches brought in: finiteness and scale of the inputs, whether a
    step began with the last step's gradients, and whether a loss target was non-finite.

    Attributes:
        steps: training forwards checked (every step's first input is checked).
        n_input_nonfinite: forwards whose input held a NaN/Inf.
        first_input_nonfinite_step: the step of the first such forward, or None.
        input_abs_max: the largest ``|x|`` of the inputs on sampled steps (NaN: none).
        input_rms: their root-mean-square (NaN: none).
        stale_grad: a sampled step's backward began on gradients left from the last
            optimizer step (``optimizer.zero_grad()`` was not called).
        target_nonfinite: a sampled step's loss target held a NaN/Inf.
    """

    steps: int = 0
    n_input_nonfinite: int = 0
    first_input_nonfinite_step: int | None = None
    input_abs_max: float = float("nan")
    input_rms: float = float("nan")
    stale_grad: bool = False
    target_nonfinite: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class WindowRecord:
    """Everything measured in one sync window ``[step_start, step_end]``.

    ``sites`` and ``layers`` are ordered in forward-execution order (first layer
    first), which the detectors rely on for "toward the input".
    """

    index: int
    step_start: int
    step_end: int
    sites: dict[str, SiteStats] = field(default_factory=dict)
    layers: dict[str, LayerStats] = field(default_factory=dict)
    loss: LossStats | None = None
    skipped_steps: int = 0  # optimizer steps skipped by an AMP GradScaler (inf grads)
    batch: BatchStats | None = None
    #: host-side facts from the collector that no statistic holds (e.g. a provenance
    #: replay's verdict, the loss's last ops); the same on every rank
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        """The step at which this window was closed (findings carry it)."""
        return self.step_end

    @property
    def total_grad_norm(self) -> float:
        """Global gradient norm :math:`\\sqrt{\\sum_l \\|g_l\\|^2}` over layers with gradients."""
        vals = [
            lay.grad_norm**2
            for lay in self.layers.values()
            if lay.has_grad and not math.isnan(lay.grad_norm)
        ]
        return math.sqrt(sum(vals)) if vals else float("nan")

    def scalars(self) -> dict[str, float]:
        """The vital signs as ``<signal>/<key>`` -> value (see :data:`~gradvitals.stats.SIGNALS`).

        Sections: ``dead_fraction``, ``zero_fraction``, ``saturation`` (per activation
        site), ``grad_norm``, ``update_ratio`` (per layer), plus ``loss/train`` and
        ``grad_norm_total/model``. NaN values (not measured) are omitted.
        """
        return record_scalars(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step_start": self.step_start,
            "step_end": self.step_end,
            "sites": {k: v.to_dict() for k, v in self.sites.items()},
            "layers": {k: v.to_dict() for k, v in self.layers.items()},
            "loss": None if self.loss is None else self.loss.to_dict(),
            "skipped_steps": self.skipped_steps,
            "batch": None if self.batch is None else self.batch.to_dict(),
            "facts": dict(self.facts),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowRecord:
        sites = {}
        for k, v in d.get("sites", {}).items():
            v = dict(v)
            v["ever_positive"] = np.asarray(v.get("ever_positive", []), bool)
            sites[k] = SiteStats(**v)
        layers = {k: LayerStats(**v) for k, v in d.get("layers", {}).items()}
        loss = LossStats(**d["loss"]) if d.get("loss") else None
        return cls(
            index=int(d["index"]),
            step_start=int(d["step_start"]),
            step_end=int(d["step_end"]),
            sites=sites,
            layers=layers,
            loss=loss,
            skipped_steps=int(d.get("skipped_steps", 0)),
            batch=BatchStats(**d["batch"]) if d.get("batch") else None,
            facts=dict(d.get("facts") or {}),
        )


def history_scalars(records: list[WindowRecord]) -> dict[str, list[tuple[int, float]]]:
    """A run's statistics as ``tag -> [(step, value), ...]`` (the TensorBoard tags).

    >>> history_scalars([WindowRecord(0, 0, 4, loss=LossStats(sum=2.0, count=1))])
    {'loss/train': [(4, 2.0)]}
    """
    out: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        for tag, v in rec.scalars().items():
            out.setdefault(tag, []).append((rec.step, v))
    return out
