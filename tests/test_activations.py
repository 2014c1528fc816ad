"""The activation catalog: numpy f and f' against torch, and every property checked numerically."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from gradvitals import activations
from gradvitals.activations import Activation, Saturation
from gradvitals.cli import main
from gradvitals.errors import UsageError

TorchFn = Callable[[torch.Tensor], torch.Tensor]

#: catalog name -> torch functional reference (float64)
TORCH: dict[str, TorchFn] = {
    "identity": lambda x: x * 1.0,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "hardsigmoid": F.hardsigmoid,
    "hardtanh": F.hardtanh,
    "softsign": F.softsign,
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,
    "prelu": lambda x: F.prelu(x, torch.tensor([0.25], dtype=x.dtype)),
    "rrelu": lambda x: F.rrelu(x, training=False),
    "elu": F.elu,
    "selu": F.selu,
    "celu": F.celu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "mish": F.mish,
    "softplus": F.softplus,
    "hardswish": F.hardswish,
}

#: atol for f' (softplus: torch returns x itself above threshold=20, f' = 1 exactly)
DF_ATOL = {"softplus": 1e-8}
#: rtol for f' (hardsigmoid: torch's backward multiplies by 1/6 rounded to float32)
DF_RTOL = {"hardsigmoid": 1e-7}

NAMES = activations.names()
BIG = 1e4


def test_catalog_covers_torch_references() -> None:
    assert set(NAMES) == set(TORCH)
    required = {
        "identity",
        "sigmoid",
        "tanh",
        "hardsigmoid",
        "softsign",
        "relu",
        "relu6",
        "leaky_relu",
        "prelu",
        "rrelu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "gelu_tanh",
        "silu",
        "mish",
        "softplus",
        "hardswish",
    }
    assert required <= set(NAMES)


def _torch_f_df(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = TORCH[name](t)
    (g,) = torch.autograd.grad(y.sum(), t)
    return y.detach().numpy(), g.numpy()


def _off_kinks(act: Activation, x: np.ndarray) -> np.ndarray:
    keep = np.ones_like(x, dtype=bool)
    for k in act.kinks:
        keep &= np.abs(x - k) > 1e-9
    return x[keep]


finite = st.floats(-BIG, BIG, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(xs=st.lists(finite, min_size=1, max_size=32))
def test_f_and_df_match_torch(name: str, xs: list[float]) -> None:
    act = activations.get(name)
    x = _off_kinks(act, np.array(xs, dtype=np.float64))
    assume(x.size > 0)
    y_ref, g_ref = _torch_f_df(name, x)
    np.testing.assert_allclose(act.f(x), y_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        act.df(x), g_ref, rtol=DF_RTOL.get(name, 1e-9), atol=DF_ATOL.get(name, 1e-12)
    )


@pytest.mark.parametrize("name", NAMES)
def test_f_and_df_match_torch_on_a_grid(name: str) -> None:
    act = activations.get(name)
    x = _off_kinks(
        act, np.concatenate([np.linspace(-12, 12, 2401), [-BIG, -1e3, -50.0, 50.0, 1e3, BIG]])
    )
    y_ref, g_ref = _torch_f_df(name, x)
    np.testing.assert_allclose(act.f(x), y_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        act.df(x), g_ref, rtol=DF_RTOL.get(name, 1e-9), atol=DF_ATOL.get(name, 1e-12)
    )


@pytest.mark.parametrize("name", NAMES)
def test_stable_for_huge_inputs(name: str) -> None:
    act = activations.get(name)
    x = np.array([-1e300, -1e8, -BIG, -1e3, -0.0, 0.0, 1e3, BIG, 1e8, 1e300])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y, d = act.f(x), act.df(x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(d))
    assert act.f(x).shape == x.shape and act.df(x).shape == x.shape
    assert act.f(0.5).shape == ()


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_finite_differences(name: str) -> None:
    act = activations.get(name)
    x = _off_kinks(act, np.linspace(-8, 8, 641) + 0.0123)
    x = np.array([v for v in x if all(abs(v - k) > 1e-3 for k in act.kinks)])
    h = 1e-6
    fd = (act.f(x + h) - act.f(x - h)) / (2 * h)
    np.testing.assert_allclose(act.df(x), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_saturation_claims(name: str) -> None:
    act = activations.get(name)
    for side, sat in ((-1.0, act.saturates_left), (1.0, act.saturates_right)):
        far = abs(float(act.df(side * BIG)))
        if sat is Saturation.NONE:
            assert far >= 1e-3, f"{name}: f'({side * BIG:g}) = {far:g} but claims no saturation"
        else:
            assert far < 1e-6, f"{name}: f'({side * BIG:g}) = {far:g} but claims saturation"
            if sat is Saturation.ASYMPTOTIC and name != "softsign":
                # exponential tails: already flat at 50
                assert abs(float(act.df(side * 50.0))) < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_can_die_means_zero_gradient_on_a_half_line(name: str) -> None:
    act = activations.get(name)
    left = -np.geomspace(10.0, BIG, 200)
    right = np.geomspace(10.0, BIG, 200)
    flat = [np.all(act.df(h) == 0.0) for h in (left, right)]
    assert act.can_die == any(flat)
    assert flat == [act.saturates_left is Saturation.FLAT, act.saturates_right is Saturation.FLAT]
    if not act.can_die:  # f' != 0 everywhere on a moderate grid (away from its roots)
        x = np.linspace(-10, 10, 2001) + 1e-4
        assert np.all(act.df(x) != 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_zero_centred_and_range(name: str) -> None:
    act = activations.get(name)
    lo, hi = act.output_range
    x = np.concatenate([-np.geomspace(1e-6, BIG, 4000), [0.0], np.geomspace(1e-6, BIG, 4000)])
    y = act.f(x)
    spans_both = bool(np.any(y < 0) and np.any(y > 0))
    assert act.zero_centred == (float(act.f(0.0)) == 0.0 and spans_both)
    assert act.zero_centred == (lo < 0 < hi) or (not act.zero_centred and lo >= 0)
    assert np.all(y >= lo - 1e-4) and np.all(y <= hi + 1e-4)
    if math.isinf(lo):
        assert y.min() < -1.0
    else:
        assert y.min() <= lo + 1e-4  # the bound is attained or approached
    if math.isinf(hi):
        assert y.max() > 1e3
    else:
        assert y.max() >= hi - 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_monotonic(name: str) -> None:
    act = activations.get(name)
    dy = np.diff(act.f(np.linspace(-20, 20, 40001)))
    if act.monotonic:
        assert np.all(dy >= -1e-12)
    else:
        assert np.any(dy < -1e-6)


def test_gains_match_torch_calculate_gain() -> None:
    cg = torch.nn.init.calculate_gain
    for name, nl in [
        ("identity", "linear"),
        ("sigmoid", "sigmoid"),
        ("tanh", "tanh"),
        ("relu", "relu"),
        ("leaky_relu", "leaky_relu"),
        ("selu", "selu"),
    ]:
        assert activations.get(name).gain == pytest.approx(cg(nl), rel=1e-12), name
    assert activations.get("relu").gain == pytest.approx(math.sqrt(2))
    assert activations.get("tanh").gain == pytest.approx(5 / 3)
    assert activations.get("selu").gain == 0.75
    assert activations.get("prelu").gain == pytest.approx(cg("leaky_relu", 0.25))


def test_torch_defaults_match_torch_signatures() -> None:
    import inspect

    for act in activations.entries():
        if act.torch_name is None:
            continue
        cls = getattr(nn, act.torch_name)
        params = inspect.signature(cls.__init__).parameters
        for k, v in act.torch_defaults.items():
            if k == "approximate":  # GELU: the tanh entry sets the non-default value
                continue
            assert params[k].default == pytest.approx(v), (act.name, k)


def test_traps_are_spelled_out() -> None:
    leaky = " ".join(activations.get("leaky_relu").traps)
    assert "0.01" in leaky and "0.2" in leaky and "0.3" in leaky
    assert "0.25" in " ".join(activations.get("prelu").traps)
    assert "keras.ops.gelu" in " ".join(activations.get("gelu").traps)
    assert "0.2 x + 0.5" in " ".join(activations.get("hardsigmoid").traps)
    assert "0.229" in " ".join(activations.get("rrelu").traps)
    for act in activations.entries():
        assert act.formula and act.latex and act.derivative and act.derivative_latex
        assert act.paper and act.init and act.range_text


def test_aliases_and_normalisation() -> None:
    get = activations.get
    assert get("swish").name == "silu"
    assert get("leakyrelu") is get("leaky_relu") is get("LeakyReLU") is get("leaky-relu")
    assert get("hard_swish").name == "hardswish" == get("hardswish").name
    assert get("hard_silu").name == "hardswish"
    assert get("gelu_tanh").name == "gelu_tanh" and get("gelu_new").name == "gelu_tanh"
    assert get("Hardsigmoid").name == "hardsigmoid" == get("hard_sigmoid").name
    assert get("linear").name == "identity"
    act = get("relu")
    assert get(act) is act


def test_unknown_name_lists_known_names_and_suggests() -> None:
    with pytest.raises(
        UsageError, match=r"unknown activation 'leaky_rel'.*did you mean 'leaky_relu'"
    ):
        activations.get("leaky_rel")
    with pytest.raises(ValueError, match="known names: identity, sigmoid, tanh") as e:
        activations.get("zzzz")
    assert all(n in str(e.value) for n in NAMES)
    with pytest.raises(UsageError, match="must be a string"):
        activations.get(3)  # type: ignore[arg-type]


def test_from_module_maps_torch_modules() -> None:
    name_of = activations.activation_name_for_module
    cases = {
        nn.ReLU(): "relu",
        nn.ReLU(inplace=True): "relu",
        nn.ReLU6(): "relu6",
        nn.LeakyReLU(0.2): "leaky_relu",
        nn.PReLU(): "prelu",
        nn.RReLU(): "rrelu",
        nn.ELU(): "elu",
        nn.SELU(): "selu",
        nn.CELU(): "celu",
        nn.GELU(): "gelu",
        nn.GELU(approximate="tanh"): "gelu_tanh",
        nn.SiLU(): "silu",
        nn.Mish(): "mish",
        nn.Softplus(): "softplus",
        nn.Hardswish(): "hardswish",
        nn.Hardsigmoid(): "hardsigmoid",
        nn.Hardtanh(): "hardtanh",
        nn.Sigmoid(): "sigmoid",
        nn.Tanh(): "tanh",
        nn.Softsign(): "softsign",
    }
    for mod, expected in cases.items():
        assert name_of(mod) == expected, type(mod).__name__
        entry = activations.from_module(mod)
        assert entry is not None and entry.name == expected
    for other in (nn.Linear(2, 2), nn.Identity(), nn.Sequential(), nn.Softmax(dim=1), object()):
        assert name_of(other) is None
        assert activations.from_module(other) is None

    class MyReLU(nn.ReLU):
        pass

    assert name_of(MyReLU()) == "relu"


def test_import_does_not_import_torch() -> None:
    code = (
        "import sys, gradvitals.activations as a, gradvitals.activations._cli; "
        "a.get('relu').f([1.0]); assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- CLI -------------------------------------------------------------------------------


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["activations"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for col in ("name", "range", "zero-centred", "monotonic", "can die", "saturates", "init"):
        assert col in header
    for name in NAMES:
        assert f"\n{name} " in out
    assert "LeakyReLU" in out and "hard_silu" in out


def test_cli_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["activations", "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| name |") and len(lines) == 2 + len(NAMES)


def test_cli_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["activations", "show", "swish"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("silu: ")
    for field in ("f(x)", "f'(x)", "traps", "paper", "torch.nn.SiLU", "keras.activations.silu"):
        assert field in out


def test_cli_unknown_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["activations", "show", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown activation 'nope'" in err and "relu" in err


def test_cli_bad_words_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["activations", "frobnicate"]) == 2
    assert "gradvitals activations show NAME" in capsys.readouterr().err


def test_cli_plot(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "acts.png"
    assert main(["activations", "--plot", str(out)]) == 0
    assert out.exists() and out.stat().st_size > 20_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = Path(str(tmp_path)) / "gelu.png"
    assert main(["activations", "show", "gelu", "--plot", str(one)]) == 0
    assert one.exists() and one.stat().st_size > 5_000
    capsys.readouterr()


def test_docs_table_is_current() -> None:
    from pathlib import Path

    from gradvitals.activations._cli import format_table

    doc = Path(__file__).resolve().parents[1] / "docs" / "activations.md"
    if not doc.exists():  # pragma: no cover - installed without the docs
        pytest.skip("docs/activations.md not present")
    table = format_table(list(activations.entries()), "markdown")
    assert table in doc.read_text(encoding="utf-8"), (
        "docs/activations.md is stale: regenerate the table with "
        "`gradvitals activations --format markdown`"
    )
