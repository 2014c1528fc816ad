"""``gradvitals report`` on bad input: exit status 2, one line on stderr, no traceback.

Each case builds the bad log, runs the command and checks the line names the
problem and the fix. Unreadable files are made both with ``chmod 000`` (skipped when
the process reads anything anyway, as root does) and with a ``PermissionError``
injected at the call that reads them.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("matplotlib")

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from gradvitals import FailureMode, Finding, remedies_for
from gradvitals.cli import main
from gradvitals.report import TensorBoardSink, _records, read_run
from gradvitals.report import _tags as T
from gradvitals.report._synthetic import synthetic_run


def chmod_denies(tmp: Path) -> bool:
    """True when ``chmod 000`` keeps this process out (not so for root, which reads
    anything unless it runs without CAP_DAC_OVERRIDE)."""
    probe = tmp / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        probe.read_text()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o600)
        probe.unlink()
    return False


def write_run(d: Path, mode: str = "dying_relu") -> Path:
    records, findings = synthetic_run(mode, n_windows=4)
    with TensorBoardSink(d, run_info={"mode": mode}) as sink:
        for r in records:
            sink.write_window(r, [f for f in findings if f.step == r.step])
        sink.write_final(findings)
    (event,) = d.glob("events.out.tfevents.*")
    return event


def write_raw(d: Path, events: list[event_pb2.Event], name: str = "1.test") -> Path:
    """Frame ``events`` into an event file, as any TensorBoard writer would."""
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"events.out.tfevents.{name}"
    with open(path, "wb") as fh:
        rw = RecordWriter(fh)
        rw.write(event_pb2.Event(file_version="brain.Event:2").SerializeToString())
        for ev in events:
            rw.write(ev.SerializeToString())
    return path


def scalar_events(tag: str, steps: tuple[int, ...] = (1, 2, 3)) -> list[event_pb2.Event]:
    return [
        event_pb2.Event(
            step=s,
            summary=summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag=tag, simple_value=0.5)]
            ),
        )
        for s in steps
    ]


def text_event(tag: str, text: str, step: int = 10) -> event_pb2.Event:
    """A text-plugin summary, the way TensorBoardSink writes its JSON."""
    sink_pb = __import__("gradvitals.report._tensorboard", fromlist=["_Protos"])._Protos()
    value = sink_pb.text(tag, text)
    return event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[value]))


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command; assert exit 2, one stderr line, no traceback; return the line."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert lines[0].startswith(f"gradvitals {argv[0]}: error: ")
    return lines[0]


# -- unreadable ------------------------------------------------------------------------


def deny(path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Make ``path`` unreadable: chmod 000 (not root), or fail the call that reads it."""
    if how == "chmod":
        if not chmod_denies(path.parent):
            pytest.skip("this process reads files whatever their mode (root); 'inject' covers it")
        path.chmod(0)
        return
    err = PermissionError(13, "Permission denied", str(path))
    if path.is_dir():
        real_iterdir = pathlib.Path.iterdir

        def iterdir(self: Path):  # type: ignore[no-untyped-def]
            if self == path:
                raise err
            return real_iterdir(self)

        monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    else:
        real_open = open

        def fake_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
            if Path(file) == path:
                raise err
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(_records, "open", fake_open, raising=False)


@pytest.fixture
def restore_mode(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield
    for p in [tmp_path, *tmp_path.rglob("*")]:
        p.chmod(0o755)


@pytest.mark.parametrize("how", ["chmod", "inject"])
def test_unreadable_log_dir(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    restore_mode: None,
) -> None:
    d = tmp_path / "run"
    write_run(d)
    deny(d, monkeypatch, how)
    line = fails(["report", str(d)], capsys)
    assert f"cannot read {d}: permission denied" in line and "chmod u+rx" in line


@pytest.mark.parametrize("how", ["chmod", "inject"])
def test_unreadable_event_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    restore_mode: None,
) -> None:
    event = write_run(tmp_path / "run")
    deny(event, monkeypatch, how)
    line = fails(["report", str(tmp_path / "run")], capsys)
    assert f"cannot read {event}: permission denied" in line and "chmod u+r" in line


