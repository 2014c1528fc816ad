"""Smoke tests: both benchmark scripts run at ``--smoke`` size and print their tables.

They assert that the scripts work, not what they measure (timings depend on the machine).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_overhead_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overhead = _load("overhead")
    assert overhead.main(["--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| model | mode | ms/step | ratio (median) |" in out
    assert "| gradvitals |" in out and "| none |" in out
    assert "gradscope" in out
    data = json.loads((tmp_path / "overhead.json").read_text())
    (workload,) = data["results"].values()
    assert workload["none"]["ratio_median"] == 1.0
    assert workload["gradvitals"]["info"]["windows"] > 0


def test_detection_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    detection = _load("detection")
    argv = ["--smoke", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path)]
    assert detection.main(argv) == 0
    out = capsys.readouterr().out
    assert "| mode | labelled | flagged | TP | precision | recall |" in out
    assert "### Corpus" in out and "Loss-only peers" in out
    runs = json.loads((tmp_path / "detection.json").read_text())["runs"]
    assert len(runs) == 8
    assert all(r["class"] in ("healthy", "failing", "other") for r in runs)
    # a second invocation reads every run back from the cache
    assert detection.main(argv) == 0
    assert "8 runs from cache" in capsys.readouterr().out
