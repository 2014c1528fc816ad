"""Dying ReLU: most units of a layer are zero for *every* example, and stay so.

A unit is dead in a window when it was not positive for any example seen in that
window (``SiteStats.ever_positive`` is False). The per-example zero fraction is *not*
the measure: healthy ReLU nets are 60-85% zeros per example.

Fires for a site when the units dead in each of the last ``dead_patience`` windows
(the *same* units: the masks are intersected, so a recovering unit does not count)
make up at least ``dead_fraction`` of the layer, given ``min_examples`` examples. The
examples are counted over the intersected windows: with small batches (10 examples a
step, 2 sampled steps a window) the intersection reaches back over as many windows as
it takes (up to :data:`MAX_WINDOWS`) to hold ``min_examples``, so a unit is called
dead only when it was not positive for any of at least that many examples.

>>> import numpy as np
>>> from gradvitals.stats import SiteStats, WindowRecord
>>> def rec(i, alive):
...     s = SiteStats("relu1", "relu", 4, n_examples=64, n_elements=256,
...                   ever_positive=np.array(alive, bool))
...     return WindowRecord(i, i * 10, i * 10 + 9, sites={"relu1": s})
>>> d = DyingReluDetector()
>>> d.update(rec(0, [1, 0, 0, 0]))
[]
>>> [f.layer for f in d.update(rec(1, [1, 0, 0, 0]))]
['relu1']
>>> def small(i, alive):  # 10 examples a window: judged once 4 windows hold 40
...     s = SiteStats("relu1", "relu", 4, n_examples=10, n_elements=40,
...                   ever_positive=np.array(alive, bool))
...     return WindowRecord(i, i, i, sites={"relu1": s})
>>> d = DyingReluDetector()
>>> [len(d.update(small(i, [1, 0, 0, 0]))) for i in range(5)]
[0, 0, 0, 1, 0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradvitals.detectors._base import EdgeTrigger
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.findings import FailureMode, Finding
from gradvitals.stats import WindowRecord

__all__ = ["MAX_WINDOWS", "DyingReluDetector"]

#: the most windows one intersection may span to gather ``min_examples`` examples
MAX_WINDOWS = 8


class DyingReluDetector:
    kind = FailureMode.DYING_RELU

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.t = thresholds or Thresholds()
        self.trigger = EdgeTrigger(patience=1, recover=self.t.recover_windows)
        # per site: the recent dead masks (most recent last), at most MAX_WINDOWS, and
        # the examples each was measured on
        self.masks: dict[str, list[np.ndarray]] = {}
        self.counts: dict[str, list[int]] = {}
        # per site: the dead fraction of its first judged window (at initialisation)
        self.first: dict[str, float] = {}

    def _span(self, name: str) -> tuple[int, int] | None:
        """``(windows, examples)`` of the shortest recent span of at least
        ``dead_patience`` windows holding ``min_examples`` examples, or None."""
        counts = self.counts.get(name, [])
        total = 0
        for k in range(1, len(counts) + 1):
            total += counts[-k]
            if k >= self.t.dead_patience and total >= self.t.min_examples:
                return k, total
        return None

    def dead_now(self, record: WindowRecord) -> dict[str, float]:
        """Sites whose persistent dead fraction is at or above threshold, after update."""
        out: dict[str, float] = {}
        for name, s in record.sites.items():
            if not s.relu_like or s.units == 0 or not s.n_examples:
                continue
            span = self._span(name)
            if span is None:
                continue
            persistent = np.logical_and.reduce(self.masks[name][-span[0] :])
            frac = float(persistent.mean())
            if frac >= self.t.dead_fraction:
                out[name] = frac
        return out

    def update(self, record: WindowRecord) -> list[Finding]:
        for name, s in record.sites.items():
            if not s.relu_like or s.units == 0 or not s.n_examples:
                continue
            if s.n_examples >= self.t.min_examples:
                self.first.setdefault(name, float(s.dead_fraction))
            hist = self.masks.setdefault(name, [])
            counts = self.counts.setdefault(name, [])
            if hist and hist[-1].shape != s.dead_mask.shape:
                hist.clear()  # the layer changed shape (e.g. after a repair)
                counts.clear()
            hist.append(s.dead_mask.copy())
            counts.append(int(s.n_examples))
            keep = max(MAX_WINDOWS, self.t.dead_patience)
            del hist[:-keep]
            del counts[:-keep]
        dead = self.dead_now(record)
        findings = []
        for name, s in record.sites.items():
            if not s.relu_like or not s.n_examples or name not in self.masks:
                continue
            if self.trigger.observe(name, name in dead):
                frac = dead[name]
                windows, examples = self._span(name) or (self.t.dead_patience, s.n_examples)
                n_dead = round(frac * s.units)
                where = "inputs of" if s.role == "input" else "units of"
                seen = (
                    f"for any of {s.n_examples} examples in each of the last {windows} windows"
                    if examples == windows * s.n_examples
                    else f"for any of {examples} examples over the last {windows} windows"
                )
                msg = (
                    f"{frac:.0%} of the {where} {name} ({n_dead}/{s.units}) were not positive "
                    f"{seen} (threshold {self.t.dead_fraction:.0%}); "
                    f"per-example zeros {s.zero_fraction:.0%}"
                )
                if frac >= 1.0:
                    msg += ". The layer is entirely dead: the network's output no longer "
                    msg += "depends on its input"
                findings.append(
                    Finding(
                        kind=self.kind,
                        layer=name,
                        step=record.step,
                        message=msg,
                        evidence={
                            "dead_fraction": frac,
                            "dead_units": n_dead,
                            "units": s.units,
                            "examples": examples,
                            "windows": windows,
                            "zero_fraction": s.zero_fraction,
                            "threshold": self.t.dead_fraction,
                            "site_role": s.role,
                            # dead in the first window already: before training could kill them
                            "dead_at_start": self.first.get(name, 0.0) >= self.t.dead_fraction,
                            "dead_unit_indices": np.flatnonzero(s.dead_mask).tolist()[:4096],
                        },
                    )
                )
        return findings

    def rearm(self, forget_history: bool = False) -> None:
        self.trigger.reset()
        self.masks.clear()
        self.counts.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger.state_dict(),
            "masks": {k: [m.tolist() for m in v] for k, v in self.masks.items()},
            "counts": {k: list(v) for k, v in self.counts.items()},
            "first": dict(self.first),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state.get("trigger", {}))
        self.masks = {
            k: [np.asarray(m, bool) for m in v] for k, v in state.get("masks", {}).items()
        }
        # a state saved before counts were kept held only windows of min_examples or more
        saved = state.get("counts", {})
        self.counts = {
            k: [int(c) for c in saved.get(k, [self.t.min_examples] * len(v))]
            for k, v in self.masks.items()
        }
        self.first = dict(state.get("first", {}))
