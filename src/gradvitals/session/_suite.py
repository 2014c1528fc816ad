"""The detector suite: every registered mode's detector, run on each window in order.

The order and the gating come from the mode registry
(:func:`gradvitals.remedies.training_modes`): a mode whose ``stops_window`` holds for
a window (a NaN/Inf contaminates every other statistic) hands that window to no later
detector; dying ReLU and saturation run before vanishing, which defers to them in the
same window (a dead or saturated layer also cuts the gradient to the layers below).

>>> from gradvitals.stats import WindowRecord
>>> suite = DetectorSuite()
>>> suite.update(WindowRecord(0, 0, 9))
[]
>>> sorted(suite.state_dict())
['diverged_plateau', 'dying_relu', 'exploding_gradient', 'nonfinite', 'output_activation',
 'saturation', 'stalled', 'vanishing_gradient']
"""

from __future__ import annotations

from typing import Any

from gradvitals.detectors import Detector, Thresholds, suggest_clip_norm
from gradvitals.findings import Finding
from gradvitals.remedies import ModeSpec, training_modes
from gradvitals.stats import WindowRecord

__all__ = ["DetectorSuite"]


class DetectorSuite:
    """Runs every registered detector on each window record; one state dict for all.

    Args:
        thresholds: the thresholds every detector decides with.
        modes: the mode specs to run (default: every registered training mode).
    """

    def __init__(
        self, thresholds: Thresholds | None = None, modes: tuple[ModeSpec, ...] | None = None
    ) -> None:
        self.thresholds = thresholds or Thresholds()
        self.specs = modes if modes is not None else training_modes()
        self.detectors: dict[str, Detector] = {}
        for spec in self.specs:
            assert spec.detector is not None
            self.detectors[str(spec.kind.value)] = spec.detector(self.thresholds)

    def __getitem__(self, mode: Any) -> Any:
        """The detector of ``mode`` (an enum member or its value)."""
        return self.detectors[str(getattr(mode, "value", mode))]

    def update(self, record: WindowRecord) -> list[Finding]:
        findings: list[Finding] = []
        for spec in self.specs:
            findings += self.detectors[str(spec.kind.value)].update(record)
            if spec.stops_window is not None and spec.stops_window(record):
                break
        return findings

    def rearm(self, *, forget_history: bool = False) -> None:
        """Clear every trigger, so a failure that persists fires again (after a repair).

        Per-window memories that describe the state rolled away from (dead-unit
        masks) always start over; ``forget_history`` also drops learned healthy
        scales, which no longer hold after a re-initialisation or an activation swap.
        """
        for det in self.detectors.values():
            det.rearm(forget_history)

    @property
    def pending(self) -> str | None:
        """The first mode whose detector fires or counts toward firing, or None."""
        for key, det in self.detectors.items():
            trig = getattr(det, "trigger", None)
            if trig is not None and trig.pending:
                return key
        return None

    @property
    def clip_norm(self) -> float | None:
        """Clipping threshold suggested from healthy history (2 x median norm)."""
        explode = self.detectors.get("exploding_gradient")
        value = getattr(explode, "clip_norm", None)
        if value is None:
            nonfinite = self.detectors.get("nonfinite")
            value = suggest_clip_norm(getattr(nonfinite, "healthy_norms", []))
        return value

    def state_dict(self) -> dict[str, Any]:
        return {k: d.state_dict() for k, d in self.detectors.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, d in self.detectors.items():
            if k in state:
                d.load_state_dict(state[k])
