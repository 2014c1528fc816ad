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
    assert any(line.startswith("| configuration | runs |") for line in lines), out.stdout
    rows = [line for line in lines if line.startswith(("| exploding", "| saturation", "| **all**"))]
    assert len(rows) == 3, out.stdout
    assert "Repaired " in out.stdout


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
