"""The cause of a finding, both ways: the broken program names its cause; the fixed one has
no finding and never replays a step (the provenance replay runs only on a failing step).

Every case is a small training loop on synthetic data, written the way users write it
(the loss observed after ``optimizer.step()``, unless a test says otherwise). The replay
is counted by wrapping :func:`gradvitals.torch._provenance.replay`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import gradvitals  # noqa: E402
from gradvitals import Cause, FailureMode, Finding  # noqa: E402
from gradvitals.session import Schedule, Session  # noqa: E402
from gradvitals.stats import LayerStats, LossStats, SiteStats, WindowRecord  # noqa: E402
from gradvitals.torch import _provenance  # noqa: E402

WATCH: dict[str, Any] = {"console": False, "lint": False}


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every provenance replay made during the test (its result), in order."""
    calls: list[Any] = []
    real = _provenance.replay

    def counted(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(_provenance, "replay", counted)
    return calls


def _data(n: int = 512, d: int = 16, k: int = 4, seed: int = 0) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, k, generator=g)
    return x, (x @ w).argmax(1)


def _batches(n: int, batch: int, steps: int, seed: int = 0) -> Iterator[Any]:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield torch.randint(0, n, (batch,), generator=g)


def _mlp(d: int = 16, h: int = 32, k: int = 4, norm: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(d, h)]
    if norm:
        layers.append(nn.LayerNorm(h))
    layers += [nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, k)]
    return nn.Sequential(*layers)


def _train(
    model: nn.Module,
    opt: Any,
    steps: int,
    batch_fn: Callable[[int], tuple[Any, Any]],
    loss_fn: Callable[[Any, Any], Any],
    *,
    zero_grad: bool = True,
    accumulate: int = 1,
    observe_before_backward: bool = False,
    **watch: Any,
) -> gradvitals.Monitor:
    monitor = gradvitals.watch(model, opt, **{**WATCH, **watch})
    for step in range(steps):
        if zero_grad:
            opt.zero_grad()
        for k in range(accumulate):
            x, y = batch_fn(step * accumulate + k)
            loss = loss_fn(model(x), y)
            if accumulate > 1:
                loss = loss / accumulate
            if observe_before_backward and k == accumulate - 1:
                monitor.observe_loss(loss)
            loss.backward()
        opt.step()
        if not observe_before_backward:
            monitor.observe_loss(loss)
    monitor.close()
    return monitor


def _first(monitor: gradvitals.Monitor) -> Finding:
    training = [f for f in monitor.findings if not f.final]
    assert training, "no finding on the broken program"
    return training[0]


def _keys(f: Finding) -> list[str]:
    return [r.key for r in f.remedies]


def _provenances(monitor: gradvitals.Monitor) -> list[dict[str, Any]]:
    return [r.facts["provenance"] for r in monitor.history if "provenance" in r.facts]


# -- masked softmax: the attention's softmax over an all -inf row ---------------------------
class MaskedAttention(nn.Module):
    def __init__(self, d: int, fill: float) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.fill = fill

    def forward(self, h: Any, valid: Any) -> Any:
        scores = self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(h.shape[-1])
        mask = ~(valid[:, :, None] & valid[:, None, :])  # padded queries: every key masked
        return scores.masked_fill(mask, self.fill).softmax(-1) @ self.v(h)


class TokenClassifier(nn.Module):
    def __init__(self, fill: float, vocab: int = 10, d: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.attn = MaskedAttention(d, fill)
        self.head = nn.Linear(d, 2)

    def forward(self, tokens: Any) -> Any:
        valid = tokens != 0
        a = self.attn(self.emb(tokens), valid)
        keep = valid.unsqueeze(-1).float()
        return self.head((a * keep).sum(1) / keep.sum(1).clamp(min=1.0))


def _tokens(seed: int = 0) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 10, (256, 8), generator=g)
    lengths = torch.randint(2, 9, (256,), generator=g)
    tokens[torch.arange(8)[None, :] >= lengths[:, None]] = 0  # padding at the end
    return tokens, (tokens == 3).sum(1).clamp(max=1)


def _attention_run(fill: float) -> gradvitals.Monitor:
    tokens, labels = _tokens()
    model = TokenClassifier(fill)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    return _train(
        model,
        opt,
        12,
        lambda i: (tokens[i * 16 : i * 16 + 16], labels[i * 16 : i * 16 + 16]),
        F.cross_entropy,
    )


def test_masked_softmax_names_the_attention_softmax(replays: list[Any]) -> None:
    f = _first(_attention_run(float("-inf")))
    assert f.kind is FailureMode.NONFINITE and f.cause is Cause.UNSTABLE_OP
    assert f.layer == "attn"  # the module that made the NaN, not where it was seen
    assert _keys(f)[0] == "guard_op"
    prov = [p for p in replays if p is not None]
    assert prov and prov[0].op == "softmax" and prov[0].module == "attn"
    assert prov[0].kind == "nan_from_finite" and prov[0].masked


