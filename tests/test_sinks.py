"""The built-in sinks: W&B (offline run files read back), MLflow (a local file store read
back with ``MlflowClient``) and ``logging`` (a capturing handler), each fed by a real
PyTorch run: a NaN injected at one step must arrive as a finding, a healthy run must
arrive with none, and every statistic under the ``gradvitals/`` namespace."""

from __future__ import annotations

import json
import logging
import math
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import gradvitals
from gradvitals.errors import UsageError
from gradvitals.report import LoggingSink

NAN_STEP = 9


def run(sinks: list[Any], *, nan_at: int | None = None, steps: int = 16, **kw: Any) -> Any:
    """A tiny regression watched with ``sinks``; a NaN in the input at ``nan_at``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    monitor = gradvitals.watch(model, opt, every=4, console=False, lint=False, sinks=sinks, **kw)
    for step in range(steps):
        x = torch.randn(32, 6, generator=g)
        if step == nan_at:
            x[0, 0] = float("nan")
        loss = (model(x) - x[:, :1]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.observe_loss(loss)
    monitor.close()
    return monitor


def nan_window_step(monitor: Any) -> int:
    (f,) = [f for f in monitor.findings if f.kind.value == "nonfinite"]
    rec = next(r for r in monitor.history if r.step_start <= NAN_STEP <= r.step_end)
    assert f.step == rec.step
    return int(rec.step)


def loss_points(monitor: Any) -> list[tuple[int, float]]:
    """The windows' losses as written: a NaN is written where the window held NaN/Inf."""
    return [
        (r.step, r.loss.mean)
        for r in monitor.history
        if math.isfinite(r.loss.mean) or r.loss.n_nonfinite
    ]


def same_points(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6, nan_ok=True)
    return True


# -- logging -------------------------------------------------------------------------------
class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def capture() -> Any:
    logger = logging.getLogger("gradvitals.test_sink")
    handler = Capture()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)


def test_logging_sink_forwards_each_finding_with_its_data(capture: Any) -> None:
    logger, handler = capture
    monitor = run([LoggingSink(logger)], nan_at=NAN_STEP)
    step = nan_window_step(monitor)
    found = [r for r in handler.records if hasattr(r, "gradvitals_finding")]
    assert [(r.levelno, r.gradvitals_finding["kind"]) for r in found] == [
        (logging.WARNING, "nonfinite")
    ]
    assert found[0].gradvitals_finding["step"] == step
    assert found[0].getMessage().startswith(f"gradvitals: step {step} nonfinite")
    json.dumps(found[0].gradvitals_finding)  # a handler can ship it as JSON as it is
    windows = [r for r in handler.records if hasattr(r, "gradvitals_scalars")]
    assert [r.levelno for r in windows] == [logging.DEBUG] * len(monitor.history)
    first = windows[0].gradvitals_scalars
    assert first["gradvitals/loss/train"] == pytest.approx(monitor.history[0].loss.mean)
    assert all(k.startswith("gradvitals/") for w in windows for k in w.gradvitals_scalars)
    (final,) = [r for r in handler.records if hasattr(r, "gradvitals_findings")]
    assert [f["kind"] for f in final.gradvitals_findings] == ["nonfinite"]


def test_logging_sink_is_quiet_on_a_healthy_run(capture: Any) -> None:
    logger, handler = capture
    monitor = run([LoggingSink(logger, level="ERROR")])
    assert monitor.findings == []
    assert not [r for r in handler.records if r.levelno >= logging.WARNING]
    assert len([r for r in handler.records if hasattr(r, "gradvitals_scalars")]) == len(
        monitor.history
    )


def test_logging_sink_rejects_a_bad_level() -> None:
    with pytest.raises(UsageError, match="not a logging level"):
        LoggingSink(level="LOUD")


