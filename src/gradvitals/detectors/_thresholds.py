"""Detector thresholds: one dataclass, documented defaults, strict by name.

Defaults come from the literature and from our own measurements (``docs/benchmarks.md``):

- ``dead_fraction=0.5``: SageMaker's DeadRelu rule fires at >50% of a layer's units.
  We count a unit dead only if it is not positive for *any* example in a window (the
  keras-contrib DeadReluDetector definition), never by per-example zero fraction:
  healthy ReLU nets have 60-85% zeros per example (Glorot et al. 2011).
- ``saturation=0.5`` with ``saturation_eps=0.01``: DeepDiagnosis and SageMaker use
  ">50% of values saturated". A sigmoid output within 0.01 of 0 or 1 has
  f'(x) < 0.0099 (4% of its maximum); a tanh output beyond 0.99 has f'(x) < 0.02.
- ``vanishing_ratio=1e-3``: AUTOTRAINER's gradient ratio first/last kernel (1e-3),
  taken here on RMS gradients so layer sizes do not matter.
- ``explode_factor=10``: Pascanu et al. (2013) find clipping thresholds from 0.5x to
  10x the average norm still converge; a norm 10x its own median is beyond that.
- ``stall_update_ratio=1e-6``: a healthy step moves a layer by about 1e-3 of its
  weights (the update-to-weight rule of thumb); at 1e-6 a layer needs a million steps
  to move by its own norm. A gradient below 1e-6 of the weights moves them less than
  that at any learning rate up to 1.
- ``stall_loss_ratio=0.5``: a stalled run's loss wanders with its batches (a one-unit
  softmax under BCE: 45-62 around a first window of 62.5); a run whose loss halved
  has learned. ``stall_patience=3``: the warm-up's first three windows (steps 0-6).
- ``plateau_jump=0.4``, ``plateau_recover=0.1``, ``plateau_patience=4``: no firing on
  172 healthy runs (the detection benchmark's 116, the zoo's 56), 32 of 35 zoo runs at
  100x their learning rate found; see :mod:`gradvitals.detectors._diverged`.
- ``plateau_update_ratio=0.1``: 100x the update-to-weight rule of thumb (1e-3). In
  the window before each lr-100x jump the median layer moved 0.25 (ResNet-18, SGD) to
  1.0 (Adam) of its weights; healthy zoo runs at most 0.15 (GPT-2's first Adam step).

>>> t = Thresholds.from_kwargs(dead_fraction=0.6)
>>> t.dead_fraction, t.saturation
(0.6, 0.5)
>>> Thresholds.from_kwargs(dead_frac=0.6)
Traceback (most recent call last):
...
gradvitals.errors.UsageError: unknown threshold 'dead_frac'. Valid names: converged_loss_ratio, dead_fraction, ...
>>> Thresholds(dead_fraction=5.0)
Traceback (most recent call last):
...
gradvitals.errors.UsageError: threshold dead_fraction must be in (0, 1], got 5.0. ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from gradvitals.errors import UsageError

__all__ = ["Thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """Every number a detector decides with.

    Attributes:
        dead_fraction: dying ReLU fires when at least this fraction of a layer's units
            is dead in ``dead_patience`` consecutive windows (the same units).
        dead_patience: consecutive windows a unit must stay dead ("not recovering").
        min_examples: examples a window must hold before dead units are judged.
        saturation: saturation fires when at least this fraction of a sigmoid/tanh
            layer's outputs are within ``saturation_eps`` of an asymptote...
        saturation_eps: ...distance to the asymptote, in output units.
        saturation_patience: ...for this many consecutive windows.
        vanishing_ratio: vanishing fires when the first layer's RMS gradient is below
            this fraction of the largest later layer's...
        vanishing_update_ratio: ...and the first layer's update ratio is below this
            fraction of the largest later layer's (it barely moves)...
        vanishing_patience: ...for this many consecutive windows...
        converged_loss_ratio: ...unless the loss fell below this fraction of its first
            window's value (tiny gradients of a converged net are not vanishing).
        explode_factor: exploding fires when the global gradient norm, or the loss,
            exceeds this multiple of the median of its own earlier windows...
        explode_history: ...given at least this many earlier windows.
        explode_update_ratio: exploding also fires when a layer's step is at least
            this fraction of its weights (``update_ratio``), after the first window.
        explode_loss_rise: the relative rise of the window loss over the previous
            window that counts as "getting worse" for the norm-growth rules (10%).
        recover_windows: a layer that fired re-arms after this many healthy windows.
        stall_update_ratio: stalled fires when nothing moves: every layer gets no
            gradient (none, or at most this fraction of its weight norm) or a step of at
            most this fraction of its weights...
        stall_loss_ratio: ...while the loss has not fallen by more than ``1 - this``
            of its first window's magnitude (a run that halved its loss has learned)...
        stall_patience: ...for this many consecutive windows.
        plateau_jump: diverged_plateau opens an episode when the window loss rises
            above the best window loss so far by this fraction of
            ``max(|best|, first - best)`` (40% of the progress made is lost, or the
            loss rose 40% while little progress had been made)...
        plateau_recover: ...the episode lasts while the loss stays above that best by
            this fraction of the same scale, or above the first window's loss minus
            this fraction of the scale...
        plateau_patience: ...and fires after this many windows (the jump's included).
        plateau_update_ratio: the jump is blamed on the learning rate when the median
            layer's step was at least this fraction of its weights in the jump window
            or the one before (or the gradient norm spiked ``explode_factor`` x).
    """

    dead_fraction: float = 0.5
    dead_patience: int = 2
    min_examples: int = 32
    saturation: float = 0.5
    saturation_eps: float = 0.01
    saturation_patience: int = 2
    vanishing_ratio: float = 1e-3
    vanishing_update_ratio: float = 1e-2
    vanishing_patience: int = 2
    converged_loss_ratio: float = 0.05
    explode_factor: float = 10.0
    explode_history: int = 2
    explode_update_ratio: float = 1.0
    explode_loss_rise: float = 0.1
    recover_windows: int = 3
    stall_update_ratio: float = 1e-6
    stall_loss_ratio: float = 0.5
    stall_patience: int = 3
    plateau_jump: float = 0.4
    plateau_recover: float = 0.1
    plateau_patience: int = 4
    plateau_update_ratio: float = 0.1

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def names(cls) -> list[str]:
        return sorted(f.name for f in fields(cls))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Thresholds:
        """Build from keyword overrides; an unknown name raises with the valid names."""
        valid = cls.names()
        for k in kwargs:
            if k not in valid:
                raise UsageError(
                    f"unknown threshold {k!r}. Valid names: {', '.join(valid)}. "
                    "See help(gradvitals.Thresholds) for what each one means."
                )
        return cls(**kwargs)

    def validate(self) -> None:
        """Check every field against :data:`_RANGES`; the error names the valid range."""
        for f in fields(self):
            v = getattr(self, f.name)
            kind, lo, hi, lo_open, hi_open = _RANGES[f.name]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UsageError(f"threshold {f.name} must be a number, got {v!r}")
            if kind is int and not float(v).is_integer():
                raise UsageError(f"threshold {f.name} must be a whole number, got {v!r}")
            low_bad = v <= lo if lo_open else v < lo
            high_bad = hi is not None and (v >= hi if hi_open else v > hi)
            if low_bad or high_bad or v != v:
                left = "(" if lo_open else "["
                right = ")" if hi_open or hi is None else "]"
                top = "inf" if hi is None else f"{hi:g}"
                raise UsageError(
                    f"threshold {f.name} must be in {left}{lo:g}, {top}{right}, got {v!r}. "
                    f"See help(gradvitals.Thresholds) for what it means."
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: name -> (type, low, high or None, low open, high open): the valid range of each field.
_RANGES: dict[str, tuple[type, float, float | None, bool, bool]] = {
    "dead_fraction": (float, 0.0, 1.0, True, False),
    "dead_patience": (int, 1, None, False, False),
    "min_examples": (int, 1, None, False, False),
    "saturation": (float, 0.0, 1.0, True, False),
    "saturation_eps": (float, 0.0, 0.5, True, True),
    "saturation_patience": (int, 1, None, False, False),
    "vanishing_ratio": (float, 0.0, 1.0, True, True),
    "vanishing_update_ratio": (float, 0.0, 1.0, True, True),
    "vanishing_patience": (int, 1, None, False, False),
    "converged_loss_ratio": (float, 0.0, 1.0, True, True),
    "explode_factor": (float, 1.0, None, True, False),
    "explode_history": (int, 1, None, False, False),
    "explode_update_ratio": (float, 0.0, None, True, False),
    "explode_loss_rise": (float, 0.0, None, False, False),
    "recover_windows": (int, 1, None, False, False),
    "stall_update_ratio": (float, 0.0, 1.0, True, True),
    "stall_loss_ratio": (float, 0.0, 1.0, True, True),
    "stall_patience": (int, 1, None, False, False),
    "plateau_jump": (float, 0.0, None, True, False),
    "plateau_recover": (float, 0.0, None, True, False),
    "plateau_patience": (int, 1, None, False, False),
    "plateau_update_ratio": (float, 0.0, None, True, False),
}