def test_finite_mask_fill_has_no_finding_and_never_replays(replays: list[Any]) -> None:
    monitor = _attention_run(torch.finfo(torch.float32).min)
    assert monitor.findings == [] and replays == []


# -- log(softmax): the loss, not the model ------------------------------------------------
def _log_softmax_run(fused: bool) -> gradvitals.Monitor:
    x, y = _data()
    x = x * 3000.0  # raw measurements: logits hundreds apart, softmax underflows to 0
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)

    def loss_fn(out: Any, t: Any) -> Any:
        logp = F.log_softmax(out, 1) if fused else torch.log(torch.softmax(out, 1))
        return F.nll_loss(logp, t)

    return _train(
        model, opt, 8, lambda i: (x[i * 32 : i * 32 + 32], y[i * 32 : i * 32 + 32]), loss_fn
    )


def test_log_of_softmax_names_the_loss(replays: list[Any]) -> None:
    f = _first(_log_softmax_run(fused=False))
    assert f.kind is FailureMode.NONFINITE and f.cause is Cause.UNSTABLE_LOSS
    assert _keys(f)[0] == "stable_loss"
    assert "log of a softmax" in f.evidence["cause_evidence"]


def test_log_softmax_has_no_finding_and_never_replays(replays: list[Any]) -> None:
    monitor = _log_softmax_run(fused=True)
    assert monitor.findings == [] and replays == []


# -- a NaN input batch, on a sampled and on an unsampled step -----------------------------
def _nan_input_run(at: int | None, steps: int = 40) -> gradvitals.Monitor:
    x, y = _data()
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def batch(i: int) -> tuple[Any, Any]:
        xb = x[(i * 32) % 480 : (i * 32) % 480 + 32].clone()
        if i == at:
            xb[3, 5] = float("nan")  # one unreadable value
        return xb, y[(i * 32) % 480 : (i * 32) % 480 + 32]

    return _train(model, opt, steps, batch, F.cross_entropy)


def _sampled(steps: int) -> set[int]:
    """The steps the default schedule measures (every=20, samples=2, warm-up)."""
    s, out = Schedule(), set()
    while s.start < steps:
        out |= set(range(s.sample_from, s.last + 1))
        s.advance(s.last)
    return out


@pytest.mark.parametrize("at", [1, 20], ids=["sampled", "unsampled"])
def test_nan_input_batch_names_the_input(at: int, replays: list[Any]) -> None:
    assert (at in _sampled(40)) is (at == 1)  # windows [0] [1, 2] ... [15..30]: 29, 30
    f = _first(_nan_input_run(at))
    assert f.kind is FailureMode.NONFINITE and f.cause is Cause.NONFINITE_INPUT
    assert f"step {at}" in f.evidence["cause_evidence"]
    assert _keys(f)[0] == "clean_inputs"


def test_clean_inputs_have_no_finding_and_never_replay(replays: list[Any]) -> None:
    monitor = _nan_input_run(None)
    assert monitor.findings == [] and replays == []


# -- NaN targets ----------------------------------------------------------------------------
def _regression(nan_at: int | None, before_backward: bool) -> gradvitals.Monitor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 8, generator=g)
    y = x @ torch.randn(8, generator=g)
    if nan_at is not None:
        y[nan_at * 32 + 7] = float("nan")  # a missing label in that step's batch
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return _train(
        model,
        opt,
        12,
        lambda i: (x[i * 32 : i * 32 + 32], y[i * 32 : i * 32 + 32]),
        lambda out, t: F.mse_loss(out.squeeze(1), t),
        observe_before_backward=before_backward,
    )


@pytest.mark.parametrize("before_backward", [False, True], ids=["inferred", "read"])
def test_nan_targets_name_the_targets(before_backward: bool, replays: list[Any]) -> None:
    f = _first(_regression(2, before_backward))
    assert f.kind is FailureMode.NONFINITE and f.cause is Cause.NONFINITE_TARGET
    assert _keys(f)[0] == "clean_targets"


def test_clean_targets_have_no_finding_and_never_replay(replays: list[Any]) -> None:
    monitor = _regression(None, before_backward=False)
    assert monitor.findings == [] and replays == []


# -- a float16 overflow: attention scores computed in half precision ----------------------
class HalfScores(nn.Module):
    """Attention scores in float16 (as under fp16 autocast): q.k over 64 features of
    activations around 40 reaches 1e5, past float16's 65504."""

    def __init__(self, d: int, half: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)
        self.half_scores = half

    def forward(self, h: Any) -> Any:
        q = self.proj(h)
        q = q.half() if self.half_scores else q
        scores = q @ q.transpose(1, 2)  # no 1/sqrt(d): the overflow of the report
        return (scores.float().softmax(-1) @ h).mean(1)


