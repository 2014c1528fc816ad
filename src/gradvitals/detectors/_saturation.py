"""Saturation: most outputs of a sigmoid/tanh layer sit at an asymptote.

Fires for a site when ``SiteStats.saturation`` (the fraction of outputs within
``saturation_eps`` of an asymptote) is at least ``saturation`` for
``saturation_patience`` consecutive windows.

>>> from gradvitals.stats import SiteStats, WindowRecord
>>> def rec(i, sat):
...     s = SiteStats("act", "sigmoid", 8, n_examples=32, n_elements=256, n_saturated=sat)
...     return WindowRecord(i, i, i, sites={"act": s})
>>> d = SaturationDetector()
>>> d.update(rec(0, 200)), len(d.update(rec(1, 200)))
([], 1)
>>> SaturationDetector().update(rec(0, 10))
[]
"""

from __future__ import annotations

import math
from typing import Any

from gradvitals.detectors._base import EdgeTrigger
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.findings import FailureMode, Finding
from gradvitals.stats import SATURATING, WindowRecord

__all__ = ["SaturationDetector"]


class SaturationDetector:
    kind = FailureMode.SATURATION

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.t = thresholds or Thresholds()
        self.trigger = EdgeTrigger(
            patience=self.t.saturation_patience, recover=self.t.recover_windows
        )
        self.first: dict[str, float] = {}  # per site: the saturation of its first window

    def saturated_now(self, record: WindowRecord) -> dict[str, float]:
        out = {}
        for name, s in record.sites.items():
            sat = s.saturation
            if s.activation in SATURATING and not math.isnan(sat) and sat >= self.t.saturation:
                out[name] = sat
        return out

    def update(self, record: WindowRecord) -> list[Finding]:
        sat_now = self.saturated_now(record)
        for name, s in record.sites.items():
            if s.saturating and s.n_elements and not math.isnan(s.saturation):
                self.first.setdefault(name, float(s.saturation))
        findings = []
        for name, s in record.sites.items():
            if s.activation not in SATURATING or not s.n_elements:
                continue
            if self.trigger.observe(name, name in sat_now):
                sat = sat_now[name]
                findings.append(
                    Finding(
                        kind=self.kind,
                        layer=name,
                        step=record.step,
                        message=(
                            f"{sat:.0%} of {name}'s {s.activation} outputs are within "
                            f"{self.t.saturation_eps:g} of an asymptote, where the derivative "
                            f"is nearly 0 (threshold {self.t.saturation:.0%}, "
                            f"{self.t.saturation_patience} windows)"
                        ),
                        evidence={
                            "saturation": sat,
                            "threshold": self.t.saturation,
                            "eps": self.t.saturation_eps,
                            "activation": s.activation,
                            "values": s.n_elements,
                            "saturated_at_start": self.first.get(name, 0.0) >= self.t.saturation,
                        },
                    )
                )
        return findings

    def rearm(self, forget_history: bool = False) -> None:
        self.trigger.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger.state_dict(), "first": dict(self.first)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state.get("trigger", {}))
        self.first = dict(state.get("first", {}))
