"""The detector protocol and a per-layer edge trigger shared by every detector.

A detector is a small state machine over :class:`~gradvitals.stats.WindowRecord`s:
``update(record) -> list[Finding]``, plus ``state_dict()``/``load_state_dict()`` so
a resumed run keeps its counters, and ``rearm()`` after a repair. It never sees a
framework tensor, and it does not choose remedies: the session attaches them from
the mode registry.
"""

from __future__ import annotations

from typing import Any, Protocol

from gradvitals.findings import FailureMode, Finding
from gradvitals.stats import WindowRecord

__all__ = ["Detector", "EdgeTrigger"]


class Detector(Protocol):
    kind: FailureMode

    def update(self, record: WindowRecord) -> list[Finding]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def rearm(self, forget_history: bool = False) -> None:
        """Clear the trigger so a failure that persists fires again (after a repair);
        ``forget_history`` also drops learned healthy scales."""
        ...


class EdgeTrigger:
    """Per-key state machine: HEALTHY -(patience bad windows)-> FIRING -(recover good)-> HEALTHY.

    ``observe(key, bad)`` returns True exactly once per episode: on the window where
    the key has been bad ``patience`` windows in a row. A firing key re-arms after
    ``recover`` consecutive good windows.

    >>> t = EdgeTrigger(patience=2, recover=1)
    >>> [t.observe("fc1", b) for b in [True, True, True, False, True, True]]
    [False, True, False, False, False, True]
    """

    def __init__(self, patience: int = 1, recover: int = 3) -> None:
        self.patience = patience
        self.recover = recover
        self.bad: dict[str, int] = {}
        self.good: dict[str, int] = {}
        self.firing: set[str] = set()

    def observe(self, key: str, bad: bool) -> bool:
        if bad:
            self.good[key] = 0
            self.bad[key] = self.bad.get(key, 0) + 1
            if key not in self.firing and self.bad[key] >= self.patience:
                self.firing.add(key)
                return True
            return False
        self.bad[key] = 0
        if key in self.firing:
            self.good[key] = self.good.get(key, 0) + 1
            if self.good[key] >= self.recover:
                self.firing.discard(key)
                self.good[key] = 0
        return False

    def reset(self) -> None:
        """Forget every key's counters and firing state."""
        self.bad.clear()
        self.good.clear()
        self.firing.clear()

    @property
    def pending(self) -> bool:
        """True while some key fires or counts toward firing."""
        return bool(self.firing) or any(v > 0 for v in self.bad.values())

    def state_dict(self) -> dict[str, Any]:
        return {"bad": dict(self.bad), "good": dict(self.good), "firing": sorted(self.firing)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad = dict(state.get("bad", {}))
        self.good = dict(state.get("good", {}))
        self.firing = set(state.get("firing", []))
