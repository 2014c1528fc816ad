"""MLflow sink: vital signs as MLflow metrics, findings and the report as artifacts.

- each window: one ``log_batch`` of every statistic of ``record.scalars()`` under
  ``gradvitals/`` plus ``gradvitals/findings_count`` (findings so far), at
  ``step`` = the window's last optimizer step. MLflow allows letters, digits and
  ``_ - . : / space`` in a metric name; any other character of a layer name
  (``#`` of a module called twice...) becomes ``_``;
- at the end: ``gradvitals/findings.json`` (a list of ``Finding.to_dict()``),
  ``gradvitals/repairs.json`` when repairs were made, the run tags
  ``gradvitals.healthy`` and ``gradvitals.findings``, and with ``log_dir`` (the
  TensorBoard log of the same run) the HTML report as ``gradvitals/report.html``.

The run: ``run_id`` if given, else the active run (``mlflow.start_run()``), else a
new run in the default experiment that the sink ends when it is closed. Uses
``MlflowClient`` with an explicit run id, so it works from any thread.

>>> import os, tempfile
>>> os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # or any tracking server / database
>>> from gradvitals.stats import LossStats, WindowRecord
>>> sink = MLflowSink(tracking_uri="file:" + tempfile.mkdtemp())
>>> sink.write_window(WindowRecord(0, 0, 9, loss=LossStats(sum=2.3, count=1)), [])
>>> sink.write_final([]); sink.close()
>>> [(m.step, m.value) for m in sink.client.get_metric_history(sink.run_id, "gradvitals/loss/train")]
[(9, 2.3)]
>>> _ = os.environ.pop("MLFLOW_ALLOW_FILE_STORE")
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.report import _tags as T
from gradvitals.report._sinks import FindingLog, optional_import, report_file
from gradvitals.report._summary import to_json
from gradvitals.stats import WindowRecord

__all__ = ["MLflowSink", "mlflow_key"]

_BAD = re.compile(r"[^/\w.\- :]")


def mlflow_key(tag: str) -> str:
    """``tag`` as a valid MLflow metric name: other characters become ``_``.

    >>> mlflow_key("gradvitals/dead_fraction/net.1#1")
    'gradvitals/dead_fraction/net.1_1'
    """
    key = _BAD.sub("_", tag)
    while "//" in key:
        key = key.replace("//", "/_/")
    return key.rstrip("/") or "_"


class MLflowSink:
    """Log vital signs, findings and repairs to an MLflow run.

    Args:
        run_id: the run to log to; None: the active run, or a new one (ended by
            :meth:`close`).
        tracking_uri: the tracking server or store; None: MLflow's current one
            (``MLFLOW_TRACKING_URI``).
        log_dir: the TensorBoard log dir of this run (``watch(..., log_dir=...)``):
            its HTML report is attached as an artifact at the end.

    Raises:
        UsageError: mlflow is not installed (``pip install mlflow``, or the lighter
            ``mlflow-skinny``).
    """

    def __init__(
        self,
        run_id: str | None = None,
        tracking_uri: str | None = None,
        *,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        mlflow = optional_import("mlflow", sink="MLflowSink", pip="mlflow")
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        self._metric = Metric
        self.client = MlflowClient(tracking_uri)
        self.owns_run = False
        if run_id is None:
            active = mlflow.active_run()
            if active is not None and tracking_uri in (None, mlflow.get_tracking_uri()):
                run_id = active.info.run_id
            else:
                run_id = self._new_run()
                self.owns_run = True
        elif not isinstance(run_id, str):
            raise UsageError(f"run_id must be an MLflow run id (a string), got {run_id!r}")
        self.run_id: str = run_id
        self.log_dir = log_dir
        self.closed = False
        self._log = FindingLog()
        self._repairs: list[dict[str, Any]] = []

    def _new_run(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "Default")
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        return str(self.client.create_run(exp_id, tags={"gradvitals": "1"}).info.run_id)

    def write_window(self, record: WindowRecord, findings: list[Finding]) -> None:
        """One batch of the window's statistics at ``step`` = its last step."""
        self._log.add(findings)
        scalars = T.namespaced_scalars(record.scalars())
        scalars[T.FINDINGS_COUNT_TAG] = float(len(self._log.findings))
        now = int(time.time() * 1000)
        step = int(record.step)
        metrics = [self._metric(mlflow_key(k), v, now, step) for k, v in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def write_repair(self, repair: Mapping[str, Any]) -> None:
        """Keep a settled repair for ``gradvitals/repairs.json``."""
        self._repairs.append(dict(repair))

    def write_final(self, findings: list[Finding]) -> None:
        """Attach the findings (and repairs) as JSON, tag the run, attach the report."""
        self._log.add(findings)
        found = [f.to_dict() for f in self._log.findings]
        self.client.log_text(self.run_id, to_json(found), "gradvitals/findings.json")
        if self._repairs:
            self.client.log_text(self.run_id, to_json(self._repairs), "gradvitals/repairs.json")
        self.client.set_tag(self.run_id, "gradvitals.healthy", str(not found).lower())
        self.client.set_tag(self.run_id, "gradvitals.findings", str(len(found)))
        path = report_file(self.log_dir, "MLflowSink")
        if path is not None:
            self.client.log_artifact(self.run_id, str(path), "gradvitals")

    def close(self) -> None:
        """Stop writing; end the run if the sink started it."""
        if self.closed:
            return
        self.closed = True
        if self.owns_run:
            self.client.set_terminated(self.run_id)

    def __repr__(self) -> str:
        return f"MLflowSink(run_id={self.run_id!r})"