def test_os_error_outside_the_reader_is_one_line_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A safety net: an OSError the reader did not foresee still prints one line."""
    write_run(tmp_path / "run")
    import gradvitals.report._html as H

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error", "/dev/sdz")

    monkeypatch.setattr(H, "read_run", boom)
    line = fails(["report", str(tmp_path / "run")], capsys)
    assert line.endswith("error: Input/output error (/dev/sdz)")


# -- not a log, or not ours ------------------------------------------------------------


def test_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["report", str(tmp_path / "nope")], capsys)
    assert "does not exist" in line and "gradvitals.watch(..., log_dir=...)" in line


def test_directory_without_event_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    line = fails(["report", str(tmp_path)], capsys)
    assert "no TensorBoard event files" in line


@pytest.mark.parametrize("tag", ["loss/train", "gradvitals/loss/train", "grad_norm_total/model"])
def test_foreign_log_with_only_a_loss_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tag: str
) -> None:
    """A plain SummaryWriter log whose only tag happens to be ``loss/train`` is not a
    healthy gradvitals run."""
    write_raw(tmp_path, scalar_events(tag))
    line = fails(["report", str(tmp_path)], capsys)
    assert "not a gradvitals log" in line and T.canonical_tag(tag) in line
    assert not (tmp_path / "report.html").exists()


def test_a_gradvitals_log_with_prefixed_tags_is_accepted(tmp_path: Path) -> None:
    """A writer may namespace every tag (``gradvitals/dead_fraction/...``)."""
    events = scalar_events("gradvitals/dead_fraction/net.1") + scalar_events(
        "gradvitals/loss/train"
    )
    write_raw(tmp_path, events)
    run = read_run(tmp_path)
    assert run.layers("dead_fraction") == ["net.1"]
    assert [s for s, _ in run.scalars[T.LOSS_TAG]] == [1, 2, 3]
    assert run.steps() == [1, 2, 3]


# -- damaged files ---------------------------------------------------------------------


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "events.out.tfevents.1.host").write_bytes(b"")
    assert "is empty (0 bytes)" in fails(["report", str(tmp_path)], capsys)


@pytest.mark.parametrize("keep", [5, -30])
def test_truncated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], keep: int) -> None:
    """Cut inside the first header (5 bytes kept) or inside the last record."""
    event = write_run(tmp_path)
    data = event.read_bytes()
    event.write_bytes(data[:keep])
    line = fails(["report", str(tmp_path)], capsys)
    assert "is truncated at byte" in line and "--allow-truncated" in line


def test_allow_truncated_reads_up_to_the_cut_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = write_run(tmp_path)
    whole = read_run(tmp_path)
    data = event.read_bytes()
    event.write_bytes(data[:-30])  # the last record (the final summary) is cut
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--allow-truncated"]) == 0
    captured = capsys.readouterr()
    notes = [x for x in captured.err.splitlines() if x.startswith("gradvitals report: note:")]
    (note,) = notes  # one line (progress lines, if it ran past 2 s, are the others)
    assert note.startswith("gradvitals report: note: event file ")
    assert f"ends in a partial record at byte {_last_record_start(data)}" in note
    assert captured.out.strip() == str(tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'class="note"' in page and "ends in a partial record" in page
    run = read_run(tmp_path, allow_truncated=True)
    assert run.steps() == whole.steps()  # every window came before the cut
    assert run.notes and "read its first" in run.notes[0]


def _last_record_start(data: bytes) -> int:
    """The byte at which the last record of a well-formed event file starts."""
    pos = last = 0
    while pos < len(data):
        last = pos
        pos += 16 + int.from_bytes(data[pos : pos + 8], "little")
    return last


def test_corrupt_record_is_caught_unless_checks_are_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flipped bit inside a float: only the data checksum can see it."""
    event = write_run(tmp_path)
    before = read_run(tmp_path).scalars[T.LOSS_TAG][-1][1]
    data = bytearray(event.read_bytes())
    at = data.rindex(b"loss/train\x15") + len("loss/train\x15")  # the last loss's float
    data[at] ^= 0x01  # its lowest mantissa byte
    event.write_bytes(bytes(data))
    assert "fails its data checksum" in fails(["report", str(tmp_path)], capsys)
    assert main(["report", str(tmp_path), "--no-verify"]) == 0
    after = read_run(tmp_path, verify=False).scalars[T.LOSS_TAG][-1][1]
    assert after != before and after == pytest.approx(before, rel=1e-5)


def test_record_that_is_not_an_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    with open(path, "wb") as fh:
        RecordWriter(fh).write(b"\xff\xff\xff\xff not a protobuf")
    line = fails(["report", str(tmp_path)], capsys)
    assert "holds a record that is not an Event" in line and "delete or replace it" in line


# -- malformed JSON in our own text tags ------------------------------------------------


def _finding() -> dict:
    f = Finding(
        FailureMode.DYING_RELU, "net.1", 10, "dead", remedies=remedies_for(FailureMode.DYING_RELU)
    )
    return f.to_dict()


@pytest.mark.parametrize(
    ("tag", "text", "message"),
    [
        (T.FINDINGS_JSON_TAG, '[{"kind": "dying_relu", ', "findings_json at step 10 is not valid"),
        (T.FINAL_JSON_TAG, "not json", "final_findings_json at step 10 is not valid JSON"),
        (T.REPAIRS_JSON_TAG, "{", "repairs_json at step 10 is not valid JSON"),
        (T.RUN_INFO_TAG, "{'single': 'quotes'}", "run_info is not valid JSON"),
        (T.FINDINGS_JSON_TAG, json.dumps([{"kind": "no_such_kind"}]), "cannot read a finding"),
        (T.FINDINGS_JSON_TAG, json.dumps([{**_finding(), "cause": "gremlins"}]), "cannot read a"),
        (T.FINDINGS_JSON_TAG, json.dumps([{**_finding(), "remedies": ["x"]}]), "cannot read a"),
        (T.FINDINGS_JSON_TAG, json.dumps([{**_finding(), "consequences": [1]}]), "cannot read a"),
    ],
)
def test_malformed_json_in_our_text_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tag: str, text: str, message: str
) -> None:
    write_run(tmp_path)  # a good log, plus one bad text record in a second file
    write_raw(tmp_path, [text_event(tag, text)], name="2.test")
    line = fails(["report", str(tmp_path)], capsys)
    assert message in line
    assert "delete its event file" in line or "pip install -U gradvitals" in line


# -- the process, end to end -----------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda d: d / "nope",
        lambda d: write_raw(d, scalar_events("loss/train")).parent,
    ],
    ids=["missing", "foreign"],
)
def test_process_exits_2_with_one_line(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "gradvitals", "report", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
