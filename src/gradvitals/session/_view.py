"""What every collector shows of its session: one definition for every framework.

A collector (the PyTorch ``Monitor``, the Keras ``VitalsCallback``) inherits
:class:`SessionView` and sets ``self.session``; the results (findings, history,
report...) are the session's, read through here, never copied.

>>> from gradvitals.session import Session
>>> class Toy(SessionView):
...     def __init__(self):
...         self.session = Session(console=False)
>>> Toy().report(), Toy().healthy, Toy().every
('gradvitals: not judged: no window closed, so nothing can be said about this run.', True, 20)
"""

from __future__ import annotations

from typing import Any

from gradvitals.detectors import Thresholds
from gradvitals.findings import Finding
from gradvitals.session._session import Session
from gradvitals.stats import WindowRecord

__all__ = ["SessionView"]


class SessionView:
    """Read-only access to a collector's :class:`~gradvitals.session.Session`."""

    session: Session

    @property
    def findings(self) -> list[Finding]:
        """Every finding, oldest first (consequences nested under their root)."""
        return self.session.findings

    @property
    def history(self) -> list[WindowRecord]:
        """One record per closed window (the last ``history_limit``)."""
        return self.session.history

    @property
    def preflight(self) -> list[Finding]:
        """The pre-flight lint's findings."""
        return self.session.preflight

    @property
    def repairs(self) -> list[dict[str, Any]]:
        """One dict per repair made."""
        return self.session.repairs

    @property
    def thresholds(self) -> Thresholds:
        return self.session.thresholds

    @property
    def suite(self) -> Any:
        """The detector suite (its ``state_dict`` is part of :meth:`state_dict`)."""
        return self.session.suite

    @property
    def disabled(self) -> bool:
        """True once an internal error switched watching off (see ``session.off``)."""
        return self.session.disabled

    @property
    def is_main_process(self) -> bool:
        return self.session.is_main_process

    @property
    def every(self) -> int:
        return self.session.schedule.every

    @property
    def samples(self) -> int:
        return self.session.schedule.samples

    @property
    def healthy(self) -> bool:
        """True while no failure has been found."""
        return self.session.healthy

    @property
    def should_stop(self) -> bool:
        """True once a finding of a ``stop_on`` mode was made: end your loop then."""
        return self.session.should_stop

    def report(self) -> str:
        """A text summary: what was watched, healthy or not, each finding and what to do."""
        return self.session.report()

    def scalars(self) -> dict[str, list[tuple[int, float]]]:
        """Statistics history as ``tag -> [(step, value), ...]`` (the TensorBoard tags)."""
        return self.session.scalars()
