"""What the built-in sinks share: optional imports, finding rows and titles, the report file.

A *sink* is any object with ``write_window(record, findings)``,
``write_repair(repair)``, ``write_final(findings)`` and ``close()``; the session
calls it on rank 0 once per window, per settled repair, and at the end. The
built-in ones (:class:`~gradvitals.report.TensorBoardSink`,
:class:`~gradvitals.report.WandbSink`, :class:`~gradvitals.report.MLflowSink`,
:class:`~gradvitals.report.LoggingSink`) write every statistic under the
``gradvitals/`` tag namespace (:func:`~gradvitals.report._tags.namespaced`).

>>> from gradvitals.findings import FailureMode, Finding, Remedy
>>> f = Finding(FailureMode.DYING_RELU, "net.3", 120, "62% of units dead for 3 windows",
...             remedies=[Remedy("Lower the learning rate", "too big", "lr *= 0.1")])
>>> finding_title(f)
'gradvitals: dying_relu in net.3'
>>> print(finding_text(f))
step 120: 62% of units dead for 3 windows.
Try: Lower the learning rate
    lr *= 0.1
>>> dict(zip(FINDING_COLUMNS, finding_row(f)))["remedy"]
'Lower the learning rate'
>>> log = FindingLog()
>>> len(log.add([f])), len(log.add([f])), len(log.findings)  # each finding once
(1, 0, 1)
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.report._summary import sentence, where

__all__ = [
    "FINDING_COLUMNS",
    "FindingLog",
    "MissingPackage",
    "finding_row",
    "finding_text",
    "finding_title",
    "optional_import",
    "report_file",
]

log = logging.getLogger("gradvitals")

#: The columns of a findings table (W&B), in order.
FINDING_COLUMNS: tuple[str, ...] = (
    "step",
    "kind",
    "layer",
    "cause",
    "message",
    "remedy",
    "code",
    "final",
)


class MissingPackage(UsageError, ImportError):
    """A sink's package (wandb, mlflow...) is not installed; the message names the pip line."""


def optional_import(module: str, *, sink: str, pip: str) -> ModuleType:
    """Import ``module`` for ``sink`` or raise :class:`MissingPackage` naming ``pip install``.

    >>> optional_import("json", sink="JsonSink", pip="json").__name__
    'json'
    >>> optional_import("no_such_module_xyz", sink="XyzSink", pip="xyz")
    Traceback (most recent call last):
    ...
    gradvitals.report._sinks.MissingPackage: XyzSink needs the no_such_module_xyz package, which is not installed: pip install xyz
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackage(
            f"{sink} needs the {module} package, which is not installed: pip install {pip}"
        ) from e


def finding_title(f: Finding) -> str:
    """A short title: ``gradvitals: <kind> in <layer>`` (an alert's title)."""
    return f"gradvitals: {f.kind.value}{where(f)}"


def finding_text(f: Finding) -> str:
    """The step and message, then the first remedy and its code (an alert's text)."""
    lines = [f"step {f.step}: {sentence(f.message)}" + (" Could not repair." if f.final else "")]
    if f.remedies:
        r = f.remedies[0]
        lines.append(f"Try: {r.action}")
        if r.code:
            lines.extend("    " + line for line in r.code.splitlines())
    return "\n".join(lines)


def finding_row(f: Finding) -> list[Any]:
    """One table row, in :data:`FINDING_COLUMNS` order."""
    first = f.remedies[0] if f.remedies else None
    return [
        int(f.step),
        f.kind.value,
        f.layer or "",
        f.cause.value,
        f.message,
        first.action if first else "",
        first.code if first else "",
        bool(f.final),
    ]


class FindingLog:
    """The findings a sink has seen, once each, in order (a final list repeats them)."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self._seen: set[tuple[Any, ...]] = set()

    def add(self, findings: Iterable[Finding]) -> list[Finding]:
        """Keep the findings not seen before; returns them."""
        new = []
        for f in findings:
            key = (f.kind.value, f.layer, f.step, f.final, f.message)
            if key not in self._seen:
                self._seen.add(key)
                self.findings.append(f)
                new.append(f)
        return new


def report_file(log_dir: str | os.PathLike[str] | None, sink: str) -> Path | None:
    """Write the HTML report of the TensorBoard log in ``log_dir``; None (and one
    warning) when there is no log dir or the report cannot be made."""
    if log_dir is None:
        return None
    try:
        from gradvitals.report._html import write_report

        return write_report(log_dir)
    except Exception as e:  # the report is a bonus: never fail the run's end for it
        log.warning("gradvitals %s: no HTML report from %s (%s)", sink, log_dir, e)
        return None
