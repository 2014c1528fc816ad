"""All detectors together, in the order that keeps one cause from firing as another.

- A window with a NaN/Inf goes to the non-finite detector only: its other statistics
  are contaminated.
- Dying ReLU and saturation run before vanishing, which defers to them in the same
  window (a dead or saturated layer also cuts the gradient to the layers below).

>>> from gradvitals.stats import WindowRecord
>>> suite = DetectorSuite()
>>> suite.update(WindowRecord(0, 0, 9))
[]
>>> sorted(suite.state_dict())
['dying_relu', 'exploding_gradient', 'nonfinite', 'saturation', 'vanishing_gradient']
"""

from __future__ import annotations

from typing import Any

from gradvitals.detectors._dying_relu import DyingReluDetector
from gradvitals.detectors._exploding import ExplodingGradientDetector
from gradvitals.detectors._nonfinite import NonfiniteDetector, has_nonfinite
from gradvitals.detectors._saturation import SaturationDetector
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.detectors._vanishing import VanishingGradientDetector
from gradvitals.findings import Finding
from gradvitals.stats import WindowRecord

__all__ = ["DetectorSuite"]


class DetectorSuite:
    """Runs every detector on each window record; serialisable as one state dict."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()
        t = self.thresholds
        self.nonfinite = NonfiniteDetector(t)
        self.dying = DyingReluDetector(t)
        self.saturation = SaturationDetector(t)
        self.vanishing = VanishingGradientDetector(t)
        self.exploding = ExplodingGradientDetector(t)

    @property
    def detectors(self) -> dict[str, Any]:
        return {
            "nonfinite": self.nonfinite,
            "dying_relu": self.dying,
            "saturation": self.saturation,
            "vanishing_gradient": self.vanishing,
            "exploding_gradient": self.exploding,
        }

    def update(self, record: WindowRecord) -> list[Finding]:
        findings = self.nonfinite.update(record)
        if has_nonfinite(record):
            return findings
        findings += self.dying.update(record)
        findings += self.saturation.update(record)
        findings += self.vanishing.update(record)
        findings += self.exploding.update(record)
        return findings

    def rearm(self, *, forget_history: bool = False) -> None:
        """Clear every trigger, so a failure that persists fires again (after a repair).

        The dead-unit masks always start over: they describe the state rolled away
        from. ``forget_history`` also drops the exploding detector's healthy history,
        whose scales no longer hold after a re-initialisation or an activation swap.
        """
        for det in self.detectors.values():
            det.trigger.firing.clear()
            det.trigger.bad.clear()
            det.trigger.good.clear()
        self.dying.masks.clear()
        if forget_history:
            ex = self.exploding
            ex.norms, ex.layer_norms, ex.depth_ratios, ex.losses = [], {}, [], []

    @property
    def clip_norm(self) -> float | None:
        """Clipping threshold suggested from healthy history (2 x median norm)."""
        return self.exploding.clip_norm

    def state_dict(self) -> dict[str, Any]:
        return {k: d.state_dict() for k, d in self.detectors.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, d in self.detectors.items():
            if k in state:
                d.load_state_dict(state[k])
