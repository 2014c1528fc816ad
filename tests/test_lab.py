"""The lab at smoke size: every experiment runs, writes its files, and its measured
numbers point the way the claim says (or the verdict says why not)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tensorboard")

from conftest import seeded
from gradvitals import lab
from gradvitals.cli import main
from gradvitals.errors import UsageError
from gradvitals.lab import LabResult

_cache: dict[str, LabResult] = {}


@pytest.fixture(scope="module")
def out_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="module")
def result(out_root: Path) -> Any:
    """``result(name)``: the smoke-size run of ``name`` (run once per module)."""

    def get(name: str) -> LabResult:
        if name not in _cache:
            with warnings.catch_warnings():
                # gradvitals' "stopped watching after an internal error" must never happen
                warnings.filterwarnings("error", message="gradvitals stopped watching")
                _cache[name] = lab.run(
                    name, smoke=True, out=out_root / name, progress=False, seed=seeded(0)
                )
        return _cache[name]

    return get


@pytest.mark.parametrize("name", lab.names())
def test_every_experiment_writes_summary_figures_and_tensorboard(result: Any, name: str) -> None:
    r = result(name)
    assert r.name == name and r.size == "smoke" and r.claim
    assert r.out_dir is not None
    summary = (r.out_dir / "summary.md").read_text(encoding="utf-8")
    assert r.verdict in summary and r.claim in summary
    assert any(ch.isdigit() for ch in r.verdict), "the verdict quotes its numbers"
    assert r.figures and all(p.suffix == ".png" and p.exists() for p in r.figures)
    assert all(p.stat().st_size < 200_000 for p in r.figures)
    assert isinstance(r.table, list) and r.table
    assert 0 < r.seconds < 300  # a runaway guard, not a benchmark: 1-8 s each here
    if name != "born-dead":  # born-dead's nets are watched for one step, without a log
        assert list((r.out_dir / "tb").glob("*/events.out.tfevents.*"))


def test_linear_collapse_deep_linear_equals_logreg_and_relu_beats_both(result: Any) -> None:
    n = result("linear-collapse").numbers
    for data, lin in n["linear_train_acc"].items():
        assert abs(lin - n["logreg_train_acc"][data]) <= 0.02
        assert n["relu_train_acc"][data] > lin + 0.05
    assert n["collapse_max_abs_diff"] < 1e-5
    assert result("linear-collapse").holds is True


def test_relu_reaches_the_target_in_fewer_steps_than_sigmoid(result: Any) -> None:
    steps = result("relu-vs-sigmoid").numbers["steps"]
    assert all(math.isfinite(s) for s in steps["relu"])
    assert all(r < s for r, s in zip(steps["relu"], steps["sigmoid"], strict=True))
    assert result("relu-vs-sigmoid").numbers["speedup_median"]["sigmoid"] > 2


def test_vanishing_fires_on_deep_sigmoid_not_on_relu_he(result: Any) -> None:
    r = result("vanishing")
    assert r.numbers["fired"]["sigmoid+default"] is True
    assert r.numbers["fired"]["relu+He"] is False
    factors = r.numbers["delta_factor"]
    assert factors["sigmoid+default"] < 0.2 < 0.8 < factors["relu+He"] < 1.2


def test_exploding_high_lr_diverges_low_lr_does_not_and_gradvitals_fires(result: Any) -> None:
    r = result("exploding")
    rows = r.table
    assert isinstance(rows, list)
    lo, hi = min(x["lr"] for x in rows), max(x["lr"] for x in rows)
    assert any(x["diverged"] for x in rows if x["lr"] == hi and x["variant"] == "plain")
    assert not any(x["diverged"] for x in rows if x["lr"] == lo)
    diverged = [x for x in rows if x["diverged"]]
    assert all(
        x["exploding fired at"] is not None or x["nonfinite fired at"] is not None for x in diverged
    )


def test_dying_relu_dies_more_than_leaky_at_high_lr(result: Any) -> None:
    r = result("dying-relu")
    dead = r.numbers["dead"]
    assert dead["relu@0.03"] > dead["leaky_relu@0.03"]
    assert dead["relu@0.03"] > dead["relu@0.001"]
    assert r.out_dir is not None  # the never-positive fraction of every activation, in TensorBoard
    assert list((r.out_dir / "tb" / "leaky_relu-lr0.03-s0").glob("events.out.tfevents.*.lab"))


def test_born_dead_monte_carlo_matches_the_closed_form(result: Any) -> None:
    r = result("born-dead")
    rows = r.table
    assert isinstance(rows, list)
    for row in rows:
        assert abs(row["P(x>0 dead) MC"] - row["closed form"]) <= row["tolerance"]
        assert row["P(born dead) MC"] <= row["closed form"] + row["tolerance"]
    agreed, checked = map(int, r.numbers["monitor_agreement"].split("/"))
    assert agreed == checked > 0


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    a = lab.run("born-dead", smoke=True, out=tmp_path / "a", progress=False, trials=500)
    b = lab.run("born-dead", smoke=True, out=tmp_path / "b", progress=False, trials=500)
    assert a.numbers["cells"] == b.numbers["cells"]


def test_unknown_experiment_lists_the_valid_names() -> None:
    with pytest.raises(UsageError, match="valid names: linear-collapse, relu-vs-sigmoid"):
        lab.run("no-such-experiment")


def test_unknown_option_lists_the_valid_options() -> None:
    with pytest.raises(UsageError, match=r"unknown option 'trails'.*valid options: .*trials"):
        lab.run("born-dead", smoke=True, trails=10)


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    for name in lab.names():
        assert name in out


def test_cli_unknown_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "no-such-experiment"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_cli_runs_an_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["lab", "born-dead", "--smoke", "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--set", "trials=500", "--set", "widths=3,10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("born-dead: holds") and (tmp_path / "summary.md").exists()
    assert main([*argv, "--set", "trials"]) == 2