# -- W&B -------------------------------------------------------------------------------------
def wandb_records(run_dir: Path) -> list[Any]:
    """Every record of an offline run's ``.wandb`` file (LevelDB log framing: 32 KiB
    blocks of records with a 7-byte header: CRC, length, type full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if n == 0 and kind == 0:
            break
        if pos + 7 + n > len(data):
            break  # a record still being written (wandb's service flushes as it goes)
        chunk = data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            out.append(pb.Record.FromString(parts))
    return out


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytest.importorskip("wandb")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_home").mkdir()
    return tmp_path / "wandb_home"


def wandb_run(tmp_path: Path, *, nan_at: int | None) -> tuple[Any, list[Any]]:
    import wandb

    from gradvitals.report import WandbSink

    tb = tmp_path / "tb"
    wb = wandb.init(project="gradvitals-test")
    run_dir = Path(wb.dir).parent
    monitor = run([WandbSink(wb, log_dir=tb)], nan_at=nan_at, log_dir=str(tb))
    wb.finish()
    # wandb's service may still be writing the run file when finish() returns: read it
    # once it holds the run's exit record
    deadline = time.monotonic() + 30
    while True:
        records = wandb_records(run_dir)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return monitor, records
        assert time.monotonic() < deadline, "the offline run file never got its exit record"
        time.sleep(0.1)


def history(records: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append(
                {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            )
    return rows


def test_wandb_sink_logs_statistics_alerts_and_a_table(tmp_path: Path, wandb_env: Path) -> None:
    monitor, records = wandb_run(tmp_path, nan_at=NAN_STEP)
    step = nan_window_step(monitor)
    # one row per window (W&B also copies gradvitals/step into the end-of-run table's row)
    rows = [h for h in history(records) if "gradvitals/findings_count" in h]
    assert len(rows) == len(monitor.history)
    logged = [
        (h["gradvitals/step"], h["gradvitals/loss/train"])
        for h in rows
        if "gradvitals/loss/train" in h
    ]
    assert same_points(logged, loss_points(monitor))
    assert all(k.startswith(("gradvitals/", "_")) for h in rows for k in h)
    assert [h["gradvitals/findings_count"] for h in rows] == [
        int(r.step >= step) for r in monitor.history
    ]
    alerts = [r.alert for r in records if r.WhichOneof("record_type") == "alert"]
    assert [(a.title, a.level) for a in alerts] == [
        (f"gradvitals: nonfinite in {monitor.findings[0].layer}", "ERROR")
        if monitor.findings[0].layer
        else ("gradvitals: nonfinite", "ERROR")
    ]
    assert f"step {step}:" in alerts[0].text and "Try: " in alerts[0].text
    arts = {
        r.artifact.type: r.artifact for r in records if r.WhichOneof("record_type") == "artifact"
    }
    assert "run_table" in arts and "gradvitals-report" in arts
    assert [c.path for c in arts["gradvitals-report"].manifest.contents] == ["report.html"]
    table = next(h for h in history(records) if "gradvitals/findings/nrows" in h)
    assert table["gradvitals/findings/nrows"] == 1
    (table_file,) = (tmp_path / "wandb_home").rglob("findings_*.table.json")
    content = json.loads(table_file.read_text())
    assert content["data"][0][:3] == [step, "nonfinite", monitor.findings[0].layer or ""]


def test_wandb_sink_sends_no_alert_on_a_healthy_run(tmp_path: Path, wandb_env: Path) -> None:
    monitor, records = wandb_run(tmp_path, nan_at=None)
    assert monitor.findings == []
    assert not [r for r in records if r.WhichOneof("record_type") == "alert"]
    rows = [h for h in history(records) if "gradvitals/findings_count" in h]
    assert [h["gradvitals/step"] for h in rows] == [r.step for r in monitor.history]
    assert {h["gradvitals/findings_count"] for h in rows} == {0}


def test_wandb_sink_needs_a_run(wandb_env: Path) -> None:
    import wandb

    from gradvitals.report import WandbSink

    assert wandb.run is None
    with pytest.raises(UsageError, match=r"wandb\.init"):
        WandbSink()


# -- MLflow ----------------------------------------------------------------------------------
@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return "file:" + str(tmp_path / "mlruns")


def test_mlflow_sink_logs_metrics_findings_and_report(tmp_path: Path, mlflow_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    from gradvitals.report import MLflowSink

    tb = tmp_path / "tb"
    sink = MLflowSink(tracking_uri=mlflow_uri, log_dir=tb)
    monitor = run([sink], nan_at=NAN_STEP, log_dir=str(tb))
    step = nan_window_step(monitor)
    client = MlflowClient(mlflow_uri)
    got = client.get_run(sink.run_id)
    assert got.info.status == "FINISHED"  # the sink started the run, so it ended it
    hist = client.get_metric_history(sink.run_id, "gradvitals/loss/train")
    assert same_points([(m.step, m.value) for m in hist], loss_points(monitor))
    counts = client.get_metric_history(sink.run_id, "gradvitals/findings_count")
    assert [(m.step, m.value) for m in counts] == [
        (r.step, float(r.step >= step)) for r in monitor.history
    ]
    assert all(k.startswith("gradvitals/") for k in got.data.metrics)
    assert got.data.tags["gradvitals.healthy"] == "false"
    files = {a.path for a in client.list_artifacts(sink.run_id, "gradvitals")}
    assert files == {"gradvitals/findings.json", "gradvitals/report.html"}
    local = client.download_artifacts(sink.run_id, "gradvitals/findings.json", str(tmp_path))
    found = json.loads(Path(local).read_text())
    assert [(f["kind"], f["step"]) for f in found] == [("nonfinite", step)]


def test_mlflow_sink_on_a_healthy_run_and_an_active_run(tmp_path: Path, mlflow_uri: str) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from gradvitals.report import MLflowSink

    mlflow.set_tracking_uri(mlflow_uri)
    try:
        with mlflow.start_run() as active:
            sink = MLflowSink()
            assert sink.run_id == active.info.run_id and not sink.owns_run
            monitor = run([sink])
            assert mlflow.active_run() is not None  # the user's run is left open
    finally:
        mlflow.set_tracking_uri("")
    client = MlflowClient(mlflow_uri)
    assert monitor.findings == []
    assert client.get_run(sink.run_id).data.tags["gradvitals.healthy"] == "true"
    local = client.download_artifacts(sink.run_id, "gradvitals/findings.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == []
    norms = client.get_metric_history(sink.run_id, "gradvitals/grad_norm_total/model")
    want = [
        (r.step, r.total_grad_norm) for r in monitor.history if math.isfinite(r.total_grad_norm)
    ]
    assert same_points([(m.step, m.value) for m in norms], want)


# -- optional packages ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "module", "pip"), [("WandbSink", "wandb", "wandb"), ("MLflowSink", "mlflow", "mlflow")]
)
def test_a_missing_package_names_the_pip_install(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str, pip: str
) -> None:
    import gradvitals.report as report

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(UsageError, match=f"pip install {pip}") as err:
        getattr(report, name)()
    assert isinstance(err.value, ImportError)
