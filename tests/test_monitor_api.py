"""The watch() contract: statistics, hooks, errors, robustness, AMP, compile, state."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import gradvitals
from conftest import digits, mlp, train
from gradvitals import FailureMode
from gradvitals.errors import UsageError


def _hooks_left(model: nn.Module, opt: torch.optim.Optimizer | None = None) -> int:
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    for p in model.parameters():
        n += len(getattr(p, "_post_accumulate_grad_hooks", None) or {})
    if opt is not None:
        n += len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)
    return n


def test_watching_does_not_change_training_bitwise() -> None:
    def run(watch: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = mlp(nn.ReLU, 3, 32)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        train(model, opt, digits(), steps=80, watch={"every": 3, "samples": 2} if watch else None)
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(False), run(True), strict=True):
        assert torch.equal(a, b)


def test_close_leaves_no_hooks_and_context_manager() -> None:
    torch.manual_seed(0)
    model = mlp(nn.ReLU, 2, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _hooks_left(model, opt)
    with gradvitals.watch(model, opt, every=2, console=False) as mon:
        for _ in range(5):
            loss = model(torch.randn(8, 64)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert _hooks_left(model, opt) > before
    assert mon.closed
    assert _hooks_left(model, opt) == before == 0


def test_manual_step_mode_without_optimizer() -> None:
    torch.manual_seed(0)
    model = mlp(nn.ReLU, 2, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradvitals.watch(model, every=4, console=False)
    for _ in range(8):
        loss = model(torch.randn(16, 64)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step()
    mon.close()
    rec = [r for r in mon.history if r.layers and r.layers["0"].n_samples][-1]
    assert rec.layers["0"].update_ratio > 0  # weights snapshotted at the sampled forward
    assert mon.step_count == 8


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, o: gradvitals.watch("not a model"), "expects a torch.nn.Module"),
        (
            lambda m, o: gradvitals.watch(m, torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=1)),
            "none of the model",
        ),
        (lambda m, o: gradvitals.watch(m, o, every=0), "every must be an integer >= 1"),
        (
            lambda m, o: gradvitals.watch(m, o, thresholds={"dead_frac": 0.5}),
            "unknown threshold 'dead_frac'.*dead_fraction",
        ),
        (lambda m, o: gradvitals.watch(m, o, thresholds={"dead_fraction": 1.5}), r"in \(0, 1\]"),
        (lambda m, o: gradvitals.watch(m, "sgd"), "must be a torch.optim.Optimizer"),
    ],
)
def test_bad_arguments_say_what_is_valid(call: object, match: str) -> None:
    model = mlp(nn.ReLU, 1, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UsageError, match=match):
        call(model, opt)  # type: ignore[operator]


def test_step_with_optimizer_is_an_error() -> None:
    model = mlp(nn.ReLU, 1, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with (
        gradvitals.watch(model, opt, console=False) as mon,
        pytest.raises(UsageError, match="step hooks"),
    ):
        mon.step()


def test_statistics_match_hand_computed_values() -> None:
    """One Linear(2->3)+ReLU+Linear(3->1) with fixed weights; every number checked by hand."""
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        model[2].bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.tensor([[1.0, 2.0], [3.0, 0.5]])  # unit 2's input is -3 and -3.5: dead
    mon = gradvitals.watch(model, opt, every=1, samples=1, console=False, warmup=False)
    out = model(x)
    loss = out.sum()
    mon.observe_loss(loss)
    opt.zero_grad()
    loss.backward()
    g0 = torch.cat([model[0].weight.grad.flatten(), model[0].bias.grad]).norm().item()
    w0_before = torch.cat([model[0].weight.flatten(), model[0].bias]).detach().clone()
    opt.step()
    mon.close()
    rec = mon.history[0]
    site = rec.sites["1"]
    assert site.ever_positive.tolist() == [True, True, False]
    assert site.dead_fraction == pytest.approx(1 / 3)
    assert site.n_zero == 2 and site.n_elements == 6 and site.n_examples == 2
    # d(sum out)/dW1 = w2[j] * 1[h_j > 0] * x  -> rows (1*[4, 2.5]), (2*[4, 2.5]), 0
    assert rec.layers["0"].grad_norm == pytest.approx(g0)
    assert g0 == pytest.approx(math.sqrt(5 * (4**2 + 2.5**2) + 5 * 2**2))
    w0_after = torch.cat([model[0].weight.flatten(), model[0].bias]).detach()
    assert rec.layers["0"].update_ratio == pytest.approx(
        (w0_after - w0_before).norm().item() / w0_after.norm().item()
    )
    assert rec.loss is not None and rec.loss.mean == pytest.approx(loss.item())


def test_saturation_statistic_hand_computed() -> None:
    model = nn.Sequential(nn.Linear(1, 4, bias=False), nn.Sigmoid())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[100.0], [0.0], [-100.0], [1.0]]))
    mon = gradvitals.watch(model, every=1, samples=1, console=False, warmup=False)
    model(torch.ones(5, 1)).sum().backward()
    mon.step()
    mon.close()
    s = mon.history[0].sites["1"]
    assert s.n_saturated == 10 and s.saturation == pytest.approx(0.5)


def test_shared_activation_module_gets_one_site_per_call() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(64, 32), nn.Linear(32, 16), nn.Linear(16, 10)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.act(self.b(self.act(self.a(x)))))

    torch.manual_seed(0)
    model = Shared()
    mon = train(
        model, torch.optim.SGD(model.parameters(), lr=0.1), digits(), steps=10, watch={"every": 5}
    )
    rec = [r for r in mon.history if r.sites][-1]
    assert {k: s.units for k, s in rec.sites.items()} == {"act": 32, "act#1": 16}


def test_copes_with_no_activations_frozen_unused_params_and_rnn() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.RNN(8, 16, batch_first=True)
            self.frozen = nn.Linear(16, 16)
            self.frozen.requires_grad_(False)
            self.unused = nn.Linear(3, 3)
            self.head = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(x)
            return self.head(self.frozen(out[:, -1]))

    torch.manual_seed(0)
    model = Odd()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    data = (torch.randn(64, 5, 8), torch.randint(0, 2, (64,)))
    mon = train(model, opt, data, steps=30, batch=16, watch={"every": 5})
    assert mon.findings == []
    rec = [r for r in mon.history if r.layers and r.layers["rnn"].n_samples][-1]
    assert rec.layers["rnn"].grad_norm > 0
    assert not rec.layers["unused"].has_grad
    assert "frozen" not in rec.layers
    # a purely linear model has no activation sites at all
    lin = nn.Sequential(nn.Linear(64, 10))
    mon = train(
        lin, torch.optim.SGD(lin.parameters(), lr=0.1), digits(), steps=10, watch={"lint": False}
    )
    assert all(not r.sites for r in mon.history) and mon.findings == []


def test_internal_error_in_one_statistic_switches_off_only_that_statistic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gradvitals.torch import _sites

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr(_sites, "activation_update", boom)
    monkeypatch.setenv("GRADVITALS_STRICT", "0")  # the default for users: warn, keep training
    torch.manual_seed(0)
    model = mlp(nn.ReLU, 2, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="stopped measuring activations.*training continues"):
        mon = train(model, opt, digits(), steps=20, watch={})
    assert not mon.disabled and set(mon.session.off) == {"activations"}
    full = mon.history[-2]  # the last full window (the last one is a partial, unsampled one)
    assert not full.sites and all(lay.has_grad for lay in full.layers.values())  # still watched
    assert "switched off after an internal error: activations (RuntimeError" in mon.report()
    assert _hooks_left(model) == 0


def test_an_error_outside_any_statistic_switches_the_monitor_off_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gradvitals.torch._monitor import Monitor

    def boom(self: object, *args: object) -> None:
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr(Monitor, "_collect", boom)
    monkeypatch.setenv("GRADVITALS_STRICT", "0")
    model = mlp(nn.ReLU, 2, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="stopped watching.*training continues"):
        mon = train(model, opt, digits(), steps=5, watch={})
    assert mon.disabled and _hooks_left(model) == 0


def test_strict_mode_raises_the_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under GRADVITALS_STRICT=1 (the suite's setting) nothing is swallowed."""
    from gradvitals.torch import _sites

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr(_sites, "activation_update", boom)
    monkeypatch.setenv("GRADVITALS_STRICT", "1")
    model = mlp(nn.ReLU, 2, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="synthetic failure"):
        train(model, opt, digits(), steps=3, watch={})


