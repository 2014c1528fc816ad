"""Smoke tests: the overhead and detection scripts run at ``--smoke`` size and print their tables.

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
    assert "| model | mode | CPU ms/step | **CPU total ratio** |" in out
    assert "| gradvitals |" in out and "| none |" in out
    assert "gradscope" in out
    data = json.loads((tmp_path / "overhead.json").read_text())
    (workload,) = data["results"].values()
    assert workload["none"]["ratio_total"] == 1.0
    gv = workload["gradvitals"]
    assert gv["info"]["windows"] > 0
    for clock in ("thread", "wall"):
        s = gv["clocks"][clock]
        # the total ratio is the ratio of the summed block times, paired block by block
        assert s["ratio_total"] == pytest.approx(sum(s["block_ms"]) / sum(s["paired_none_ms"]))
        assert len(s["block_ms"]) == data["args"]["repeats"]
        assert s["ratio_min"] <= s["ratio_median"] <= s["ratio_max"]


def test_overhead_ratio_stats_sum_every_block() -> None:
    overhead = _load("overhead")
    # one slow block (a window close) weighs in the total, not in the median
    s = overhead.ratio_stats([(100.0, 100.0), (100.0, 100.0), (400.0, 100.0)], steps=10)
    assert s["ratio_total"] == pytest.approx(2.0)
    assert s["ratio_median"] == 1.0
    assert s["ms_per_step"] == pytest.approx(20.0)


def test_overhead_profile_lists_gradvitals_functions() -> None:
    overhead = _load("overhead")
    w = overhead.workloads("cpu", full=False, smoke=True)[0]
    text = overhead.profile_gradvitals(w, "cpu", windows=2, warmup=40, top=5)
    assert "| function | calls / window |" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert 0 < len(rows) <= 5


def test_overhead_breakdown_times_the_entry_points_and_restores_them() -> None:
    overhead = _load("overhead")
    from gradvitals.torch._monitor import Monitor

    before = Monitor.__dict__["observe_loss"]
    w = overhead.workloads("cpu", full=False, smoke=True)[0]
    text, data = overhead.breakdown_gradvitals(w, "cpu", windows=2, warmup=40)
    assert Monitor.__dict__["observe_loss"] is before  # the wrappers are removed
    fns = data["functions"]
    assert fns["Monitor.observe_loss"]["calls"] == 40  # once per step, 2 windows of 20
    assert fns["Monitor._on_post_step"]["calls"] == 40
    assert fns["ParamAccumulator.commit"]["calls"] == 4  # the 2 sampled steps per window
    assert "| `Monitor.observe_loss` | 20.0 |" in text


def test_detection_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    detection = _load("detection")
    argv = ["--smoke", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path)]
    assert detection.main(argv) == 0
    out = capsys.readouterr().out
    assert "| mode | labelled | flagged | of which nested | TP | precision | recall |" in out
    assert "### Corpus" in out and "Loss-only peers" in out
    runs = json.loads((tmp_path / "detection.json").read_text())["runs"]
    assert len(runs) == 8
    assert all(r["class"] in ("healthy", "failing", "other") for r in runs)
    # a second invocation reads every run back from the cache
    assert detection.main(argv) == 0
    assert "8 runs from cache" in capsys.readouterr().out
