"""gradvitals.lint with a batch, targets and the loss: each rule fires on the broken
model/batch and stays quiet on the fixed one."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import digits, standardize, tabular
from gradvitals import Cause, FailureMode, Finding
from gradvitals.errors import UsageError
from gradvitals.torch._lint import lint

OUT = FailureMode.OUTPUT_ACTIVATION
MISMATCH = FailureMode.LOSS_MISMATCH
UNSTABLE = FailureMode.UNSTABLE_LOSS
UNSCALED = FailureMode.UNSCALED_DATA
NEW = {OUT, MISMATCH, UNSTABLE, UNSCALED}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def new(findings: list[Finding]) -> list[Finding]:
    """Only the findings of the rules under test (not collapse/init/born-dead)."""
    return [f for f in findings if f.kind in NEW]


def one(findings: list[Finding], kind: FailureMode) -> Finding:
    got = new(findings)
    assert [f.kind for f in got] == [kind], [str(f) for f in got]
    return got[0]


def classifier(*tail: nn.Module, classes: int = 5, d_in: int = 8) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, classes), *tail)


X = torch.randn(32, 8)
Y = torch.randint(0, 5, (32,))
Y01 = torch.randint(0, 2, (32, 1)).float()


# --- 1. non-negative output into a logits loss ------------------------------------------------


@pytest.mark.parametrize("traced", [True, False])
def test_softmax_before_cross_entropy(traced: bool) -> None:
    args: dict[str, Any] = {"loss_fn": nn.CrossEntropyLoss()}
    if traced:
        args.update(example_input=X, target=Y)
    f = one(lint(classifier(nn.Softmax(dim=1)), **args), OUT)
    assert f.cause is Cause.OUTPUT_ACTIVATION and f.layer == "3"
    p = math.e / (math.e + 4)  # logits in [0, 1], 5 classes
    assert f.evidence["max_probability"] == pytest.approx(p)
    assert f.evidence["min_loss"] == pytest.approx(-math.log(p))
    assert f.message.startswith("softmax applied twice") and "p = 0.405" in f.message
    assert [r.key for r in f.remedies] == ["remove_output_activation", "match_loss"]
    assert new(lint(classifier(), **args)) == []


def test_the_cap_is_real() -> None:
    """CrossEntropy on softmax outputs cannot go below the bound the finding states."""
    probs = torch.eye(5)  # the most confident softmax output possible, right every time
    loss = F.cross_entropy(probs, torch.arange(5))
    assert float(loss) == pytest.approx(-math.log(math.e / (math.e + 4)), rel=1e-6)


def test_functional_softmax_in_forward_and_in_loss_fn() -> None:
    class Net(nn.Module):
        def __init__(self, squash: bool) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 5)
            self.squash = squash

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.fc(x)
            return F.softmax(z, dim=-1) if self.squash else z

    f = one(lint(Net(True), X, target=Y, loss_fn=F.cross_entropy), OUT)
    assert f.layer is None and "F.softmax in the model's forward" in f.message
    assert new(lint(Net(False), X, target=Y, loss_fn=F.cross_entropy)) == []
    # the softmax may also sit in a custom loss function
    f = one(
        lint(Net(False), X, target=Y, loss_fn=lambda o, y: F.cross_entropy(o.softmax(-1), y)), OUT
    )
    assert "softmax in loss_fn" in f.message


def test_relu_before_cross_entropy_counts_zero_logits() -> None:
    model = classifier(nn.ReLU())
    f = one(lint(model, X, target=Y, loss_fn=nn.CrossEntropyLoss()), OUT)
    with torch.no_grad():
        zeros = float((model(X) == 0).float().mean())
    assert f.evidence["zero_fraction"] == pytest.approx(zeros) and zeros > 0
    assert "cannot go below 0" in f.message


def test_sigmoid_before_bce_with_logits() -> None:
    head = classifier(classes=1)
    f = one(
        lint(nn.Sequential(head, nn.Sigmoid()), X, target=Y01, loss_fn=nn.BCEWithLogitsLoss()), OUT
    )
    assert f.layer == "1" and f.evidence["probability_range"] == [0.5, 0.7311]
    assert "a 0 target keeps a loss >= 0.693" in f.message
    assert new(lint(head, X, target=Y01, loss_fn=nn.BCEWithLogitsLoss())) == []


def test_nll_loss_wants_log_probabilities() -> None:
    loss = nn.NLLLoss()
    f = one(lint(classifier(nn.Softmax(dim=1)), X, target=Y, loss_fn=loss), OUT)
    assert "expects log-probabilities" in f.message and f.layer == "3"
    f = one(lint(classifier(), X, target=Y, loss_fn=loss), OUT)  # raw scores: -z_y unbounded
    assert "raw scores (Linear '2')" in f.message and "no lower bound" in f.message
    assert new(lint(classifier(nn.LogSoftmax(dim=1)), X, target=Y, loss_fn=loss)) == []
    assert new(lint(classifier(nn.LogSoftmax(dim=1)), loss_fn=loss)) == []  # structural too


# --- Hugging Face models built from a config ---------------------------------------------------


def tiny_bert(num_labels: int) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=60,
        max_position_embeddings=32,
        num_labels=num_labels,
    )
    return transformers.BertForSequenceClassification(cfg)  # type: ignore[no-any-return]


def tiny_gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=50)
    cfg.bos_token_id = cfg.eos_token_id = 0
    return transformers.GPT2LMHeadModel(cfg)  # type: ignore[no-any-return]


def test_healthy_hugging_face_models_are_quiet() -> None:
    """Every rule, old and new, is quiet on them: statically and traced with their loss."""
    ids = torch.randint(0, 50, (4, 12))
    gpt2 = tiny_gpt2()
    assert lint(gpt2) == []
    assert lint(gpt2, {"input_ids": ids, "labels": ids}) == []  # the model's own loss

    def lm_loss(out: Any, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.logits.flatten(0, 1), y.flatten())

    assert lint(gpt2, {"input_ids": ids}, target=ids, loss_fn=lm_loss) == []
    bert = tiny_bert(3)
    ids = torch.randint(0, 60, (8, 10))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    assert lint(bert) == [] and lint(bert, {**batch, "labels": torch.randint(0, 3, (8,))}) == []
    regression = tiny_bert(1)  # num_labels=1: the model uses MSE
    assert lint(regression, {**batch, "labels": torch.randn(8)}) == []


def test_broken_hugging_face_heads_fire() -> None:
    bert = tiny_bert(3)
    bert.classifier = nn.Sequential(bert.get_submodule("classifier"), nn.Softmax(dim=-1))
    ids = torch.randint(0, 60, (8, 10))
    f = one(lint(bert, {"input_ids": ids, "labels": torch.randint(0, 3, (8,))}), OUT)
    assert f.layer == "classifier.1" and f.evidence["classes"] == 3

    gpt2 = tiny_gpt2()
    ids = torch.randint(0, 50, (4, 12))

    def log_softmax_by_hand(out: Any, y: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(out.logits.softmax(-1).log().flatten(0, 1), y.flatten())

    f = one(lint(gpt2, {"input_ids": ids}, target=ids, loss_fn=log_softmax_by_hand), UNSTABLE)
    assert f.layer is None and "log(softmax(x)) in loss_fn" in f.message

    regression = tiny_bert(1)
    labels = torch.randn(8) * 500 + 3000  # raw prices, say
    f = one(
        lint(regression, {"input_ids": torch.randint(0, 60, (8, 10)), "labels": labels}), UNSCALED
    )
    assert f.evidence["data"] == "example_input['labels']" and f.evidence["role"] == "target"


# --- 2. softmax over one unit, cross-entropy over one class -----------------------------------


@pytest.mark.parametrize("traced", [True, False])
@pytest.mark.parametrize(("act", "constant"), [(nn.Softmax, 1.0), (nn.LogSoftmax, 0.0)])
def test_softmax_over_one_unit(traced: bool, act: type[nn.Module], constant: float) -> None:
    model = nn.Sequential(nn.Linear(8, 1), act(dim=1))
    with torch.no_grad():
        assert torch.all(model(X) == constant)  # what the finding claims
    f = one(lint(model, X if traced else None), OUT)
    assert f.layer == "1" and f.evidence["constant"] == constant
    assert new(lint(nn.Sequential(nn.Linear(8, 2), act(dim=1)), X if traced else None)) == []
    assert new(lint(nn.Sequential(nn.Linear(8, 1), nn.Sigmoid()), X if traced else None)) == []


def test_cross_entropy_over_one_unit_is_constant_zero() -> None:
    model = nn.Linear(8, 1)
    y = torch.zeros(32, dtype=torch.long)
    with torch.no_grad():
        assert float(F.cross_entropy(model(X), y)) == 0.0
    f = one(lint(model, X, target=y, loss_fn=nn.CrossEntropyLoss()), MISMATCH)
    assert f.cause is Cause.UNKNOWN and f.evidence["constant_loss"] == 0.0
    assert f.evidence["cause_evidence"] == "the loss function does not fit the targets"
    assert new(lint(nn.Linear(8, 2), X, target=y, loss_fn=nn.CrossEntropyLoss())) == []


# --- 3. bounded output, targets out of its range ---------------------------------------------------


def test_sigmoid_output_with_targets_outside_0_1() -> None:
    model = nn.Sequential(nn.Linear(8, 1), nn.Sigmoid())
    y = torch.rand(32, 1) * 10
    f = one(lint(model, X, target=y, loss_fn=nn.MSELoss()), OUT)
    assert f.cause is Cause.OUTPUT_ACTIVATION and f.layer == "1"
    assert f.evidence["fraction_outside"] == pytest.approx(float((y > 1).float().mean()))
    assert f.evidence["target_max"] == pytest.approx(float(y.max()))
    assert new(lint(model, X, target=y / 10, loss_fn=nn.MSELoss())) == []
    # without a loss, and without a batch (structural): the targets alone decide
    assert one(lint(model, X, target=y), OUT).layer == "1"
    assert one(lint(model, target=y), OUT).layer == "1"
    assert new(lint(model, target=y / 10)) == []


@pytest.mark.parametrize(
    ("act", "bad", "good"),
    [
        (nn.Tanh, lambda y: 3 * y, lambda y: y.clamp(-1, 1)),
        (nn.ReLU, lambda y: y - 1.0, lambda y: y.abs()),
        (nn.ReLU6, lambda y: y + 6.0, lambda y: y.abs()),
    ],
)
def test_other_bounded_outputs(act: type[nn.Module], bad: Any, good: Any) -> None:
    model = nn.Sequential(nn.Linear(8, 1), act())
    y = torch.randn(32, 1)
    f = one(lint(model, X, target=bad(y), loss_fn=nn.L1Loss()), OUT)
    assert f.evidence["activation"] == type(act()).__name__.lower()
    assert new(lint(model, X, target=good(y), loss_fn=nn.L1Loss())) == []


# --- 4. the loss does not fit the targets ----------------------------------------------------------


def test_mse_on_class_ids() -> None:
    model = classifier()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about the broadcast too
        f = one(lint(model, X, target=Y[:, None].float(), loss_fn=nn.MSELoss()), MISMATCH)
        # a (N,) column cannot even broadcast against (N, 5): the finding explains the error
        g = one(lint(model, X, target=Y.float(), loss_fn=nn.MSELoss()), MISMATCH)
    assert f.cause is Cause.UNKNOWN and f.evidence["units"] == 5 and g.evidence["units"] == 5
    assert (f.evidence["target_min"], f.evidence["target_max"]) == (float(Y.min()), float(Y.max()))
    # structural: a Sequential, a loss module and the targets
    assert one(lint(model, target=Y.float(), loss_fn=nn.MSELoss()), MISMATCH).layer is None
    # fixed: one-hot targets for MSE, class ids for cross-entropy, real values for regression
    assert new(lint(model, X, target=F.one_hot(Y, 5).float(), loss_fn=nn.MSELoss())) == []
    assert new(lint(model, X, target=Y, loss_fn=nn.CrossEntropyLoss())) == []
    reg = classifier(classes=1)
    assert new(lint(reg, X, target=torch.randn(32, 1), loss_fn=nn.MSELoss())) == []


def test_binary_cross_entropy_on_class_ids() -> None:
    model = classifier()
    ids = Y[:, None].expand(32, 5).float()
    f = one(lint(model, X, target=ids, loss_fn=nn.BCEWithLogitsLoss()), MISMATCH)
    assert "(class ids?)" in f.message and f.evidence["target_max"] == float(Y.max())
    multi_hot = (torch.rand(32, 5) > 0.5).float()
    assert new(lint(model, X, target=multi_hot, loss_fn=nn.BCEWithLogitsLoss())) == []


def test_a_loss_that_fails_for_another_reason_is_a_usage_error() -> None:
    def broken(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise ValueError("no such column")

    with pytest.raises(
        UsageError, match=r"could not compute loss_fn\(model\(example_input\), target\)"
    ):
        lint(classifier(), X, target=Y, loss_fn=broken)
    with pytest.raises(UsageError, match="loss_fn=3 is not callable"):
        lint(classifier(), X, target=Y, loss_fn=3)


# --- 5. log of a probability ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "log_p",
    [
        lambda z: torch.log(F.softmax(z, dim=-1)),
        lambda z: (z.softmax(-1) + 1e-8).log(),
        lambda z: torch.log(torch.clamp(F.softmax(z, -1), min=1e-7)),
        lambda z: torch.log(z.exp() / z.exp().sum(-1, keepdim=True)),  # softmax by hand
        lambda z: torch.log2(F.softmax(z.float(), dim=-1)),
    ],
)
def test_log_of_softmax_fires(log_p: Any) -> None:
    f = one(lint(classifier(), X, target=Y, loss_fn=lambda o, y: F.nll_loss(log_p(o), y)), UNSTABLE)
    assert f.cause is Cause.UNSTABLE_LOSS and f.evidence["source"] == "softmax"
    assert [r.key for r in f.remedies] == ["stable_loss"]


def test_log_softmax_of_a_softmax_is_a_double_softmax() -> None:
    def double(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(F.softmax(o, -1), -1), y)

    f = one(lint(classifier(), X, target=Y, loss_fn=double), OUT)
    assert f.evidence["classes"] == 5 and f.evidence["max_probability"] == pytest.approx(
        math.e / (math.e + 4)
    )


def test_log_softmax_and_cross_entropy_are_quiet() -> None:
    stable = lambda o, y: F.nll_loss(F.log_softmax(o, -1), y)  # noqa: E731
    assert new(lint(classifier(), X, target=Y, loss_fn=stable)) == []
    assert new(lint(classifier(), X, target=Y, loss_fn=F.cross_entropy)) == []


def test_underflow_gap_is_where_softmax_hits_zero() -> None:
    f = one(
        lint(classifier(), X, target=Y, loss_fn=lambda o, y: F.nll_loss(o.softmax(-1).log(), y)),
        UNSTABLE,
    )
    gap = f.evidence["underflow_at"]
    assert gap == pytest.approx(150 * math.log(2))  # float32: exp(-d) < 2^-150 rounds to 0
    assert float(torch.softmax(torch.tensor([0.0, -(gap + 0.05)]), 0)[1]) == 0.0
    assert float(torch.softmax(torch.tensor([0.0, -(gap - 1.0)]), 0)[1]) > 0.0
    with torch.no_grad():
        z = classifier()(X)
    assert 0 < f.evidence["batch_value"] < gap  # the batch's largest logit gap, measured
    double = one(
        lint(
            classifier().double(),
            X.double(),
            target=Y,
            loss_fn=lambda o, y: F.nll_loss(o.softmax(-1).log(), y),
        ),
        UNSTABLE,
    )
    assert double.evidence["underflow_at"] == pytest.approx(1075 * math.log(2)) and z.ndim == 2


def test_log_of_sigmoid_in_the_forward_and_hand_written_bce() -> None:
    class Scorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(torch.sigmoid(self.fc(x)))

    f = one(lint(Scorer(), X), UNSTABLE)
    assert f.layer is None and "in the model's forward" in f.message

    def bce(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(o)
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()

    f = one(lint(classifier(classes=1), X, target=Y01, loss_fn=bce), UNSTABLE)
    assert f.evidence["complement"] and f.evidence["also_direct"]
    assert f.evidence["underflow_at"] == pytest.approx(24 * math.log(2))  # 1 - sigmoid(x) = 0
    assert float(1 - torch.sigmoid(torch.tensor(16.7))) == 0.0
    assert new(lint(classifier(classes=1), X, target=Y01, loss_fn=nn.BCEWithLogitsLoss())) == []


# --- 6. data scale ----------------------------------------------------------------------------------


def test_raw_pixels_fire_and_scaled_pixels_do_not() -> None:
    x, y = digits()  # [0, 1]
    x, y = x[:64], y[:64]
    model = classifier(d_in=64, classes=10)
    pixels = x * 255.0  # the classic forgotten "/ 255"
    f = one(lint(model, pixels, target=y, loss_fn=nn.CrossEntropyLoss()), UNSCALED)
    assert f.cause is Cause.UNSCALED_DATA and f.evidence["role"] == "input"
    assert f.evidence["rms"] == pytest.approx(float(pixels.pow(2).mean().sqrt()), rel=1e-6)
    assert f.evidence["rms"] > 10 and [r.key for r in f.remedies] == ["normalize_data"]
    assert new(lint(model, x, target=y, loss_fn=nn.CrossEntropyLoss())) == []
    assert new(lint(model, x * 16.0, target=y)) == []  # digits' own 0-16 scale: borderline, quiet


def test_mixed_scale_table_fires_and_standardised_does_not() -> None:
    x, y = tabular("breast_cancer")
    x, y = x[:64], y[:64]
    model = classifier(d_in=x.shape[1], classes=2)
    f = one(lint(model, x, target=y, loss_fn=nn.CrossEntropyLoss()), UNSCALED)
    cols = (x.pow(2).mean(0).sqrt() > 10).nonzero().flatten().tolist()
    median = x.pow(2).mean(0).sqrt().median()
    cols = [c for c in cols if x[:, c].pow(2).mean().sqrt() > 10 * median]
    assert f.evidence["columns"] == cols[:10] and 0 < len(cols) < x.shape[1]
    assert "mixes scales" in f.message
    assert new(lint(model, standardize(x), target=y, loss_fn=nn.CrossEntropyLoss())) == []


def test_tiny_inputs_and_custom_bounds() -> None:
    model = classifier()
    f = one(lint(model, X * 1e-5), UNSCALED)
    assert "below 0.001" in f.message
    assert new(lint(model, X * 5.0)) == []
    assert one(lint(model, X * 5.0, input_scale_range=(1e-3, 2.0)), UNSCALED).evidence[
        "bounds"
    ] == [1e-3, 2.0]
    with pytest.raises(UsageError, match=r"input_scale_range=\(10, 1\) is invalid"):
        lint(model, X, input_scale_range=(10, 1))


def test_normalization_first_makes_input_scale_harmless() -> None:
    pixels = torch.rand(8, 3, 6, 6) * 255
    bn_first = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    conv_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    conv_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    assert new(lint(bn_first, pixels)) == [] and new(lint(conv_bn, pixels)) == []
    assert one(lint(conv_relu, pixels), UNSCALED).evidence["data"] == "example_input"


def test_token_ids_are_not_data_to_scale() -> None:
    emb = nn.Sequential(nn.Embedding(1000, 8), nn.Flatten(), nn.Linear(32, 2))
    assert new(lint(emb, torch.randint(500, 1000, (4, 4)))) == []


def test_regression_target_scale() -> None:
    model = classifier(classes=1)
    y = torch.randn(32, 1) * 1000 + 5e4
    f = one(lint(model, X, target=y, loss_fn=nn.MSELoss()), UNSCALED)
    assert f.evidence["role"] == "target" and f.evidence["rms"] > 100
    assert f"~{f.evidence['rms']:.2g}/lr steps" in f.message
    assert new(lint(model, X, target=standardize(y), loss_fn=nn.MSELoss())) == []
    assert one(lint(model, target=y), UNSCALED).evidence["data"] == "target"  # no batch needed
    # class ids are not regression targets, whatever their values
    assert (
        new(lint(classifier(classes=600), X, target=Y * 100, loss_fn=nn.CrossEntropyLoss())) == []
    )


# --- side effects ------------------------------------------------------------------------------------


def test_lint_with_a_loss_leaves_no_trace() -> None:
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 5)
    )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    lint(model, X, target=Y, loss_fn=lambda o, y: F.nll_loss(o.softmax(-1).log(), y))
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert torch._C._len_torch_function_stack() == 0  # the recording mode is gone
    with pytest.raises(UsageError):
        lint(model, torch.randn(2, 3), target=Y, loss_fn=nn.CrossEntropyLoss())
    assert torch._C._len_torch_function_stack() == 0
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


# --- Keras ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras() -> Any:
    pytest.importorskip("tensorflow")
    return pytest.importorskip("keras")


def keras_model(keras: Any, units: int, act: str | None, loss: Any, *, first: Any = None) -> Any:
    layers = [keras.Input((8,)), *([first] if first is not None else [])]
    layers += [keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.1)]
    layers += [keras.layers.Dense(units, activation=act, name="out")]
    model = keras.Sequential(layers)
    if loss is not None:
        model.compile(loss=loss)
    return model


def test_keras_output_layer_against_the_compiled_loss(keras: Any) -> None:
    from gradvitals.keras._lint import keras_loss_name, lint_keras

    scce = keras.losses.SparseCategoricalCrossentropy
    f = one(lint_keras(keras_model(keras, 5, "softmax", scce(from_logits=True))), OUT)
    assert f.layer == "out" and f.cause is Cause.OUTPUT_ACTIVATION
    assert f.evidence["max_probability"] == pytest.approx(math.e / (math.e + 4))
    assert "SparseCategoricalCrossentropy(from_logits=True)" in f.message
    assert f.remedies[0].code.startswith("keras.layers.Dense(n_classes)")  # Keras code
    assert lint_keras(keras_model(keras, 5, None, scce(from_logits=True))) == []
    assert lint_keras(keras_model(keras, 5, "softmax", "sparse_categorical_crossentropy")) == []
    # the opposite mistake: raw scores into a loss that expects probabilities (the default)
    f = one(lint_keras(keras_model(keras, 5, None, "sparse_categorical_crossentropy")), OUT)
    assert "expects probabilities" in f.message and f.remedies[0].key == "match_loss"
    f = one(
        lint_keras(
            keras_model(keras, 1, "sigmoid", keras.losses.BinaryCrossentropy(from_logits=True))
        ),
        OUT,
    )
    assert f.evidence["probability_range"] == [0.5, 0.7311]
    f = one(lint_keras(keras_model(keras, 1, "softmax", "binary_crossentropy")), OUT)
    assert f.evidence["constant"] == 1.0
    assert lint_keras(keras_model(keras, 1, "sigmoid", "binary_crossentropy")) == []
    assert keras_loss_name(keras.losses.Huber()) == ("huber_loss", False)
    assert keras_loss_name(["mse"]) == (None, False)
    with pytest.raises(UsageError, match=r"takes a keras\.Model, got Sequential"):
        lint_keras(nn.Sequential())


def test_keras_targets_and_data_scale(keras: Any) -> None:
    from gradvitals.keras._lint import lint_keras

    rng = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=rng).numpy()
    y10 = (torch.rand(32, 1, generator=rng) * 10).numpy()
    sig = keras_model(keras, 1, "sigmoid", "mse")
    f = one(lint_keras(sig, x, y10), OUT)
    assert f.evidence["fraction_outside"] == pytest.approx(float((y10 > 1).mean()))
    assert lint_keras(sig, x, y10 / 10) == []
    ids = torch.randint(0, 5, (32,), generator=rng).numpy()
    f = one(lint_keras(keras_model(keras, 5, None, "mse"), x, ids), MISMATCH)
    assert f.evidence["units"] == 5 and f.cause is Cause.UNKNOWN
    assert (
        lint_keras(
            keras_model(
                keras, 5, None, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            ),
            x,
            ids,
        )
        == []
    )
    assert one(
        lint_keras(
            keras_model(keras, 5, None, keras.losses.BinaryCrossentropy(from_logits=True)), x, ids
        ),
        MISMATCH,
    )
    pixels = (torch.rand(32, 8, generator=rng) * 255).numpy()
    reg = keras_model(keras, 1, None, "mse")
    f = one(lint_keras(reg, pixels), UNSCALED)
    assert "keras.layers.Normalization" in f.remedies[0].code
    assert (
        lint_keras(
            keras_model(keras, 1, None, "mse", first=keras.layers.Rescaling(1 / 255)), pixels
        )
        == []
    )
    f = one(lint_keras(reg, x, y10 * 1e4), UNSCALED)
    assert f.evidence["role"] == "target"
    assert lint_keras(reg, x, y10 / 10) == []
