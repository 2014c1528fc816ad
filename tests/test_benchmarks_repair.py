"""The repair benchmark runs: ``python benchmarks/repair.py --smoke``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_repair_benchmark_smoke_runs_and_prints_a_table() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "repair.py"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert any(line.startswith("| configuration | real fix | runs |") for line in lines), out.stdout
    rows = [line for line in lines if line.startswith(("| exploding", "| saturation", "| **all**"))]
    assert len(rows) == 3, out.stdout
    assert "Repaired runs within 5 accuracy points of the real fix" in out.stdout
    assert "| exploding | lr 0.03 |" in out.stdout  # each row names its real fix


def test_margin_is_judged_on_the_mean_over_seeds() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_repair", ROOT / "benchmarks" / "repair.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    assert mod.within_margin({"rep": [0.92, 0.90], "fix": [0.95, 0.95]}, 0.05)
    assert not mod.within_margin({"rep": [0.50, 0.96], "fix": [0.95, 0.95]}, 0.05)
    # every configuration names its real fix
    assert all(c.fix_note for c in mod.CONFIGS)


def test_repair_benchmark_rejects_unknown_configurations() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "repair.py"), "--configs", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "unknown configuration(s) nope; choose from exploding" in out.stderr
