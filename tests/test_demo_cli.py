"""`gradvitals demo` and the command's help: what `make demo` runs."""

from __future__ import annotations

from pathlib import Path

import pytest

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