def test_console_logs_one_line_per_finding(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = mlp(nn.Sigmoid, 10, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = digits()
    with caplog.at_level(logging.WARNING, logger="gradvitals"), gradvitals.watch(model, opt) as mon:
        for _ in range(40):
            loss = nn.functional.cross_entropy(model(x[:64]), y[:64])
            mon.observe_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
    lines = [r.getMessage() for r in caplog.records if r.name == "gradvitals"]
    vanishing = [ln for ln in lines if "vanishing_gradient" in ln]
    assert len(vanishing) == 1 and "\n" not in vanishing[0]
    assert "vanishing_gradient" in mon.report()
    assert "Try" in vanishing[0] or "relu" in vanishing[0].lower()


def test_state_dict_round_trip_keeps_detector_state() -> None:
    torch.manual_seed(0)
    model = mlp(nn.Sigmoid, 10, 32)
    mon = train(model, torch.optim.SGD(model.parameters(), lr=0.1), digits(), steps=40, watch={})
    state = mon.state_dict()
    model2 = mlp(nn.Sigmoid, 10, 32)
    mon2 = gradvitals.watch(model2, console=False)
    mon2.load_state_dict(state)
    assert mon2.step_count == 40
    assert [f.to_dict() for f in mon2.findings] == [f.to_dict() for f in mon.findings]
    assert mon2.suite.state_dict() == mon.suite.state_dict()
    mon2.close()
    with pytest.raises(UsageError, match="state_dict"):
        mon2.load_state_dict({"nope": 1})


def test_amp_gradscaler_unscales_and_ignores_skipped_inf_steps() -> None:
    def run(scaler: torch.amp.GradScaler | None) -> gradvitals.torch.Monitor:
        torch.manual_seed(0)
        model = mlp(nn.ReLU, 2, 32)
        opt = torch.optim.SGD(model.parameters(), lr=0.002)
        x, y = digits()
        mon = gradvitals.watch(model, opt, every=5, console=False, scaler=scaler)
        for i in range(40):
            xb, yb = x[i * 16 : (i + 1) * 16], y[i * 16 : (i + 1) * 16]
            # x50 (and lr/50): gradients large enough that 2**127 overflows them
            loss = 50 * nn.functional.cross_entropy(model(xb), yb)
            mon.observe_loss(loss)
            opt.zero_grad()
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        mon.close()
        return mon

    plain = run(None)
    # a huge initial scale overflows the first backward passes: those steps are skipped
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=10**6)
    scaled = run(scaler)
    assert scaler.get_scale() < 2.0**127  # steps were skipped
    assert scaled.findings == []
    assert scaled.step_count < 40
    # gradient statistics are taken on unscaled gradients: same order as the plain run
    g_plain = np.median([r.total_grad_norm for r in plain.history if r.layers["0"].n_samples])
    g_amp = np.median([r.total_grad_norm for r in scaled.history if r.layers["0"].n_samples])
    assert 0.2 < g_amp / g_plain < 5


def test_torch_compile_statistics_arrive_without_graph_breaks() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="torch.compile"):
        mon = gradvitals.watch(compiled, opt, every=4, console=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(12):
            loss = compiled(torch.randn(32, 16)).pow(2).mean()
            mon.observe_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
    mon.close()
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 1
    assert any(r.layers["0"].n_samples and r.layers["0"].grad_norm > 0 for r in mon.history)
    assert mon.findings == []


def test_import_gradvitals_imports_no_framework() -> None:
    import subprocess
    import sys

    code = "import gradvitals, gradvitals.cli, sys; print(sorted(m for m in ('torch','tensorflow','keras','matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_findings_carry_kind_layer_step_message_evidence_remedies() -> None:
    torch.manual_seed(0)
    model = mlp(nn.ReLU, 4, 64)
    mon = train(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
        digits(),
        steps=80,
        watch={},
    )
    f = mon.findings[0]  # dying_relu on the seeds tried; exploding_gradient is possible
    assert f.kind in (FailureMode.DYING_RELU, FailureMode.EXPLODING_GRADIENT)
    assert isinstance(f.kind, FailureMode) and isinstance(f.kind, str)
    assert f.layer in dict(model.named_modules())
    assert 0 <= f.step < 80 and f.message and f.evidence and f.remedies
    assert f.kind is not FailureMode.DYING_RELU or "% of the units of" in f.message
    assert all(r.action and r.why and r.code for r in f.remedies)


def test_loss_observed_after_the_step_lands_in_its_own_window() -> None:
    """observe_loss() before or after optimizer.step(): the same windows, the same findings."""

    def run(after: bool) -> gradvitals.torch.Monitor:
        torch.manual_seed(0)
        model = mlp(nn.ReLU, 4, 64)
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        x, y = digits()
        g = torch.Generator().manual_seed(1)
        mon = gradvitals.watch(model, opt, console=False)
        for _ in range(60):
            idx = torch.randint(0, len(x), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(5 * x[idx]), y[idx])
            if not after:
                mon.observe_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after:
                mon.observe_loss(loss)
        mon.close()
        return mon

    before, after = run(False), run(True)
    assert before.history[0].loss is not None and before.history[0].loss.count == 1
    assert [r.loss.count for r in after.history if r.loss] == [
        r.loss.count for r in before.history if r.loss
    ]
    assert [r.loss.mean for r in after.history] == pytest.approx(
        [r.loss.mean for r in before.history], nan_ok=True
    )
    assert [(f.kind, f.layer, f.step) for f in after.findings] == [
        (f.kind, f.layer, f.step) for f in before.findings
    ]


def test_half_precision_activations_count_exactly() -> None:
    """Counts of fp16/bf16 activations are summed in fp32 (an fp16 sum overflows at 65504)."""
    from gradvitals.torch._sites import SiteAccumulator

    for dtype in (torch.float16, torch.bfloat16):
        acc = SiteAccumulator("r", "relu", "output", conv_like=False)
        x = torch.ones(1000, 200, dtype=dtype)
        x[:, :50] = 0
        acc.add(x, 0.01)
        packed = acc.pack(torch.device("cpu"))  # [ever_positive (200), n_zero, n_saturated, ...]
        assert int(packed[200]) == 50_000 and packed[:200].sum() == 150
        sat = SiteAccumulator("s", "sigmoid", "output", conv_like=False)
        y = torch.full((1000, 200), 0.5, dtype=dtype)
        y[:, :120] = 1.0
        sat.add(y, 0.01)
        assert int(sat.pack(torch.device("cpu"))[201]) == 120_000
