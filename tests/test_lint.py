"""gradvitals.lint: every rule fires on the bad model and stays quiet on good ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvitals
from gradvitals import Cause, FailureMode, Finding, remedies_for
from gradvitals.errors import UsageError
from gradvitals.torch._lint import born_dead_probability, lint

COLLAPSE_MSG = "this hidden layer adds no capacity: it collapses into one linear map"


def kinds(findings: list[Finding]) -> list[FailureMode]:
    return [f.kind for f in findings]


def mlp(
    width: int,
    n_layers: int,
    act: type[nn.Module] = nn.ReLU,
    *,
    d_in: int = 8,
    he: bool = False,
    norm: type[nn.Module] | None = None,
) -> nn.Sequential:
    """``n_layers`` Linear layers (the last one the output), ``n_layers - 1`` hidden."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(n_layers - 1):
        lin = nn.Linear(d, width)
        if he:
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
        layers.append(lin)
        if norm is not None:
            layers.append(norm(width))
        layers.append(act())
        d = width
    layers.append(nn.Linear(d, 1))
    return nn.Sequential(*layers)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- good models: nothing to report ------------------------------------------------------


def bn_cnn() -> nn.Sequential:
    blocks: list[nn.Module] = []
    c = 3
    for out in (16, 16, 32, 32):
        blocks += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        c = out
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


GOOD = {
    "linear_relu_linear": (
        lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)),
        (32, 8),
    ),
    "he_deep_relu_w64": (lambda: mlp(64, 10, he=True), (64, 8)),
    "shallow_sigmoid": (lambda: mlp(32, 3, nn.Sigmoid), (64, 8)),
    "layernorm_gelu": (lambda: mlp(64, 8, nn.GELU, norm=nn.LayerNorm), (64, 8)),
    "batchnorm_cnn": (bn_cnn, (32, 3, 8, 8)),
}


@pytest.mark.parametrize("name", list(GOOD))
@pytest.mark.parametrize("with_input", [False, True])
def test_good_models_are_quiet(name: str, with_input: bool) -> None:
    make, shape = GOOD[name]
    model = make()
    x = torch.randn(*shape) if with_input else None
    assert lint(model, x) == []


def test_top_level_delegate_and_finding_shape() -> None:
    findings = gradvitals.lint(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))
    assert len(findings) == 1
    f = findings[0]
    assert f.step == -1 and f.kind is FailureMode.LINEAR_COLLAPSE
    assert [r.key for r in f.remedies] == [r.key for r in remedies_for(f.kind)]
    assert str(f).startswith("[gradvitals] step -1: linear_collapse in 1:")


# --- linear collapse ----------------------------------------------------------------------


def test_collapse_fires_on_consecutive_linears() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    (f,) = lint(model)
    assert f.kind is FailureMode.LINEAR_COLLAPSE and f.layer == "1"
    assert f.message.startswith(COLLAPSE_MSG)
    assert f.evidence["first"] == "0" and f.evidence["second"] == "1"


def test_collapse_through_neutral_modules_and_nesting() -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1)),
        nn.Sequential(nn.BatchNorm1d(16), nn.Identity(), nn.Linear(16, 4)),
        nn.ReLU(),
        nn.Conv1d(1, 1, 1),
        nn.Conv1d(1, 1, 3),
    )
    findings = lint(model)
    assert [(f.kind, f.layer) for f in findings] == [
        (FailureMode.LINEAR_COLLAPSE, "1.2"),
        (FailureMode.LINEAR_COLLAPSE, "4"),
    ]
    assert findings[0].evidence["between"] == ["0.1", "1.0", "1.1"]


def test_collapse_in_custom_forward_needs_example_input() -> None:
    class TwoLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.fc1(x))

    model = TwoLinear()
    assert lint(model) == []  # order unknown without running it
    (f,) = lint(model, torch.randn(4, 8))
    assert f.kind is FailureMode.LINEAR_COLLAPSE and f.layer == "fc2"
    assert f.evidence["source"] == "traced"


def test_functional_and_inplace_activations_break_the_chain() -> None:
    class Functional(nn.Module):
        def __init__(self, inplace: bool) -> None:
            super().__init__()
            self.inplace = inplace
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x)
            h = h.relu_() if self.inplace else F.relu(h)
            return self.fc2(h)

    for inplace in (False, True):
        assert lint(Functional(inplace), torch.randn(4, 8)) == [], inplace


