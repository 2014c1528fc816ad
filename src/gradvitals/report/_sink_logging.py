"""Logging sink: findings, repairs and windows as ``logging`` records any handler can forward.

Each record carries the structured data in ``extra`` (an attribute of the
``LogRecord``), so a handler (Sentry, Datadog, a JSON formatter, a queue) sends the
finding itself, not a line to parse:

- a finding: ``level`` (WARNING), the console line as the message, and
  ``record.gradvitals_finding`` = ``Finding.to_dict()``;
- a settled repair: INFO, ``record.gradvitals_repair`` = the repair record;
- a window: DEBUG, ``record.gradvitals_scalars`` = the ``gradvitals/`` statistics
  and ``record.gradvitals_step`` (built only when DEBUG is enabled);
- the end: INFO, the summary, ``record.gradvitals_findings`` = every finding.

With ``console=True`` (the default) the session also logs each finding on the
``gradvitals`` logger, without ``extra``; pass ``console=False`` to ``watch`` when
this sink writes to that logger, so that each finding is logged once.

>>> import logging
>>> from gradvitals.findings import FailureMode, Finding
>>> from gradvitals.stats import WindowRecord
>>> class Keep(logging.Handler):
...     def emit(self, record): print(record.levelname, record.gradvitals_finding["kind"])
>>> logger = logging.getLogger("gradvitals.demo"); logger.addHandler(Keep()); logger.propagate = False
>>> sink = LoggingSink(logger)
>>> sink.write_window(WindowRecord(0, 0, 9), [Finding(FailureMode.NONFINITE, "fc", 9, "NaN loss")])
WARNING nonfinite
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.report import _tags as T
from gradvitals.report._console import format_finding, summary_text
from gradvitals.report._sinks import FindingLog
from gradvitals.report._summary import repair_outcome
from gradvitals.stats import WindowRecord

__all__ = ["LoggingSink"]


def _level(value: int | str) -> int:
    if isinstance(value, bool):
        raise UsageError(
            f"level must be a logging level (logging.WARNING, 'INFO'...), got {value!r}"
        )
    if isinstance(value, int):
        return value
    level = logging.getLevelName(str(value).upper())
    if not isinstance(level, int):
        raise UsageError(
            f"level {value!r} is not a logging level; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return level


class LoggingSink:
    """Send findings, repairs and windows to a ``logging`` logger, with structured ``extra``.

    Args:
        logger: a ``logging.Logger`` or its name (default ``"gradvitals"``).
        level: the level of finding records (default ``logging.WARNING``).
    """

    def __init__(
        self, logger: logging.Logger | str = "gradvitals", level: int | str = logging.WARNING
    ) -> None:
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if not isinstance(logger, logging.Logger):
            raise UsageError(
                f"logger must be a logging.Logger or a logger name, got {type(logger).__name__}"
            )
        self.logger = logger
        self.level = _level(level)
        self.closed = False
        self._log = FindingLog()
        self._windows = 0
        self._repairs: list[dict[str, Any]] = []

    def write_window(self, record: WindowRecord, findings: list[Finding]) -> None:
        """One DEBUG record for the window, one record per new finding."""
        self._windows += 1
        if self.logger.isEnabledFor(logging.DEBUG):
            scalars = T.namespaced_scalars(record.scalars())
            self.logger.debug(
                "gradvitals: window %d (steps %d-%d), %d statistics",
                record.index,
                record.step_start,
                record.step_end,
                len(scalars),
                extra={"gradvitals_scalars": scalars, "gradvitals_step": int(record.step)},
            )
        for f in self._log.add(findings):
            self._finding(f)

    def _finding(self, f: Finding) -> None:
        self.logger.log(self.level, format_finding(f), extra={"gradvitals_finding": f.to_dict()})

    def write_repair(self, repair: Mapping[str, Any]) -> None:
        """One INFO record per settled repair."""
        r = dict(repair)
        self._repairs.append(r)
        kind = getattr(r.get("kind"), "value", r.get("kind"))
        layer = f" in {r['layer']}" if r.get("layer") else ""
        self.logger.info(
            "gradvitals: step %s repair %s for %s%s: %s (%s)",
            r.get("step", "?"),
            r.get("action", "?"),
            kind,
            layer,
            r.get("reason", ""),
            repair_outcome(r),
            extra={"gradvitals_repair": r},
        )

    def write_final(self, findings: list[Finding]) -> None:
        """Records for findings not logged yet, then one INFO summary record."""
        for f in self._log.add(findings):
            self._finding(f)
        found = self._log.findings
        self.logger.info(
            summary_text(found, self._windows, self._repairs),
            extra={"gradvitals_findings": [f.to_dict() for f in found]},
        )

    def close(self) -> None:
        """Nothing to release; later writes still go to the logger."""
        self.closed = True

    def __repr__(self) -> str:
        return f"LoggingSink({self.logger.name!r}, level={logging.getLevelName(self.level)})"
