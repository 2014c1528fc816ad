"""The sampling schedule: windows of optimizer steps, and which steps are measured.

Windows hold ``every`` steps; with ``warmup`` the first windows hold 1, 2, 4, 8...
steps (up to ``every``) so that failures in the first steps are seen early. Each
window measures its last ``samples`` steps; everything else only counts steps. The
detectors run once per window, when it closes.

>>> s = Schedule(every=5, samples=2)
>>> [s.length_of(i) for i in range(5)]
[1, 2, 4, 5, 5]
>>> s.is_sampled(0), s.last
(True, 0)
>>> s.advance(0); s.start, s.length, [s.is_sampled(t) for t in (1, 2)]
(1, 2, [True, True])
>>> s.advance(2); s.advance(6); s.start, s.sample_from
(7, 10)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradvitals.errors import UsageError

__all__ = ["Schedule"]

_WARMUP_WINDOWS = 16  # after these, every window holds ``every`` steps


def _positive_int(name: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be an integer >= 1 ({what}), got {value!r}")
    return value


@dataclass
class Schedule:
    """Window bookkeeping: the open window is ``[start, start + length - 1]``.

    Attributes:
        every: steps per window after the warm-up (default 20).
        samples: measured steps per window, its last ones (default 2).
        warmup: short first windows (1, 2, 4... steps).
        index: the open window's index.
        start: the open window's first step.
    """

    every: int = 20
    samples: int = 2
    warmup: bool = True
    index: int = 0
    start: int = 0

    def __post_init__(self) -> None:
        _positive_int("every", self.every, "optimizer steps per window")
        _positive_int("samples", self.samples, "sampled steps per window")

    def length_of(self, index: int) -> int:
        """Steps in window ``index``."""
        if self.warmup and index < _WARMUP_WINDOWS:
            return min(self.every, 2**index)
        return self.every

    @property
    def length(self) -> int:
        return self.length_of(self.index)

    @property
    def last(self) -> int:
        """The open window's last step."""
        return self.start + self.length - 1

    @property
    def sample_from(self) -> int:
        """The open window's first measured step."""
        return self.last - min(self.samples, self.length) + 1

    def is_sampled(self, step: int) -> bool:
        """True when ``step`` is measured (one of the open window's last ``samples``)."""
        return step >= self.sample_from

    def advance(self, end: int) -> None:
        """The open window closed at step ``end``; the next one starts after it."""
        self.index += 1
        self.start = end + 1

    def restart(self, step: int, index: int) -> None:
        """Open window ``index`` at ``step`` (after ``load_state_dict``)."""
        self.index, self.start = index, step

    def state_dict(self) -> dict[str, int]:
        return {"window_index": self.index, "window_start": self.start}