def _fp16_run(half: bool) -> gradvitals.Monitor:
    torch.manual_seed(0)
    d = 64
    scores = HalfScores(d, half)
    model = nn.Sequential(nn.Linear(d, d), scores, nn.Linear(d, 2))
    with torch.no_grad():
        scores.proj.weight.mul_(60.0)  # activations of ~50 after the projection
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, d, generator=g) * 3.0
    y = (x.mean((1, 2)) > 0).long()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    return _train(
        model, opt, 6, lambda i: (x[i * 8 : i * 8 + 8], y[i * 8 : i * 8 + 8]), F.cross_entropy
    )


def test_fp16_overflow_names_the_overflowing_module(replays: list[Any]) -> None:
    f = _first(_fp16_run(half=True))
    assert f.kind is FailureMode.NONFINITE and f.cause is Cause.LOW_PRECISION_OVERFLOW
    assert f.layer == "1"  # HalfScores: the module whose matmul overflowed
    assert _keys(f)[0] == "fix_precision"
    prov = [p for p in replays if p is not None]
    assert prov[0].kind == "overflow" and prov[0].dtype == "float16" and prov[0].module == "1"


def test_scores_in_float32_have_no_finding_and_never_replay(replays: list[Any]) -> None:
    monitor = _fp16_run(half=False)
    assert monitor.findings == [] and replays == []


# -- a learning rate too large --------------------------------------------------------------
def _lr_run(lr: float) -> gradvitals.Monitor:
    x, y = _data()
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return _train(
        model,
        opt,
        60,
        lambda i: (x[(i * 32) % 480 :][:32], y[(i * 32) % 480 :][:32]),
        F.cross_entropy,
    )


def test_learning_rate_divergence_names_the_learning_rate(replays: list[Any]) -> None:
    monitor = _lr_run(20.0)
    f = _first(monitor)
    assert f.cause is Cause.LEARNING_RATE
    assert f.kind in (FailureMode.EXPLODING_GRADIENT, FailureMode.NONFINITE, FailureMode.DYING_RELU)
    assert _keys(f)[0] == "lower_lr"


def test_a_good_learning_rate_has_no_finding_and_never_replays(replays: list[Any]) -> None:
    monitor = _lr_run(0.02)
    assert monitor.findings == [] and replays == []


# -- zero_grad: missing, and legitimate gradient accumulation -------------------------------
def _zero_grad_run(zero_grad: bool, accumulate: int = 1) -> gradvitals.Monitor:
    x, y = _data()
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return _train(
        model,
        opt,
        60,
        lambda i: (x[(i * 16) % 496 :][:16], y[(i * 16) % 496 :][:16]),
        F.cross_entropy,
        zero_grad=zero_grad,
        accumulate=accumulate,
    )


def test_missing_zero_grad_is_named(replays: list[Any]) -> None:
    f = _first(_zero_grad_run(zero_grad=False))
    assert f.cause is Cause.MISSING_ZERO_GRAD and _keys(f)[0] == "zero_grad"


def test_gradient_accumulation_is_not_a_missing_zero_grad(replays: list[Any]) -> None:
    monitor = _zero_grad_run(zero_grad=True, accumulate=4)  # 4 backward passes per step
    assert monitor.findings == [] and replays == []
    assert monitor.history and not any(r.batch and r.batch.stale_grad for r in monitor.history)


# -- remedies that fit the architecture -----------------------------------------------------
def _session(**facts: Any) -> Session:
    s = Session(framework="torch", console=False)
    s.model_facts = {"framework": "torch", "has_normalization": False, "recurrent": [], **facts}
    return s


def _exploding_windows() -> list[WindowRecord]:
    """Five healthy windows, then a gradient norm 50x its median with the loss rising."""
    out = []
    for i in range(6):
        g, loss = (50.0, 4.0) if i == 5 else (1.0 + 0.01 * i, 2.3 - 0.01 * i)
        lay = LayerStats(
            "fc", grad_norm=g, weight_norm=10.0, update_norm=0.01, numel=64, n_samples=2
        )
        out.append(
            WindowRecord(
                i, 10 * i, 10 * i + 9, layers={"fc": lay}, loss=LossStats(sum=loss, count=1)
            )
        )
    return out


def _submit_all(s: Session, records: list[WindowRecord]) -> list[Finding]:
    found: list[Finding] = []
    for r in records:
        found += s.submit(r)
    return found


