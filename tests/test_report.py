"""The HTML report, the ``gradvitals report`` command and its errors, console text."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("matplotlib")

from gradvitals import FailureMode, Finding, remedies_for
from gradvitals.cli import main
from gradvitals.errors import GradvitalsError
from gradvitals.report import (
    TensorBoardSink,
    format_finding,
    read_run,
    summary_text,
    write_report,
)
from gradvitals.report._synthetic import synthetic_run
from gradvitals.stats import LayerStats, SiteStats, WindowRecord

FAILURES = ["dying_relu", "vanishing_gradient", "exploding_gradient", "saturation", "nonfinite"]


def write_run(log_dir: Path, mode: str, *, repair: bool = False) -> list[Finding]:
    records, findings = synthetic_run(mode)
    with TensorBoardSink(log_dir, run_info={"mode": mode}) as sink:
        for r in records:
            sink.write_window(r, [f for f in findings if f.step == r.step])
        if repair and findings:
            f = findings[0]
            sink.write_repair(
                {
                    "step": f.step,
                    "action": f.remedies[0].key,
                    "reason": f.message,
                    "kind": f.kind.value,
                    "layer": f.layer,
                    "healthy_after": True,
                }
            )
        sink.write_final(findings)
    return findings


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, list[Finding]]]:
    out = {}
    for mode in ["healthy", *FAILURES]:
        d = tmp_path_factory.mktemp(mode)
        findings = write_run(d, mode, repair=mode == "dying_relu")
        out[mode] = (write_report(d).read_text(encoding="utf-8"), findings)
    return out


@pytest.mark.parametrize("mode", FAILURES)
def test_report_names_kind_layer_and_remedy(reports: dict, mode: str) -> None:
    page, findings = reports[mode]
    (f,) = findings
    assert "Not healthy: 1 failure found" in page
    assert f'<span class="kind">{mode}</span>' in page
    if f.layer:
        assert f"<code>{html.escape(f.layer)}</code>" in page
    first = f.remedies[0]
    assert f"What to do first: <strong>{html.escape(first.action)}</strong>" in page
    for r in f.remedies:
        assert html.escape(r.action) in page
        assert html.escape(r.code) in page
    assert html.escape(f.message) in page


def test_healthy_report_says_so(reports: dict) -> None:
    page, _ = reports["healthy"]
    assert "Healthy: No failures found" in page
    assert "No failures found in 12 windows (steps 10–120)" in page
    assert "No findings and no repairs." in page
    assert "What to do first" not in page


def test_report_sections_and_embedded_images(reports: dict) -> None:
    page, _ = reports["dying_relu"]
    for sec in ("summary", "heatmaps", "grad-norms", "timeline", "final-stats"):
        assert f'<section id="{sec}">' in page
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)
    assert len(images) == 5  # heat maps: dead units, grad norm, update ratio; norms; loss
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "Dead units heat map" in page and "gradient norms per layer" in page


def test_saturation_run_has_a_saturation_heatmap(reports: dict) -> None:
    page, _ = reports["saturation"]
    assert 'alt="Saturation heat map"' in page and 'alt="Dead units heat map"' not in page


def test_timeline_shows_repairs(reports: dict) -> None:
    page, _ = reports["dying_relu"]
    assert '<span class="kind repair">repair</span>' in page
    assert "Applied <code>lower_lr</code>" in page and "Healthy after." in page
    assert "1 repair</li>" not in page and "<strong>1</strong> repair (1 healthy after)" in page


def test_final_statistics_table(reports: dict) -> None:
    page, _ = reports["dying_relu"]
    table = page[page.index('<section id="final-stats">') :]
    for layer in ("net.0", "net.1", "net.2", "net.3", "net.4"):
        assert f"<code>{layer}</code>" in table
    assert "dead fraction" in table and "update ratio" in table and "dying_relu" in table


def test_hostile_layer_names_are_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    rec = WindowRecord(
        index=0,
        step_start=1,
        step_end=10,
        sites={
            evil: SiteStats(
                evil,
                "relu",
                units=2,
                n_examples=4,
                n_elements=8,
                n_zero=8,
                ever_positive=np.array([True, False]),
            )
        },
        layers={
            evil: LayerStats(evil, grad_norm=1.0, weight_norm=1.0, update_norm=0.001),
            "$x_1$": LayerStats("$x_1$", grad_norm=2.0, weight_norm=1.0, update_norm=0.001),
        },
    )
    rem = remedies_for(FailureMode.DYING_RELU)
    f = Finding(FailureMode.DYING_RELU, evil, 10, "<img src=x onerror=alert(2)> dead", remedies=rem)
    with TensorBoardSink(tmp_path, run_info={"<b>": "<i>"}) as sink:
        sink.write_window(rec, [f])
        sink.write_repair({"step": 10, "action": "<u>", "kind": "dying_relu", "layer": evil})
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "<b>" not in page and "<u>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script") == 0


def test_log_without_windows_is_not_called_healthy(tmp_path: Path) -> None:
    TensorBoardSink(tmp_path, run_info={"model": "mlp"}).close()  # crashed before the first sync
    run = read_run(tmp_path)
    assert run.steps() == [] and run.run_info["model"] == "mlp"
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "No statistics yet" in page and "Healthy" not in page


def test_cli_writes_report_and_prints_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "run", "vanishing_gradient")
    out = tmp_path / "out" / "page.html"
    assert main(["report", str(tmp_path / "run"), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "vanishing_gradient" in out.read_text(encoding="utf-8")
    assert main(["report", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report.html").exists()


def test_parent_dir_with_one_run_and_event_file_path(tmp_path: Path) -> None:
    write_run(tmp_path / "logs" / "run1", "healthy")
    assert read_run(tmp_path / "logs").log_dir == tmp_path / "logs" / "run1"
    (event,) = (tmp_path / "logs" / "run1").glob("events.out.tfevents.*")
    assert read_run(event).steps()[-1] == 120
    write_run(tmp_path / "logs" / "run2", "healthy")
    with pytest.raises(GradvitalsError, match="holds 2 runs, not one; pass one of them"):
        read_run(tmp_path / "logs")


def _valid_log(d: Path) -> Path:
    write_run(d, "dying_relu")
    (event,) = d.glob("events.out.tfevents.*")
    return event


def _missing(d: Path) -> Path:
    return d / "nope"


def _no_events(d: Path) -> Path:
    (d / "notes.txt").write_text("hi")
    return d


def _empty_file(d: Path) -> Path:
    (d / "events.out.tfevents.123.host").write_bytes(b"")
    return d


def _truncated(d: Path) -> Path:
    event = _valid_log(d)
    data = event.read_bytes()
    event.write_bytes(data[: len(data) - 30])
    return d


def _corrupt(d: Path) -> Path:
    event = _valid_log(d)
    data = bytearray(event.read_bytes())
    data[len(data) // 2] ^= 0xFF
    event.write_bytes(bytes(data))
    return d


def _not_tfrecord(d: Path) -> Path:
    (d / "events.out.tfevents.123.host").write_bytes(b"this is not a TFRecord file at all\n")
    return d


def _foreign(d: Path) -> Path:
    """A Keras-style log: other scalar tags, no gradvitals ones."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    with open(d / "events.out.tfevents.123.host", "wb") as fh:
        rw = RecordWriter(fh)
        for step in (1, 2):
            value = summary_pb2.Summary.Value(tag="epoch_loss", simple_value=0.5 / step)
            event = event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[value]))
            rw.write(event.SerializeToString())
    return d


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "does not exist"),
        (_no_events, "no TensorBoard event files"),
        (_empty_file, "is empty (0 bytes)"),
        (_truncated, "is truncated at byte"),
        (_corrupt, "is corrupt"),
        (_not_tfrecord, "is corrupt"),
        (_foreign, "no gradvitals statistics found in"),
    ],
)
def test_bad_logs_print_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    path = make(tmp_path)
    capsys.readouterr()
    assert main(["report", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gradvitals report: error: ")
    assert message in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_foreign_log_message_says_how_to_write_one(tmp_path: Path) -> None:
    with pytest.raises(
        GradvitalsError, match=r"was it written by gradvitals\.watch\(\.\.\., log_dir=\.\.\.\)\?"
    ):
        read_run(_foreign(tmp_path))


def test_format_finding() -> None:
    f = Finding(
        FailureMode.DYING_RELU,
        "net.3",
        120,
        "62% of units dead",
        remedies=remedies_for(FailureMode.DYING_RELU),
    )
    assert format_finding(f) == (
        "gradvitals: step 120 dying_relu in net.3: 62% of units dead. "
        "Try: Lower the learning rate (try 10x lower)"
    )
    g = Finding(FailureMode.NONFINITE, None, 5, "loss is NaN.", final=True)
    assert format_finding(g) == "gradvitals: step 5 nonfinite: loss is NaN. Could not repair."


def test_summary_text() -> None:
    assert summary_text([], history_len=1) == "gradvitals: healthy, no failures found in 1 window."
    records, findings = synthetic_run("exploding_gradient")
    sat = synthetic_run("saturation")[1]
    repairs = [
        {
            "step": 80,
            "action": "clip_grad_norm",
            "kind": "exploding_gradient",
            "layer": None,
            "reason": "norm 1e4",
            "healthy_after": False,
        }
    ]
    text = summary_text(sat + findings, history_len=len(records), repairs=repairs)
    lines = text.splitlines()
    assert lines[0] == "gradvitals: 2 failures found in 12 windows."
    # exploding outranks saturation: its first remedy comes first
    assert lines[1] == f"Do this first (exploding_gradient): {findings[0].remedies[0].action}"
    assert "    " + findings[0].remedies[0].code in lines
    assert any(line.startswith("1. step") and "saturation in net.3" in line for line in lines)
    assert "Repairs:" in lines
    assert (
        lines[-1]
        == "  step 80 clip_grad_norm for exploding_gradient: norm 1e4 (still failing after)"
    )
