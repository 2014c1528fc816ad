"""`gradvitals demo` and the command's help: what `make demo` runs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gradvitals._progress import Progress, progress
from gradvitals.cli import main


def test_demo_writes_logs_and_reports_and_diagnoses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "healthy", "vanishing", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "healthy: no findings" in out
    assert "vanishing_gradient in 0" in out and "ReLU" in out
    assert f"tensorboard --logdir {tmp_path}" in out
    for case in ("healthy", "vanishing"):
        assert list((tmp_path / case).glob("events.out.tfevents.*"))
        assert (tmp_path / case / "report.html").stat().st_size > 10_000


def test_demo_leads_with_the_cause_and_keeps_a_snippet_aligned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the nonfinite case's loss is log(softmax(z)): the cause is the loss, not the lr
    assert main(["demo", "nonfinite", "--log-dir", str(tmp_path), "--no-report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("   step 0: nonfinite"))
    assert lines[at + 1].startswith("     cause: unstable_loss (")
    assert lines[at + 2].startswith("     -> ") and "log_softmax" in lines[at + 2]
    # the remedy's later code lines are indented under the first, not at column 0
    assert lines[at + 3].startswith("        loss = F.nll_loss")


def test_unknown_demo_case_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "nope", "--log-dir", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "healthy" in err[0]


@pytest.mark.parametrize("cmd", [[], ["demo"], ["report"], ["activations"], ["lab"]])
def test_help_everywhere(cmd: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: gradvitals" in capsys.readouterr().out


# -- progress output: a bar on a terminal, plain lines elsewhere ------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_writes_one_line_per_item() -> None:
    out = io.StringIO()
    items = list(progress(["a", "b", "c"], desc="lab", file=out, min_seconds=0.0))
    assert items == ["a", "b", "c"]
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == ["lab: 1/3", "lab: 2/3", "lab: 3/3"]
    assert lines[3].startswith("lab: done, 3/3 in ") and len(lines) == 4


def test_progress_bar_items_are_its_descriptions_off_a_terminal() -> None:
    out = io.StringIO()
    bar = Progress(6, "demo: healthy", file=out, min_seconds=0.0)
    for case in ("healthy", "vanishing"):
        bar.set_description(f"demo: {case}")
        for _ in range(3):
            bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("demo: healthy: 3/6 (")
    assert lines[1].startswith("demo: vanishing: done, 6/6 in ") and len(lines) == 2


def test_progress_heartbeat_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long item still writes a line every ``heartbeat`` seconds, never a frame."""
    import gradvitals._progress as P

    clock = [0.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: clock[0])
    out = io.StringIO()
    bar = Progress(100, "lab", file=out, min_seconds=0.0, heartbeat=30.0)
    for _ in range(100):  # 100 units, 1 s apart: lines at 30, 60, 90 s
        clock[0] += 1.0
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "lab: 30/100 (30.0s)",
        "lab: 60/100 (60.0s)",
        "lab: 90/100 (90.0s)",
        "lab: done, 100/100 in 100.0s",
    ]


def test_progress_on_a_terminal_redraws_one_line() -> None:
    out = Terminal()
    bar = Progress(3, "demo", file=out, min_seconds=0.0)
    for _ in range(3):
        bar.update()
        bar._last = 0.0  # no 0.1 s throttle in a test
    bar.close()
    text = out.getvalue()
    assert text.count("\r") >= 3 and text.endswith("\n") and text.count("\n") == 1
    assert "[########################] 3/3" in text


def test_progress_is_silent_for_quick_work_and_after_abort() -> None:
    out = io.StringIO()
    with Progress(3, "quick", file=out) as bar:  # min_seconds=2: nothing to show
        bar.update(3)
    assert out.getvalue() == ""
    term = Terminal()
    bar = Progress(3, "x", file=term, min_seconds=0.0)
    bar.update()
    bar.abort()
    bar.close()
    assert term.getvalue().endswith("\r\x1b[K")  # the half-drawn bar is wiped, no newline


def test_demo_progress_in_a_captured_log_has_no_frames(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under capture stderr is not a terminal: plain lines, no carriage-return frames."""
    import gradvitals._progress as P

    class Eager(P.Progress):  # show from the start, not after 2 s
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **{**kwargs, "min_seconds": 0.0})  # type: ignore[arg-type]

    monkeypatch.setattr(P, "Progress", Eager)
    assert main(["demo", "healthy", "--no-report", "--log-dir", str(tmp_path)]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err
    assert "demo: healthy: done" in err