def test_residual_block_and_separable_conv_are_not_collapse() -> None:
    class Block(nn.Module):  # torchvision-style BasicBlock registration order
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(8)
            self.downsample = nn.Sequential(nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.downsample(x))

    x = torch.randn(4, 4, 6, 6)
    assert lint(Block()) == [] and lint(Block(), x) == []
    separable = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU()
    )
    assert lint(separable) == [] and lint(separable, torch.randn(2, 8, 5, 5)) == []


# --- deep saturating stack -------------------------------------------------------------------


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh])
def test_deep_saturating_stack_fires(act: type[nn.Module]) -> None:
    findings = lint(mlp(32, 7, act))
    assert kinds(findings) == [FailureMode.DEEP_SATURATING_STACK]
    f = findings[0]
    assert f.evidence["depth"] == 6 and f.layer is None
    assert "no normalization" in f.message
    if act is nn.Sigmoid:
        assert f.evidence["max_derivative_product"] == pytest.approx(0.25**6)
        assert "0.25" in f.message


def test_deep_saturating_stack_quiet_when_normalized_shallow_or_residual() -> None:
    assert lint(mlp(32, 7, nn.Sigmoid, norm=nn.BatchNorm1d)) == []
    assert lint(mlp(32, 7, nn.Tanh, norm=nn.LayerNorm)) == []
    assert lint(mlp(32, 4, nn.Sigmoid)) == []  # 3 hidden layers < 4
    assert lint(mlp(32, 7, nn.Sigmoid), depth_threshold=8) == []

    class ResidualBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 16)
            self.act = nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.act(self.fc(x))

    net = nn.Sequential(*(ResidualBlock() for _ in range(6)))
    assert lint(net) == [] and lint(net, torch.randn(4, 16)) == []


# --- init mismatch --------------------------------------------------------------------------


def test_init_mismatch_fires_on_default_init_deep_relu() -> None:
    findings = lint(mlp(64, 8))
    assert kinds(findings) == [FailureMode.INIT_MISMATCH]
    ev = findings[0].evidence
    assert ev["depth"] == 7
    assert ev["median_fan_in_var"] == pytest.approx(1 / 3, rel=0.15)
    assert ev["per_layer_factor"] == pytest.approx(1 / 6, rel=0.15)
    assert [r.key for r in findings[0].remedies] == ["he_init"]


def test_init_mismatch_quiet_cases() -> None:
    assert lint(mlp(64, 8, he=True)) == []
    assert lint(mlp(64, 4)) == []  # 3 hidden layers < depth_threshold
    assert lint(mlp(64, 8, norm=nn.BatchNorm1d)) == []  # BN fixes the scale
    assert lint(mlp(64, 8, nn.GELU)) == []  # not ReLU family
    assert lint(mlp(64, 8), init_variance_threshold=0.2) == []


def test_init_mismatch_sees_a_shared_activation_module_when_traced() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(32, 32) for _ in range(5))
            self.act = nn.ReLU()
            self.head = nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = self.act(layer(x))
            return self.head(x)

    assert lint(Shared()) == []  # statically: one ReLU module
    assert FailureMode.INIT_MISMATCH in kinds(lint(Shared(), torch.randn(64, 32)))


# --- born dead ------------------------------------------------------------------------------

#: (N, L, closed form) 1 - (1 - 2^-N)^(L-1) (Lu et al. 2019); L counts the linear output layer
CLOSED_FORM = [
    (2, 10, 0.925),
    (3, 10, 0.699),
    (3, 20, 0.921),
    (4, 20, 0.707),
    (5, 10, 0.249),
    (10, 10, 0.009),
    (10, 50, 0.047),
]


@pytest.mark.parametrize(("n", "depth", "expected"), CLOSED_FORM)
def test_born_dead_probability_matches_table(n: int, depth: int, expected: float) -> None:
    assert born_dead_probability([n] * (depth - 1)) == pytest.approx(expected, abs=1.5e-3)


def test_born_dead_fires_for_narrow_deep_relu() -> None:
    findings = [f for f in lint(mlp(3, 10, d_in=1, he=True)) if f.kind is FailureMode.BORN_DEAD]
    (f,) = findings
    assert f.evidence["probability"] == pytest.approx(1 - (1 - 2**-3) ** 9)
    assert f.evidence["probability"] == pytest.approx(0.699, abs=1e-3)
    assert f.evidence["hidden_relu_layers"] == 9 and f.evidence["widths"] == [3] * 9
    assert "1-(1-2^-3)^9 = 0.699" in f.message


def test_born_dead_quiet_for_wide_or_shallow() -> None:
    assert lint(mlp(64, 10, he=True)) == []
    assert lint(mlp(10, 10, he=True)) == []  # 0.0088 < 0.05
    assert lint(mlp(3, 10, he=True), born_dead_threshold=0.75) == []


