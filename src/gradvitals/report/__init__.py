"""See a run: TensorBoard vital signs, a one-page HTML report, console summaries, sinks.

``import gradvitals.report`` imports neither tensorboard, matplotlib, wandb nor
mlflow; the names below load their module on first use.

- :class:`TensorBoardSink`: writes vital signs, findings and repairs to an event file.
- :class:`WandbSink`, :class:`MLflowSink`, :class:`LoggingSink`: the same to a W&B run,
  an MLflow run, or ``logging`` records with structured ``extra``; pass them as
  ``gradvitals.watch(..., sinks=[...])`` (see ``docs/integrations.md``).
- :func:`read_run` / :class:`RunData`: reads a gradvitals log back.
- :func:`write_report`: writes the self-contained HTML report (``gradvitals report``).
- :func:`format_finding` / :func:`summary_text` / :func:`cause_text`: plain-text lines
  for the console.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gradvitals.report._console import format_finding as format_finding
from gradvitals.report._console import summary_text as summary_text
from gradvitals.report._summary import cause_text as cause_text

if TYPE_CHECKING:
    from gradvitals.report._html import write_report as write_report
    from gradvitals.report._read import RunData as RunData
    from gradvitals.report._read import read_run as read_run
    from gradvitals.report._sink_logging import LoggingSink as LoggingSink
    from gradvitals.report._sink_mlflow import MLflowSink as MLflowSink
    from gradvitals.report._sink_wandb import WandbSink as WandbSink
    from gradvitals.report._tensorboard import TensorBoardSink as TensorBoardSink

__all__ = [
    "LoggingSink",
    "MLflowSink",
    "RunData",
    "TensorBoardSink",
    "WandbSink",
    "cause_text",
    "format_finding",
    "read_run",
    "summary_text",
    "write_report",
]

_LAZY = {
    "TensorBoardSink": "gradvitals.report._tensorboard",
    "WandbSink": "gradvitals.report._sink_wandb",
    "MLflowSink": "gradvitals.report._sink_mlflow",
    "LoggingSink": "gradvitals.report._sink_logging",
    "RunData": "gradvitals.report._read",
    "read_run": "gradvitals.report._read",
    "write_report": "gradvitals.report._html",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradvitals.report' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
