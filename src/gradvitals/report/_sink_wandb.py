"""Weights & Biases sink: vital signs as W&B metrics, findings as alerts and a table.

W&B's ``sync_tensorboard=True`` picks up only what TensorBoard's own writers write,
and gradvitals writes its event files directly, so it never sees them. This sink
logs to the W&B run itself:

- each window: every statistic of ``record.scalars()`` under ``gradvitals/``, with
  ``gradvitals/findings_count`` (findings so far), against their own step metric
  ``gradvitals/step`` (the window's last optimizer step). ``run.define_metric`` binds
  them to it, so the run's own ``wandb.log`` calls and their step are never disturbed
  (a ``step=`` of ours behind the run's step would be dropped by W&B);
- each finding: one ``run.alert`` (title ``gradvitals: <kind> in <layer>``, text: the
  message, the first remedy and its code; WARN, ERROR for NaN/Inf and "could not
  repair"). W&B rate-limits alerts per title (``wait_duration``); the sink alerts
  once per kind and layer, and at most ``max_alerts`` times per run, with one last
  alert saying where the others are;
- at the end: the table ``gradvitals/findings`` (one row per finding), the table
  ``gradvitals/repairs`` when repairs were made, ``gradvitals/healthy`` in the run
  summary, and with ``log_dir`` (the TensorBoard log of the same run) the HTML report
  as an artifact of type ``gradvitals-report``.

The run stays the caller's: the sink never finishes it.

>>> import wandb
>>> from gradvitals.stats import LossStats, WindowRecord
>>> run = wandb.init(mode="disabled")  # or a real run: wandb.init(project="...")
>>> sink = WandbSink(run)
>>> sink.write_window(WindowRecord(0, 0, 9, loss=LossStats(sum=2.3, count=1)), [])
>>> sink.write_final([]); sink.close(); run.finish()
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from gradvitals.errors import UsageError
from gradvitals.findings import FailureMode, Finding
from gradvitals.report import _tags as T
from gradvitals.report._sinks import (
    FINDING_COLUMNS,
    FindingLog,
    finding_row,
    finding_text,
    finding_title,
    optional_import,
    report_file,
)
from gradvitals.stats import WindowRecord

__all__ = ["WandbSink"]

log = logging.getLogger("gradvitals")

#: The W&B step metric of every gradvitals statistic.
STEP_TAG = "gradvitals/step"
_REPAIR_COLUMNS = ("step", "kind", "layer", "action", "reason", "healthy_after")
_TITLE_MAX = 63  # W&B: a title under 64 characters


class WandbSink:
    """Log vital signs, findings and repairs to a Weights & Biases run.

    Args:
        run: the ``wandb`` run (``wandb.init(...)``); None: the current ``wandb.run``.
        alerts: send a W&B alert for each new finding (default True).
        max_alerts: alerts per run at most (default 20); later findings are only in
            the findings table.
        wait_duration: seconds W&B waits before it repeats an alert of the same
            title (default 300).
        log_dir: the TensorBoard log dir of this run (``watch(..., log_dir=...)``):
            its HTML report is attached as an artifact at the end.

    Raises:
        UsageError: wandb is not installed (``pip install wandb``), or no run is
            given and none is active.
    """

    def __init__(
        self,
        run: Any = None,
        *,
        alerts: bool = True,
        max_alerts: int = 20,
        wait_duration: float = 300.0,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._wandb = optional_import("wandb", sink="WandbSink", pip="wandb")
        run = run if run is not None else self._wandb.run
        if run is None:
            raise UsageError(
                "WandbSink needs a W&B run: call wandb.init(...) first, or pass "
                "WandbSink(run=wandb.init(...))"
            )
        if isinstance(max_alerts, bool) or not isinstance(max_alerts, int) or max_alerts < 0:
            raise UsageError(f"max_alerts must be an integer >= 0, got {max_alerts!r}")
        self.run = run
        self.alerts = bool(alerts)
        self.max_alerts = max_alerts
        self.wait_duration = float(wait_duration)
        self.log_dir = log_dir
        self.closed = False
        self._log = FindingLog()
        self._alerted: set[tuple[str, str]] = set()
        self._sent = 0
        self._capped = False
        self._repairs: list[dict[str, Any]] = []
        run.define_metric(STEP_TAG)
        run.define_metric(T.TAG_PREFIX + "*", step_metric=STEP_TAG)

    def write_window(self, record: WindowRecord, findings: list[Finding]) -> None:
        """Log the window's statistics at ``gradvitals/step``; alert its new findings."""
        new = self._log.add(findings)
        data: dict[str, Any] = T.namespaced_scalars(record.scalars())
        data[T.FINDINGS_COUNT_TAG] = len(self._log.findings)
        data[STEP_TAG] = int(record.step)
        self.run.log(data)
        for f in new:
            self._alert(f)

    def _alert(self, f: Finding) -> None:
        if not self.alerts:
            return
        key = (f.kind.value, f.layer or "")
        if key in self._alerted and not f.final:
            return
        self._alerted.add(key)
        level = self._wandb.AlertLevel
        if self._sent >= self.max_alerts:
            if not self._capped and self.max_alerts > 0:
                self._capped = True
                self._send(
                    "gradvitals: more findings",
                    f"{self.max_alerts} alerts sent; the others are in the gradvitals/findings "
                    "table at the end of the run.",
                    level.WARN,
                )
            return
        self._sent += 1
        severe = f.final or f.kind is FailureMode.NONFINITE
        self._send(finding_title(f), finding_text(f), level.ERROR if severe else level.WARN)

    def _send(self, title: str, text: str, level: Any) -> None:
        try:
            self.run.alert(
                title=title[:_TITLE_MAX], text=text, level=level, wait_duration=self.wait_duration
            )
        except Exception as e:  # an alert that W&B refuses must not stop training
            log.warning("gradvitals WandbSink: alert not sent (%s: %s)", type(e).__name__, e)

    def write_repair(self, repair: Mapping[str, Any]) -> None:
        """Keep a settled repair for the ``gradvitals/repairs`` table."""
        self._repairs.append(dict(repair))

    def write_final(self, findings: list[Finding]) -> None:
        """Log the findings (and repairs) tables, the summary, and the HTML report."""
        for f in self._log.add(findings):  # final "could not repair" findings
            self._alert(f)
        wandb = self._wandb
        rows = [finding_row(f) for f in self._log.findings]
        out: dict[str, Any] = {
            T.namespaced("findings"): wandb.Table(columns=list(FINDING_COLUMNS), data=rows)
        }
        if self._repairs:
            data = [[r.get(c) for c in _REPAIR_COLUMNS] for r in self._repairs]
            for row in data:
                row[1] = str(getattr(row[1], "value", row[1]))
            out[T.namespaced("repairs")] = wandb.Table(columns=list(_REPAIR_COLUMNS), data=data)
        self.run.log(out)
        self.run.summary[T.namespaced("healthy")] = not self._log.findings
        self.run.summary[T.FINDINGS_COUNT_TAG] = len(self._log.findings)
        path = report_file(self.log_dir, "WandbSink")
        if path is not None:
            artifact = wandb.Artifact(f"gradvitals-report-{self.run.id}", type="gradvitals-report")
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)

    def close(self) -> None:
        """Stop writing (the run itself stays open: it is yours to finish)."""
        self.closed = True

    def __repr__(self) -> str:
        return f"WandbSink(run={getattr(self.run, 'id', '?')!r})"