def _dead_bias(model: nn.Sequential, index: int, units: slice) -> None:
    with torch.no_grad():
        model[index].bias[units] = -100.0


def test_units_dead_at_init_on_example_input() -> None:
    model = mlp(64, 4, he=True)
    _dead_bias(model, 2, slice(0, 40))  # 40/64 units of the second hidden layer
    x = torch.randn(64, 8)
    (f,) = lint(model, x)
    assert f.kind is FailureMode.BORN_DEAD and f.layer == "3"
    assert f.evidence["dead_units"] == 40 and f.evidence["units"] == 64
    assert f.evidence["examples"] == 64
    # fewer than 16 examples: a partly dead layer is not evidence enough
    assert lint(model, x[:4]) == []
    assert lint(model, x, dead_fraction_threshold=0.7) == []


def test_entirely_dead_layer_reported_once() -> None:
    model = mlp(32, 6, he=True)
    _dead_bias(model, 2, slice(None))
    findings = lint(model, torch.randn(2, 8))  # even with 2 examples
    (f,) = findings
    assert f.layer == "3" and f.evidence["dead_fraction"] == 1.0
    assert "entirely dead" in f.message
    assert f.evidence["dead_layers_after"] == ["5", "7", "9"]


def test_conv_units_are_channels() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    )
    with torch.no_grad():
        model[0].bias[:6] = -100.0
    (f,) = lint(model, torch.randn(16, 3, 6, 6))
    assert f.layer == "1" and (f.evidence["dead_units"], f.evidence["units"]) == (6, 8)


# --- causes and foreign modules --------------------------------------------------------------


def test_structural_findings_carry_their_cause() -> None:
    cases = [
        (
            nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 2)),
            FailureMode.LINEAR_COLLAPSE,
            Cause.UNKNOWN,
        ),
        (mlp(32, 7, nn.Sigmoid), FailureMode.DEEP_SATURATING_STACK, Cause.SATURATING_ACTIVATION),
        (mlp(64, 8), FailureMode.INIT_MISMATCH, Cause.BAD_INIT),
        (mlp(3, 10, d_in=1, he=True), FailureMode.BORN_DEAD, Cause.BAD_INIT),
    ]
    for model, kind, cause in cases:
        (f,) = [f for f in lint(model) if f.kind is kind]
        assert f.cause is cause, kind


def test_hugging_face_linear_activation_is_no_nonlinearity() -> None:
    acts = pytest.importorskip("transformers.activations")
    model = nn.Sequential(nn.Linear(8, 16), acts.LinearActivation(), nn.Linear(16, 2))
    for x in (None, torch.randn(4, 8)):
        (f,) = lint(model, x)
        assert f.kind is FailureMode.LINEAR_COLLAPSE and f.evidence["between"] == ["1"]
    gelu = nn.Sequential(nn.Linear(8, 16), acts.NewGELUActivation(), nn.Linear(16, 2))
    assert lint(gelu) == [] and lint(gelu, torch.randn(4, 8)) == []


# --- side effects and errors -------------------------------------------------------------------


def test_lint_leaves_the_model_and_rng_untouched() -> None:
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 1)
    )
    model.train()
    x = torch.randn(32, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    lint(model, x)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert model.training
    for m in model.modules():
        assert not m._forward_hooks


def test_example_input_forms() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x)) + y

    x, y = torch.randn(3, 4), torch.randn(3, 2)
    assert kinds(lint(TwoInputs(), (x, y))) == [FailureMode.LINEAR_COLLAPSE]
    assert kinds(lint(TwoInputs(), {"x": x, "y": y})) == [FailureMode.LINEAR_COLLAPSE]


def test_errors_teach() -> None:
    with pytest.raises(UsageError, match=r"takes a torch\.nn\.Module, got str"):
        lint("model")  # type: ignore[arg-type]
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    with pytest.raises(UsageError, match="could not run example_input through the model"):
        lint(model, torch.randn(2, 5))
    for m in model.modules():
        assert not m._forward_hooks  # removed even when forward fails
    with pytest.raises(UsageError, match=r"depth_threshold=1 is invalid; it must be an int >= 2"):
        lint(model, depth_threshold=1)
    with pytest.raises(UsageError, match="born_dead_threshold"):
        lint(model, born_dead_threshold=1.5)
    with pytest.raises(UsageError, match="dead_fraction_threshold"):
        lint(model, dead_fraction_threshold=0.0)
    with pytest.raises(UsageError, match="init_variance_threshold"):
        lint(model, init_variance_threshold=-1.0)