@pytest.mark.parametrize("norm", [True, False])
def test_batchnorm_is_not_offered_to_a_model_that_normalizes(norm: bool) -> None:
    found = _submit_all(_session(has_normalization=norm), _exploding_windows())
    f = next(f for f in found if f.kind is FailureMode.EXPLODING_GRADIENT)
    assert ("batchnorm" in _keys(f)) is (not norm)


def _saturated(i: int, site: str, fraction: float) -> WindowRecord:
    n = 64 * 32
    s = SiteStats(site, "tanh", 32, n_examples=64, n_elements=n, n_saturated=int(fraction * n))
    lay = LayerStats("fc", grad_norm=1.0, weight_norm=10.0, update_norm=0.01, numel=64, n_samples=2)
    return WindowRecord(
        i, 10 * i, 10 * i + 9, sites={site: s}, layers={"fc": lay}, loss=LossStats(sum=2.0, count=1)
    )


@pytest.mark.parametrize("recurrent", [True, False])
def test_no_activation_swap_inside_an_lstm(recurrent: bool) -> None:
    s = _session(recurrent=["rnn"] if recurrent else [])
    found = _submit_all(s, [_saturated(i, "rnn", 0.95) for i in range(4)])
    f = next(f for f in found if f.kind is FailureMode.SATURATION)
    assert f.layer == "rnn"
    swaps = {"relu_he", "leaky_variant"} & set(_keys(f))
    assert (swaps == set()) is recurrent


@pytest.mark.parametrize("mid_training", [True, False])
def test_no_reinit_for_saturation_mid_training(mid_training: bool) -> None:
    healthy = [_saturated(i, "act", 0.05) for i in range(6)] if mid_training else []
    start = len(healthy)
    found = _submit_all(
        _session(), healthy + [_saturated(start + i, "act", 0.95) for i in range(4)]
    )
    f = next(f for f in found if f.kind is FailureMode.SATURATION)
    reinit = {"xavier_init", "he_init", "reinit"} & set(_keys(f))
    assert (reinit == set()) is mid_training
    assert (f.cause is Cause.BAD_INIT) is (not mid_training)


def test_no_activation_swap_for_a_real_lstm_finding() -> None:
    """A real LSTM whose hidden state saturates from the start (gates held open, a cell
    that integrates large positive inputs): the finding names the LSTM and offers no
    ReLU/LeakyReLU swap (its gates are fixed sigmoid/tanh)."""

    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.rnn = nn.LSTM(4, 16, batch_first=True)
            self.out = nn.Linear(16, 1)
            bias: Any = self.rnn.bias_ih_l0
            with torch.no_grad():  # input, forget and output gates open (i, f, g, o)
                bias[:32].fill_(30.0)
                bias[48:].fill_(30.0)

        def forward(self, x: Any) -> Any:
            return self.out(self.rnn(x)[0][:, -1]).squeeze(1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, 4, generator=g).abs() * 30.0
    y = x.sum((1, 2)) / 100.0
    model = Seq()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    monitor = _train(
        model, opt, 12, lambda i: (x[i * 16 : i * 16 + 16], y[i * 16 : i * 16 + 16]), F.mse_loss
    )
    hits = [f for f in monitor.findings if f.layer == "rnn"]
    assert [f.kind for f in hits] == [FailureMode.SATURATION]
    assert _keys(hits[0]) and not {"relu_he", "leaky_variant"} & set(_keys(hits[0]))


def test_loss_graph_keeps_the_loss_own_ops() -> None:
    from gradvitals.torch._batch import loss_graph

    model = _mlp()
    out = model(torch.randn(4, 16))
    g = loss_graph(F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).grad_fn)
    ops = [o.removesuffix("Backward0") for o in g["ops"]]
    assert ops[:2] == ["NllLoss", "LogSoftmax"] and len(g["layers"]) == 1
    assert "Relu" not in ops  # the model's hidden layers are not the loss's


@pytest.mark.parametrize(
    ("batch", "bad"),
    [
        (torch.full((64, 64), 60000.0, dtype=torch.float16), False),  # its fp16 sum overflows
        (torch.full((64, 64), 3e38), False),  # near float32's largest, still finite
        (torch.tensor([[float("inf"), float("-inf")]]), True),  # +inf and -inf: NaN, bad
        (torch.tensor([[1.0, float("nan")]], dtype=torch.bfloat16), True),
    ],
    ids=["fp16-large", "fp32-large", "inf-cancel", "bf16-nan"],
)
def test_the_per_step_input_check_is_exact_for_finite_batches(
    batch: torch.Tensor, bad: bool
) -> None:
    from gradvitals.torch._batch import BatchAccumulator

    acc = BatchAccumulator()
    acc.add_input(batch, step=0, sampled=False)
    forwards, n_bad = acc.pack(torch.device("cpu"))[:2].tolist()
    assert (forwards, n_bad) == (1.0, float(bad))
