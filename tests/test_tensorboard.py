"""TensorBoardSink writes what read_run reads back: scalars, findings, repairs, run info.

TensorBoard's own reader (``EventAccumulator``) is the oracle for "TensorBoard shows
it". It runs in a subprocess with TensorBoard's TensorFlow stub forced: with
TensorFlow installed, its file loader would import TensorFlow (seconds) and forcing
the stub in this process would break Keras' TensorBoard callback in other tests.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from gradvitals import FailureMode, Finding, remedies_for
from gradvitals.errors import UsageError
from gradvitals.report import RunData, TensorBoardSink, read_run
from gradvitals.report._synthetic import synthetic_run
from gradvitals.stats import LayerStats, SiteStats, WindowRecord

REPAIR = {
    "step": 90,
    "action": "lower_lr",
    "reason": "88% of units dead",
    "kind": "dying_relu",
    "layer": "net.3",
    "healthy_after": True,
}


def _write(log_dir: Path, mode: str = "dying_relu", **info: object) -> tuple[list, list]:
    records, findings = synthetic_run(mode)
    with TensorBoardSink(log_dir, run_info=dict(info)) as sink:
        for r in records:
            sink.write_window(r, [f for f in findings if f.step == r.step])
        if findings:
            sink.write_repair(REPAIR)
        sink.write_final(findings)
    return records, findings


_ORACLE = r"""
import base64, json, sys, types
sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util
log_dir = sys.argv[1]
if len(sys.argv) > 2:  # first write tensor-style scalars with tensorboard.summary.Writer
    from tensorboard.summary import Writer
    w = Writer(log_dir)
    for step in (10, 20, 30):
        w.add_scalar("grad_norm/dense_1", 0.5 * step, step=step)
        w.add_scalar("dead_fraction/dense_1", 0.1, step=step)
    w.close()
acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})
acc.Reload()
out = {"scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]},
       "tensors": {}}
for t in acc.Tags()["tensors"]:
    vals = []
    for e in acc.Tensors(t):
        a = tensor_util.make_ndarray(e.tensor_proto)
        v = a.reshape(-1)[0]
        vals.append([e.step, base64.b64encode(v).decode() if isinstance(v, bytes) else float(v)])
    out["tensors"][t] = {"plugin": acc.SummaryMetadata(t).plugin_data.plugin_name, "values": vals}
