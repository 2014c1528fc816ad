"""Fast checks of the public-bug corpus (``benchmarks/bugs``): metadata, the registry, two
training steps of every variant, and the ``--quick`` smoke run. No full runs here: the
full measurement is ``python benchmarks/bugs/run.py``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bugs._case import MARGINS, REMEDY_KEYS, BugCase, Outcome, final_loss
from bugs._registry import get, load_all, select

from gradvitals.findings import Cause, FailureMode

CASES = load_all()
TORCH = [c for c in CASES if c.framework == "torch"]
KERAS = [c for c in CASES if c.framework == "keras"]
HAS_KERAS = importlib.util.find_spec("keras") is not None


def _noop_run(variant: str, watch: object, steps: int, seed: int) -> Outcome:
    return Outcome(0.0, 1.0, "accuracy", False, steps)


def _case(**overrides: object) -> BugCase:
    fields: dict[str, object] = {
        "id": "x_case",
        "url": "https://example.org/issue/1",
        "framework": "torch",
        "title": "t",
        "report": "r.",
        "symptom": FailureMode.NONFINITE,
        "cause": Cause.LEARNING_RATE,
        "first_remedy": "lower_lr",
        "repairable": True,
        "run": _noop_run,
    }
    fields.update(overrides)
    return BugCase(**fields)  # type: ignore[arg-type]


# -- metadata ----------------------------------------------------------------------------
def test_corpus_size_and_frameworks() -> None:
    assert len(CASES) >= 34
    assert len(KERAS) >= 8
    assert len(TORCH) + len(KERAS) == len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case_metadata(case: BugCase) -> None:
    assert isinstance(case.symptom, FailureMode)
    assert isinstance(case.cause, Cause)
    assert case.cause is not Cause.UNKNOWN  # every report states why it failed
    assert case.first_remedy in REMEDY_KEYS
    assert case.url.startswith("https://") and " " not in case.url
    assert case.framework in ("torch", "keras")
    assert case.id.startswith(case.framework + "_")
    assert case.metric in MARGINS
    assert 2 <= case.report.count(". ") + 1 <= 5  # 2-4 sentences, in our words
    module = sys.modules[case.run.__module__]
    assert case.url in (module.__doc__ or "")  # the docstring cites the report too


def test_bugcase_validation_teaches() -> None:
    assert _case().id == "x_case"
    with pytest.raises(ValueError, match="first_remedy 'lower_learning_rate' is not a remedy"):
        _case(first_remedy="lower_learning_rate")
    with pytest.raises(ValueError, match="framework 'jax' must be 'torch' or 'keras'"):
        _case(framework="jax")
    with pytest.raises(ValueError, match="must be an https:// address"):
        _case(url="github.com/x/y/issues/1")
    with pytest.raises(ValueError, match=r"must be a gradvitals\.FailureMode"):
        _case(symptom="nonfinite")


def test_registry_get_is_strict() -> None:
    assert get("torch_nan_inputs").framework == "torch"
    with pytest.raises(KeyError, match="Did you mean: torch_nan_inputs"):
        get("torch_nan_input")
    with pytest.raises(KeyError, match="framework must be 'torch' or 'keras'"):
        select(framework="jax")
    assert {c.framework for c in select(framework="keras")} == {"keras"}


# -- outcome arithmetic ------------------------------------------------------------------
def test_outcome_score_floors_and_clips() -> None:
    assert Outcome(0.1, 0.9, "accuracy", False, 5).score == 0.9
    assert Outcome(math.nan, math.nan, "accuracy", True, 5).score == 0.0
    assert Outcome(0.1, -7.5, "r2", False, 5).score == -1.0
    assert Outcome(0.1, 0.25, "r2", False, 5).score == 0.25


def test_final_loss_is_the_tail_mean_or_nan() -> None:
    assert final_loss([9.0, 1.0, 3.0], last=2) == 2.0
    assert math.isnan(final_loss([1.0, math.inf], last=2))
    assert math.isnan(final_loss([]))


# -- two steps of every variant ----------------------------------------------------------
@pytest.mark.parametrize("case", TORCH, ids=lambda c: c.id)
def test_torch_variants_run_two_steps(case: BugCase) -> None:
    for variant in ("buggy", "fixed"):
        o = case.run(variant, None, 2, 0)
        assert o.metric_name == case.metric
        assert o.steps == 2


@pytest.mark.skipif(not HAS_KERAS, reason="keras is not installed")
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::SyntaxWarning")  # Keras on softmax(1)
@pytest.mark.parametrize("case", KERAS, ids=lambda c: c.id)
def test_keras_variants_run_two_steps(case: BugCase) -> None:
    for variant in ("buggy", "fixed"):
        o = case.run(variant, None, 2, 0)
        assert o.metric_name == case.metric
        assert o.steps == 2


# -- the runner --------------------------------------------------------------------------
def _runner() -> ModuleType:
    if "bugs_run" in sys.modules:
        return sys.modules["bugs_run"]
    spec = importlib.util.spec_from_file_location(
        "bugs_run", Path(__file__).resolve().parents[1] / "benchmarks" / "bugs" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def test_watch_records_a_refused_attach() -> None:
    import torch

    run = _runner()
    model, other = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    refused = run.Watch("torch")
    tap = refused(model, torch.optim.SGD(other.parameters(), lr=0.1))
    assert refused.attach_error and "optimizer" in refused.attach_error
    assert refused.attached == [] and tap.observe(torch.tensor(1.0)) is None
    accepted = run.Watch("torch")
    accepted(model, torch.optim.SGD(model.parameters(), lr=0.1)).close()
    assert accepted.attach_error is None and len(accepted.attached) == 1


def test_describe_finding_reads_missing_fields_as_none() -> None:
    run = _runner()

    class Old:  # a finding from a gradvitals without causes or remedies
        kind = FailureMode.NONFINITE

    d = run.describe_finding(Old())
    assert d["kind"] == "nonfinite" and d["cause"] is None and d["first_remedy"] is None


def test_quick_smoke_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _runner()
    out = tmp_path / "quick.json"
    assert run.main(["--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| case | fw | expected symptom |" in printed
    assert "Bug reproduces:" in printed
    data = json.loads(out.read_text())
    assert [r["id"] for r in data["cases"]] == list(run.QUICK_IDS)
    assert data["totals"]["cases"] == 3
    for r in data["cases"]:
        assert {"symptom_found", "cause_right", "remedy_right", "false_alarm"} <= set(r)
        assert isinstance(r["reproduces"], bool)


def test_unknown_id_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    run = _runner()
    with pytest.raises(SystemExit) as e:
        run.main(["--ids", "torch_nan_input"])
    assert e.value.code == 2
    assert "Did you mean: torch_nan_inputs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name",
    [
        "bugs._case",
        "bugs._data",
        "bugs._registry",
        "bugs.torch_cases._common",
        "bugs.keras_cases._common",
    ],
)
def test_corpus_doctests(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0 and result.failed == 0