print(json.dumps(out))
"""


def tensorboard_view(log_dir: Path, *, write_tensor_scalars: bool = False) -> dict:
    """What TensorBoard's EventAccumulator reads from ``log_dir`` (text as base64)."""
    argv = [sys.executable, "-c", _ORACLE, str(log_dir), *(["w"] if write_tensor_scalars else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    view = json.loads(proc.stdout.splitlines()[-1])
    for t in view["tensors"].values():
        if t["plugin"] in ("text", "custom_scalars"):
            t["values"] = [[s, base64.b64decode(v)] for s, v in t["values"]]
    return view


def write_events(log_dir: Path, values_by_step: list[tuple[int, list]]) -> None:
    """Write raw ``Summary.Value`` protos, one event per step, like any other writer."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "events.out.tfevents.1.test", "wb") as fh:
        rw = RecordWriter(fh)
        rw.write(event_pb2.Event(file_version="brain.Event:2").SerializeToString())
        for step, values in values_by_step:
            ev = event_pb2.Event(step=step, summary=summary_pb2.Summary(value=values))
            rw.write(ev.SerializeToString())


def test_scalars_round_trip(tmp_path: Path) -> None:
    records, _ = _write(tmp_path)
    run = read_run(tmp_path)
    written: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for tag, v in r.scalars().items():
            written.setdefault(tag, []).append((r.step, v))
    assert set(run.scalars) == set(written)
    for tag, pts in written.items():
        got = run.scalars[tag]
        assert [s for s, _ in got] == [s for s, _ in pts]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in pts], rtol=1e-6)  # float32


def test_findings_and_repairs_round_trip(tmp_path: Path) -> None:
    _, findings = _write(tmp_path)
    run = read_run(tmp_path)
    assert [f.to_dict() for f in run.findings] == [f.to_dict() for f in findings]
    assert run.findings[0].remedies[0].code == findings[0].remedies[0].code
    assert run.repairs == [REPAIR]
    assert not run.healthy


def test_repairs_settled_late_keep_their_step_and_never_go_back(tmp_path: Path) -> None:
    """TensorBoard purges data when steps go back; repairs are settled windows later."""
    from gradvitals.report._records import iter_records

    records, _ = synthetic_run("healthy")
    with TensorBoardSink(tmp_path) as sink:
        for r in records:
            sink.write_window(r, [])
        sink.write_repair({**REPAIR, "step": 100})
        sink.write_repair({**REPAIR, "step": 40})  # applied at 40, settled at the end
    (event_file,) = tmp_path.glob("events.out.tfevents.*")
    steps = [event_pb2.Event.FromString(raw).step for raw in iter_records(event_file)]
    assert steps == sorted(steps) and steps[-1] == records[-1].step
    assert [r["step"] for r in read_run(tmp_path).repairs] == [40, 100]


def test_run_info_marks_a_gradvitals_log(tmp_path: Path) -> None:
    import gradvitals

    _write(tmp_path, "healthy", model="mlp", sync_every=10)
    run = read_run(tmp_path)
    assert run.run_info["gradvitals"] == gradvitals.__version__
    assert run.run_info["format"] == 1
    assert run.run_info["model"] == "mlp" and run.run_info["sync_every"] == 10
    assert run.healthy and run.findings == [] and run.repairs == []


def test_tensorboard_reads_scalars_text_and_layout(tmp_path: Path) -> None:
    records, findings = _write(tmp_path)
    view = tensorboard_view(tmp_path)
    expected = set(records[0].scalars())
    assert expected == {
        "dead_fraction/net.1",
        "dead_fraction/net.3",
        "zero_fraction/net.1",
        "zero_fraction/net.3",
        "grad_norm/net.0",
        "grad_norm/net.2",
        "grad_norm/net.4",
        "update_ratio/net.0",
        "update_ratio/net.2",
        "update_ratio/net.4",
        "loss/train",
        "grad_norm_total/model",
    }
    # scalar-style: TensorBoard's Scalars tab, one point per window, every tag under
    # the gradvitals/ namespace (never colliding with a run's own loss/grad_norm)
    scalars = view["scalars"]
    assert set(scalars) == {f"gradvitals/{t}" for t in expected}
    assert [s for s, _ in scalars["gradvitals/dead_fraction/net.3"]] == [r.step for r in records]
    assert scalars["gradvitals/loss/train"][0][1] == pytest.approx(records[0].loss.mean, rel=1e-6)

    tensors = view["tensors"]
    assert set(tensors) == {
        "gradvitals/findings",
        "gradvitals/repairs",
        "gradvitals/summary",
        "gradvitals/findings_json",
        "gradvitals/repairs_json",
        "gradvitals/final_findings_json",
        "gradvitals/run_info",
        "custom_scalars__config__",
    }
    assert {t["plugin"] for n, t in tensors.items() if n != "custom_scalars__config__"} == {"text"}
    ((step, md),) = tensors["gradvitals/findings"]["values"]
    f = findings[0]
    assert step == f.step
    md = md.decode()
    assert f"### dying_relu in `net.3` at step {f.step}" in md
    assert f.remedies[0].action in md and f.remedies[0].code in md
    repair_md = tensors["gradvitals/repairs"]["values"][0][1].decode()
    assert "lower_lr" in repair_md and "healthy after" in repair_md

    layout_entry = tensors["custom_scalars__config__"]
    assert layout_entry["plugin"] == "custom_scalars"
    layout = layout_pb2.Layout.FromString(layout_entry["values"][0][1])
    titles = [c.title for c in layout.category]
    assert titles == ["Loss", "Dead units", "Saturation", "Gradient norms", "Update ratios"]
    regexes = [t for c in layout.category for ch in c.chart for t in ch.multiline.tag]
    assert "^gradvitals/dead_fraction/" in regexes and "^gradvitals/grad_norm/" in regexes
    for tag in scalars:  # every tag is on a chart, and only on its own statistic's chart
        charts = [rx for rx in regexes if re.match(rx, tag)]
        assert len(charts) == 1, (tag, charts)


def test_final_findings_are_merged_without_duplicates(tmp_path: Path) -> None:
    records, findings = synthetic_run("exploding_gradient")
    unrepaired = Finding(
        FailureMode.EXPLODING_GRADIENT,
        None,
        records[-1].step,
        "still exploding after 3 repairs",
        remedies=remedies_for(FailureMode.EXPLODING_GRADIENT),
        final=True,
    )
    with TensorBoardSink(tmp_path) as sink:
        for r in records:
            sink.write_window(r, [f for f in findings if f.step == r.step])
        sink.write_final([*findings, unrepaired])  # repeats the per-window finding
    run = read_run(tmp_path)
    assert [f.message for f in run.findings] == [findings[0].message, unrepaired.message]
    assert run.findings[-1].final


def test_any_layer_name_is_kept(tmp_path: Path) -> None:
    names = ["<script>alert(1)</script>", "enc/dec.0", "ünï cødé", "a b"]
    rec = WindowRecord(
        index=0,
        step_start=1,
        step_end=5,
        layers={n: LayerStats(n, grad_norm=1.0, weight_norm=2.0, update_norm=0.002) for n in names},
    )
    with TensorBoardSink(tmp_path) as sink:
        sink.write_window(
            rec,
            [Finding(FailureMode.SATURATION, names[0], 5, "x", evidence={"v": np.float32(0.5)})],
        )
    run = read_run(tmp_path)
    assert run.layers("grad_norm") == names  # written order kept
    assert run.findings[0].layer == names[0] and run.findings[0].evidence == {"v": 0.5}


def test_nan_statistics_are_omitted(tmp_path: Path) -> None:
    site = SiteStats("net.1", "relu", units=4)  # no examples: dead fraction is NaN
    rec = WindowRecord(
        index=0,
        step_start=1,
        step_end=5,
        sites={"net.1": site},
        layers={"fc": LayerStats("fc", grad_norm=float("inf"), weight_norm=1.0, update_norm=0.0)},
    )
    with TensorBoardSink(tmp_path) as sink:
        sink.write_window(rec, [])
    run = read_run(tmp_path)
    assert "dead_fraction/net.1" not in run.scalars
    assert math.isinf(run.scalars["grad_norm/fc"][0][1])


def test_closed_sink_refuses_writes(tmp_path: Path) -> None:
    sink = TensorBoardSink(tmp_path)
    sink.close()
    sink.close()  # idempotent
    assert sink.closed
    records, _ = synthetic_run("healthy", n_windows=1)
    with pytest.raises(UsageError, match="is closed"):
        sink.write_window(records[0], [])


def test_unclosed_sink_has_flushed_every_window(tmp_path: Path) -> None:
    records, _ = synthetic_run("healthy", n_windows=3)
    sink = TensorBoardSink(tmp_path)
    for r in records:
        sink.write_window(r, [])
    sink.flush()  # writes are queued to a background thread: wait for them
    run = read_run(tmp_path)  # while the sink is still open
    assert len(run.scalars["loss/train"]) == 3
    sink.close()


def test_tensor_style_scalars_are_read(tmp_path: Path) -> None:
    """``tensorboard.summary.Writer`` (like Keras/TF2) writes scalars as tensors."""
    view = tensorboard_view(tmp_path, write_tensor_scalars=True)
    assert "grad_norm/dense_1" in view["tensors"] and not view["scalars"]  # the pitfall
    run = read_run(tmp_path)
    assert run.scalars["grad_norm/dense_1"] == [(10, 5.0), (20, 10.0), (30, 15.0)]
    assert run.layers("dead_fraction") == ["dense_1"]
    assert run.run_info == {}


def _scalar_meta() -> summary_pb2.SummaryMetadata:
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )


def test_tensor_scalars_of_any_dtype_and_metadata_on_first_value_only(tmp_path: Path) -> None:
    def value(tag: str, x: float, dtype: int, first: bool) -> summary_pb2.Summary.Value:
        if dtype == types_pb2.DT_DOUBLE:
            t = tensor_pb2.TensorProto(
                dtype=dtype, double_val=[x], tensor_shape=tensor_shape_pb2.TensorShapeProto()
            )
        else:
            t = tensor_pb2.TensorProto(
                dtype=dtype, float_val=[x], tensor_shape=tensor_shape_pb2.TensorShapeProto()
            )
        meta = _scalar_meta() if first else None
        return summary_pb2.Summary.Value(tag=tag, tensor=t, metadata=meta)

    write_events(
        tmp_path,
        [
            (
                s,
                [
                    value("update_ratio/fc", 1e-3 * s, types_pb2.DT_DOUBLE, s == 1),
                    value("saturation/act", 0.25, types_pb2.DT_FLOAT, s == 1),
                ],
            )
            for s in (1, 2, 3)
        ],
    )
    run = read_run(tmp_path)
    assert run.scalars["update_ratio/fc"] == [(1, 1e-3), (2, 2e-3), (3, 3e-3)]  # float64 kept
    assert run.scalars["saturation/act"] == [(1, 0.25), (2, 0.25), (3, 0.25)]


def test_text_summary_suffix_from_summarywriter_is_accepted(tmp_path: Path) -> None:
    """``SummaryWriter.add_text(tag, ...)`` stores ``<tag>/text_summary``, shape [1]."""
    f = Finding(
        FailureMode.NONFINITE, None, 7, "loss is NaN", remedies=remedies_for(FailureMode.NONFINITE)
    )
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")
    )
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        string_val=[json.dumps([f.to_dict()]).encode()],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]
        ),
    )
    value = summary_pb2.Summary.Value(
        tag="gradvitals/findings_json/text_summary", metadata=meta, tensor=tensor
    )
    write_events(tmp_path, [(7, [value])])
    run = read_run(tmp_path)
    assert [g.to_dict() for g in run.findings] == [f.to_dict()]


def test_rundata_helpers(tmp_path: Path) -> None:
    records, _ = _write(tmp_path)
    run = read_run(tmp_path)
    assert isinstance(run, RunData)
    assert run.steps() == [r.step for r in records]
    assert run.layers("grad_norm") == ["net.0", "net.2", "net.4"]
    assert run.final_values("dead_fraction")["net.3"] == pytest.approx(
        records[-1].sites["net.3"].dead_fraction
    )
    assert run.series("grad_norm", "nope") == []


def test_resumed_run_reads_every_event_file(tmp_path: Path) -> None:
    records, _ = synthetic_run("healthy")
    for part in (records[:6], records[6:]):
        with TensorBoardSink(tmp_path) as sink:
            for r in part:
                sink.write_window(r, [])
    run = read_run(tmp_path)
    assert len(run.event_files) == 2
    assert [s for s, _ in run.scalars["loss/train"]] == [r.step for r in records]


def test_no_framework_is_imported() -> None:
    """Writing and reading need only tensorboard's protos: no torch, TensorFlow, matplotlib."""
    code = (
        "import sys, tempfile\n"
        "import gradvitals.report as R\n"
        "assert 'tensorboard' not in sys.modules and 'matplotlib' not in sys.modules\n"
        "from gradvitals.report._synthetic import synthetic_run\n"
        "recs, fs = synthetic_run('dying_relu', n_windows=2)\n"
        "d = tempfile.mkdtemp()\n"
        "with R.TensorBoardSink(d) as s:\n"
        "    s.write_window(recs[0], fs)\n"
        "assert R.read_run(d).findings\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the background writer ---------------------------------------------------------------


class _File:
    """An event file whose writes can be slowed, held at a gate, or made to fail.

    Writes from the thread that opened it (the header, written by the sink's
    constructor) pass untouched; ``threads`` names the thread of every write."""

    def __init__(
        self,
        path: Path,
        *,
        delay: float = 0.0,
        gate: threading.Event | None = None,
        fail: OSError | None = None,
    ) -> None:
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.delay, self.gate, self.fail = delay, gate, fail
        self.owner = threading.current_thread()
        self.threads: list[str] = []

    def write(self, data: bytes) -> int:
        self.threads.append(threading.current_thread().name)
        if threading.current_thread() is not self.owner:
            if self.fail is not None:
                raise self.fail
            if self.gate is not None:
                self.gate.wait(30)
            time.sleep(self.delay)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()

    @property
    def closed(self) -> bool:
        return self.fh.closed


@pytest.fixture
def event_file(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Make the next sinks open a :class:`_File` with these options; ``files`` lists them."""
    from gradvitals.report import _tensorboard

    opts: dict[str, object] = {"files": []}

    def opener(path: Path) -> _File:
        f = _File(path, **{k: v for k, v in opts.items() if k != "files"})  # type: ignore[arg-type]
        opts["files"].append(f)  # type: ignore[attr-defined]
        return f

    monkeypatch.setattr(_tensorboard, "_open_event_file", opener)
    return opts


def _wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    t_end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t_end, "timed out"
        time.sleep(0.005)


def test_writes_run_off_the_calling_thread(tmp_path: Path, event_file: dict) -> None:
    gate = threading.Event()
    event_file["gate"] = gate
    records, _ = synthetic_run("healthy", n_windows=4)
    sink = TensorBoardSink(tmp_path)
    (f,) = event_file["files"]
    header = len(f.threads)
    for r in records:
        sink.write_window(r, [])  # returns although no window can be written yet
    assert sink._writer.pending == len(records)
    gate.set()
    sink.flush()
    assert sink._writer.pending == 0
    writers = set(f.threads[header:])  # one write per window, all on the writer thread
    assert len(f.threads) == header + len(records) and len(writers) == 1
    assert threading.current_thread().name not in writers
    assert [s for s, _ in read_run(tmp_path).scalars["loss/train"]] == [r.step for r in records]
    sink.close()


def test_a_full_queue_blocks_and_drops_nothing(tmp_path: Path, event_file: dict) -> None:
    gate = threading.Event()
    event_file["gate"] = gate
    records, _ = synthetic_run("healthy", n_windows=6)
    sink = TensorBoardSink(tmp_path, max_pending=2)
    producer = threading.Thread(target=lambda: [sink.write_window(r, []) for r in records])
    producer.start()
    # one job held at the gate and two queued: the fourth write_window waits
    _wait_for(lambda: sink._writer.pending == 3)
    producer.join(0.2)
    assert producer.is_alive() and sink._writer.pending == 3
    gate.set()
    producer.join(30)
    assert not producer.is_alive()
    sink.close()
    assert [s for s, _ in read_run(tmp_path).scalars["loss/train"]] == [r.step for r in records]


def test_close_drains_the_queue(tmp_path: Path, event_file: dict) -> None:
    gate = threading.Event()
    event_file["gate"] = gate
    records, findings = synthetic_run("dying_relu", n_windows=6)
    sink = TensorBoardSink(tmp_path)
    for r in records:
        sink.write_window(r, [f for f in findings if f.step == r.step])
    sink.write_final(findings)
    assert sink._writer.pending == len(records) + 1
    threading.Timer(0.1, gate.set).start()
    sink.close()  # waits for the gate, then writes everything
    assert sink._writer.pending == 0 and event_file["files"][0].closed
    run = read_run(tmp_path)
    assert run.steps() == [r.step for r in records]
    assert [f.to_dict() for f in run.findings] == [f.to_dict() for f in findings]


def test_findings_are_copied_when_queued(tmp_path: Path, event_file: dict) -> None:
    """A finding changed after write_window (by an on_finding callback) is logged as it was."""
    gate = threading.Event()
    event_file["gate"] = gate
    records, findings = synthetic_run("dying_relu", n_windows=6)
    (f,) = findings
    with TensorBoardSink(tmp_path) as sink:
        sink.write_window(records[-1], [f])
        original = f.message
        f.message = "changed later"
        gate.set()
    assert [g.message for g in read_run(tmp_path).findings] == [original]
    f.message = original


def test_an_exception_in_the_loop_keeps_every_window(tmp_path: Path, event_file: dict) -> None:
    import torch

    import gradvitals
    from conftest import digits, mlp

    gate = threading.Event()
    event_file["gate"] = gate  # no window reaches the file before the loop raises
    x, y = digits()
    torch.manual_seed(0)
    model = mlp(torch.nn.ReLU, 2, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pending_at_raise = -1
    with (
        pytest.raises(RuntimeError, match="data loader died"),
        gradvitals.watch(model, opt, every=2, log_dir=str(tmp_path), console=False) as monitor,
    ):
        for step in range(40):
            loss = torch.nn.functional.cross_entropy(model(x[:32]), y[:32])
            monitor.observe_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step == 30:
                pending_at_raise = monitor.session.sinks[0]._writer.pending
                threading.Timer(0.1, gate.set).start()
                raise RuntimeError("data loader died")
    written = [r.step for r in monitor.history]
    assert pending_at_raise >= len(written) - 1 >= 10  # all queued (bar the last) at the raise
    assert read_run(tmp_path).steps() == written


def test_an_unclosed_sink_is_drained_at_interpreter_exit(tmp_path: Path) -> None:
    code = (
        "import atexit, sys, threading\n"
        "from gradvitals.report import TensorBoardSink, _tensorboard\n"
        "from gradvitals.report._synthetic import synthetic_run\n"
        "real, gate, main = _tensorboard._open_event_file, threading.Event(), threading.main_thread()\n"
        "class Held:\n"  # the windows wait at the gate until the interpreter exits
        "    def __init__(self, fh): self.fh = fh\n"
        "    def write(self, b):\n"
        "        if threading.current_thread() is not main: gate.wait()\n"
        "        return self.fh.write(b)\n"
        "    def flush(self): self.fh.flush()\n"
        "    def close(self): self.fh.close()\n"
        "_tensorboard._open_event_file = lambda p: Held(real(p))\n"
        "records, _ = synthetic_run('healthy', n_windows=8)\n"
        "sink = TensorBoardSink(sys.argv[1])\n"
        "atexit.register(gate.set)\n"  # runs before the sink's finalizer (atexit is LIFO)
        "for r in records:\n"
        "    sink.write_window(r, [])\n"
        "print(sink._writer.pending)\n"  # exits here, the sink neither closed nor flushed
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.split()[-1] == "8", proc.stdout  # every window was queued at exit
    records, _ = synthetic_run("healthy", n_windows=8)
    assert read_run(tmp_path).steps() == [r.step for r in records]


def test_a_write_error_warns_once_and_never_raises(tmp_path: Path, event_file: dict) -> None:
    import errno

    event_file["fail"] = OSError(errno.ENOSPC, "No space left on device")
    records, findings = synthetic_run("dying_relu", n_windows=5)
    sink = TensorBoardSink(tmp_path, run_info={"model": "mlp"})
    with pytest.warns(RuntimeWarning, match="stopped writing the TensorBoard log") as caught:
        for r in records:
            sink.write_window(r, [])
            sink.flush()
        sink.write_repair(REPAIR)
        sink.write_final(findings)
        sink.close()
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "No space left on device" in msgs[0]
    run = read_run(tmp_path)  # what was written before the error is intact
    assert run.run_info["model"] == "mlp" and run.steps() == []


def test_a_failing_log_never_stops_training(tmp_path: Path, event_file: dict) -> None:
    """Strict mode (the suite's) is for gradvitals' own bugs; a full disk is not one."""
    import torch

    from conftest import digits, mlp, train

    event_file["fail"] = PermissionError(13, "Permission denied")
    torch.manual_seed(0)
    model = mlp(torch.nn.ReLU, 2, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.warns(RuntimeWarning, match="Permission denied") as caught:
        monitor = train(model, opt, digits(), steps=30, watch={"every": 2, "log_dir": tmp_path})
    assert monitor.step_count == 30 and len(monitor.history) >= 5
    assert sum("stopped writing" in str(w.message) for w in caught) == 1


def test_crc_framing_matches_tensorboards_writer(tmp_path: Path) -> None:
    from gradvitals.report._writer import frame

    for data in (b"", b"x", bytes(range(256)) * 40):
        fh = io.BytesIO()
        RecordWriter(fh).write(data)
        assert frame(data) == fh.getvalue()
