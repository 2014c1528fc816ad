"""In-flight repair: seeded failures on sklearn digits, repaired without restarting.

Each test induces one failure, shows it fails without repair, and asserts what the
repair log says was done and that the run ends healthy. One thread, a few epochs: the
file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import gradvitals
from conftest import seeded
from gradvitals.errors import UsageError
from gradvitals.findings import FailureMode, Finding
from gradvitals.remedies._policy import RepairPolicy
from gradvitals.stats import LayerStats, LossStats, SiteStats, WindowRecord
from gradvitals.torch._repair_actions import GradClip, scale_lr

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gradvitals")


@functools.lru_cache(maxsize=1)
def digits() -> Data:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def mlp(widths: list[int], act: Callable[[], nn.Module], std: float | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        lin = nn.Linear(widths[i], widths[i + 1])
        if std is not None:
            nn.init.normal_(lin.weight, 0.0, std)
            nn.init.zeros_(lin.bias)
        layers += [lin, act()] if i < len(widths) - 2 else [lin]
    return nn.Sequential(*layers)


def fit(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    *,
    epochs: int = 5,
    scale: float = 1.0,
    sched: Any = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    seed: int = 0,
    **watch: Any,
) -> tuple[float, gradvitals.torch.Monitor | None]:
    """Train on digits; returns (test accuracy, monitor). Accuracy is 0 for NaN outputs."""
    xtr, ytr, xte, yte = digits()
    monitor = gradvitals.watch(model, opt, lint=False, **watch) if watch else None
    order = torch.Generator().manual_seed(seeded(1 + seed))
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=order)
        for i in range(0, len(xtr), 32):
            idx = perm[i : i + 32]
            loss = loss_fn(model(xtr[idx] * scale), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if monitor is not None:
                monitor.observe_loss(loss)
    if monitor is not None:
        monitor.close()
    with torch.no_grad():
        out = model(xte * scale)
    acc = float((out.argmax(1) == yte).float().mean()) if torch.isfinite(out).all() else 0.0
    return acc, monitor


def actions(monitor: Any) -> list[tuple[str, str]]:
    return [(r["kind"], r["action"]) for r in monitor.repairs]


def assert_ends_healthy(monitor: Any) -> None:
    assert not any(f.final for f in monitor.findings), monitor.report()
    assert monitor.repairs and monitor.repairs[-1]["healthy_after"] is True, monitor.repairs
    last = monitor.history[-1]
    assert math.isfinite(last.loss.mean), last.loss


def assert_names_the_other_layers(monitor: Any, repair: dict[str, Any]) -> None:
    """The reason names every other layer of the same kind found in the repaired window."""
    layers = [
        f.layer
        for f in monitor.findings
        if f.kind.value == repair["kind"] and f.step == repair["step"] and f.layer
    ]
    assert layers and layers[0] == repair["layer"], (layers, repair)
    if len(layers) > 1:
        assert repair["reason"].endswith(f"; the findings also named {', '.join(layers[1:])}")
    else:
        assert "also named" not in repair["reason"]


# Outcomes. Which finding a run's trajectory shows first, the window it shows it in, and
# the accuracy it ends with depend on floating-point rounding, which differs between
# CPUs (issue 13: 0.879 on an AMD EPYC where this machine gave 0.897). So the repair
# tests assert what the repair controller guarantees (the action, the rollback, the lr,
# `healthy_after`) on several seeds, and an accuracy floor set far below the spread
# measured over 20 trajectories of each setup (seeds 0-9 under the native AVX-512
# kernels, seeds 0-4 under ATEN_CPU_CAPABILITY=avx2 and 0-4 under =default; 1 thread;
# 2 threads gave the same trajectories). docs/testing.md has the table.
SEEDS = (0, 1, 2)


# -- induced failures ------------------------------------------------------------------
def exploding_setup(lr: float, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = mlp([64, 128, 128, 10], nn.LeakyReLU)
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def test_exploding_is_repaired_by_lowering_the_lr() -> None:
    acc_broken, _ = fit(*exploding_setup(0.3), scale=5.0)
    assert acc_broken == 0.0  # diverges to NaN (20 of 20 measured trajectories)
    for seed in SEEDS:
        model, opt = exploding_setup(0.3, seed)
        acc, monitor = fit(model, opt, scale=5.0, repair=True, seed=seed)
        assert monitor is not None
        first = monitor.repairs[0]
        # the run blows up within a window or two: 19 of 20 trajectories show it as
        # exploding_gradient first, one went straight to NaN (nonfinite); both lower the lr
        assert (first["kind"], first["action"]) in {
            ("exploding_gradient", "lower_lr"),
            ("nonfinite", "lower_lr"),
        }, actions(monitor)
        assert "rolled back to the healthy state of step" in first["reason"]
        assert first["rollback_step"] < first["step"]
        assert "lr 0.3 -> 0.03" in first["reason"]
        assert opt.param_groups[0]["lr"] <= 0.03 + 1e-12
        assert_ends_healthy(monitor)
        # repaired: 0.937-0.980 (mean 0.957, sd 0.012); the lr-0.03 control run gives
        # 0.934-0.972; chance is 0.10
        assert acc > 0.85, (seed, acc)


def dying_setup(lr: float, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = mlp([64, 64, 64, 64, 64, 10], nn.ReLU)
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def test_dying_relu_is_repaired() -> None:
    model, opt = dying_setup(0.5)
    acc_broken, monitor = fit(model, opt, every=20)  # watched, not repaired
    assert monitor is not None
    assert "dying_relu" in {f.kind.value for f in monitor.findings}
    last = [r for r in monitor.history if r.sites][-1]
    dead = [s.dead_fraction for s in last.sites.values() if s.relu_like]
    # measured: a layer 100% dead and accuracy 0.078-0.108 in all 20 trajectories
    assert max(dead) > 0.9 and acc_broken < 0.2
    for seed in SEEDS:
        model, opt = dying_setup(0.5, seed)
        acc, monitor = fit(model, opt, epochs=8, repair=True, seed=seed)
        assert monitor is not None
        first = monitor.repairs[0]
        # lr 0.5 kills units (17 of 20 trajectories report dying_relu first) or first
        # makes the weights jump (3 of 20: exploding_gradient); both lower the lr
        assert (first["kind"], first["action"]) in {
            ("dying_relu", "lower_lr"),
            ("exploding_gradient", "lower_lr"),
        }, actions(monitor)
        assert "lr 0.5 -> 0.05" in first["reason"]
        assert_names_the_other_layers(monitor, first)
        assert_ends_healthy(monitor)
        # repaired: 0.867-0.937 (mean 0.905, sd 0.027); the lr-0.05 control run gives
        # 0.867-0.957, and this test failed on an AMD EPYC when it required 0.05 of it
        assert acc > 0.75, (seed, acc)


def test_a_dying_relu_finding_lowers_the_lr_and_names_the_other_layers() -> None:
    """The default policy's first answer to dead units, on scripted findings."""
    model, opt = dying_setup(0.5)
    # one long window: no real finding can come first, whatever the trajectory
    monitor = gradvitals.watch(model, opt, lint=False, repair=True, every=100, warmup=False)
    xtr, ytr, _, _ = digits()
    for i in range(0, 8 * 32, 32):
        loss = nn.functional.cross_entropy(model(xtr[i : i + 32]), ytr[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    step = monitor.step_count
    found = [Finding(FailureMode.DYING_RELU, name, step, "dead") for name in ("1", "3", "5", "7")]
    monitor.session.repair.on_findings(found, _record(step))
    assert actions(monitor) == [("dying_relu", "lower_lr")]
    rep = monitor.repairs[0]
    assert rep["layer"] == "1" and rep["attempt"] == 1 and rep["healthy_after"] is None
    assert rep["reason"] == (
        f"rolled back to the healthy state of step {rep['rollback_step']}; "
        "lr 0.5 -> 0.05; the findings also named 3, 5, 7"
    )
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    monitor.session.repair.on_healthy(_record(step))  # the next window is clean
    assert monitor.repairs[0]["healthy_after"] is True
    monitor.close()


def test_dying_relu_policy_swaps_to_leaky_then_reinitialises_dead_units() -> None:
    """The policy's order, on scripted findings (a real run may show exploding first)."""
    model, opt = dying_setup(0.5)
    policy = RepairPolicy(actions={"dying_relu": ["leaky_variant", "reinit_dead"]})
    monitor = gradvitals.watch(model, opt, lint=False, policy=policy, every=100, warmup=False)
    xtr, ytr, _, _ = digits()
    for i in range(0, 4 * 32, 32):
        loss = nn.functional.cross_entropy(model(xtr[i : i + 32]), ytr[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    n_params = len(list(model.parameters()))
    step = monitor.step_count
    ev = {"units": 64, "dead_unit_indices": [2, 9], "site_role": "output"}
    monitor.session.repair.on_findings(
        [Finding(FailureMode.DYING_RELU, "1", step, "dead", evidence=ev)], _record(step)
    )
    assert actions(monitor) == [("dying_relu", "leaky_variant")]
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, nn.LeakyReLU) for m in model.modules()) == 4
    assert len(list(model.parameters())) == n_params  # swapping an activation adds no weights
    before = model[0].weight.detach().clone()
    monitor.session.repair.on_findings(
        [Finding(FailureMode.DYING_RELU, "1", step + 4, "dead", evidence=ev)], _record(step + 4)
    )
    assert actions(monitor) == [("dying_relu", "leaky_variant"), ("dying_relu", "reinit_dead")]
    w = model[0].weight.detach()
    rest = [i for i in range(64) if i not in (2, 9)]
    assert torch.equal(w[rest], before[rest]) and not torch.equal(w[[2, 9]], before[[2, 9]])
    monitor.close()


def test_vanishing_is_repaired_by_an_activation_swap() -> None:
    def setup(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = mlp([64] + [32] * 10 + [10], nn.Sigmoid)
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    acc_broken, _ = fit(*setup(0), epochs=8)
    assert acc_broken < 0.2  # measured 0.078-0.103: chance level
    for seed in SEEDS:
        model, opt = setup(seed)
        acc, monitor = fit(model, opt, epochs=8, repair=True, seed=seed)
        assert monitor is not None
        assert actions(monitor)[0] == ("vanishing_gradient", "relu_he")
        assert "He-initialised 10 layer(s)" in monitor.repairs[0]["reason"]
        assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())
        assert_ends_healthy(monitor)
        # the sites were re-planned: the new activations are watched
        assert all(s.activation == "leaky_relu" for s in monitor.history[-1].sites.values())
        # repaired: 0.773-0.934 (mean 0.876, sd 0.041; 5 of 20 were below the 0.85 this
        # test used to require)
        assert acc > 0.6, (seed, acc)


def test_saturation_is_repaired_by_xavier_init() -> None:
    def setup(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = mlp([64, 64, 64, 10], nn.Tanh, std=2.0)
        return model, torch.optim.SGD(model.parameters(), lr=0.05)

    for seed in SEEDS:
        acc_broken, _ = fit(*setup(seed), seed=seed)
        model, opt = setup(seed)
        acc, monitor = fit(model, opt, repair=True, seed=seed)
        assert monitor is not None
        assert actions(monitor) == [("saturation", "xavier_init")]
        assert monitor.repairs[0]["rollback_step"] == 0  # saturated from the first step
        assert "gain 1.67" in monitor.repairs[0]["reason"]  # tanh's gain, 5/3
        # Xavier-normal with gain 5/3 on a 64 -> 64 layer: std 5/3 * sqrt(2 / 128) = 0.208
        assert float(model[0].weight.detach().std()) == pytest.approx(0.208, abs=0.02)
        assert_ends_healthy(monitor)
        # broken 0.516-0.625, repaired 0.872-0.962 (1 of 20 below the 0.9 this test used
        # to require); the gain was at least 0.257
        assert acc > 0.8 and acc > acc_broken + 0.15, (seed, acc_broken, acc)


def warmup_setup(peak: float, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(seed)
    model = mlp([64, 128, 128, 10], nn.LeakyReLU)
    opt = torch.optim.SGD(model.parameters(), lr=peak, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.01 + 0.99 * min(1.0, s / 200))
    return model, opt, sched


def test_nonfinite_is_repaired() -> None:
    acc_broken, _ = fit(*exploding_setup(3.0), epochs=2, scale=5.0)
    assert acc_broken == 0.0
    for seed in SEEDS:
        model, opt = exploding_setup(3.0, seed)
        acc, monitor = fit(model, opt, scale=5.0, repair=True, seed=seed)
        assert monitor is not None
        # lr 3 is NaN at once, after steps as large as the weights: the cause is the
        # learning rate (not a poisoned batch), so the rate is cut
        assert monitor.findings[0].cause.value == "learning_rate"
        assert actions(monitor)[0] == ("nonfinite", "lower_lr")
        assert "lr 3 -> 0.3" in monitor.repairs[0]["reason"]
        assert all(r["cause"] == "learning_rate" for r in monitor.repairs)
        assert_ends_healthy(monitor)
        assert acc > 0.8, (seed, acc)  # measured 0.914-0.967 (mean 0.948)


def test_an_lr_scheduler_keeps_the_lowered_lr() -> None:
    model, opt, sched = warmup_setup(2.0)
    acc_broken, _ = fit(model, opt, sched=sched)
    assert acc_broken == 0.0  # warms up into NaN
    for seed in SEEDS:
        model, opt, sched = warmup_setup(2.0, seed)
        acc, monitor = fit(model, opt, sched=sched, policy=RepairPolicy(scheduler=sched), seed=seed)
        assert monitor is not None
        assert actions(monitor)[0][1] == "lower_lr"
        lowered = sum(1 for r in monitor.repairs if r["action"] == "lower_lr")
        assert sched.base_lrs[0] == pytest.approx(2.0 * 0.1**lowered)
        assert opt.param_groups[0]["lr"] == pytest.approx(sched.base_lrs[0])  # warm-up is over
        assert_ends_healthy(monitor)
        assert acc > 0.7, (seed, acc)  # measured 0.859-0.957 (mean 0.913, sd 0.030)


def test_a_scheduler_not_given_to_the_policy_is_pointed_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, opt, sched = warmup_setup(2.0)
    fit(model, opt, epochs=2, sched=sched, repair=True)
    assert "RepairPolicy(scheduler=scheduler)" in caplog.text


# -- guarantees ------------------------------------------------------------------------
def test_a_healthy_run_with_repair_is_bitwise_identical_to_an_unwatched_run() -> None:
    def run(**watch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
        torch.manual_seed(0)
        model = mlp([64, 64, 64, 10], nn.ReLU)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        _, monitor = fit(model, opt, epochs=2, **watch)
        return model.state_dict(), torch.get_rng_state(), monitor

    plain, rng_plain, _ = run()
    watched, rng_watched, monitor = run(repair=True, every=5)
    assert monitor is not None and monitor.repairs == [] and monitor.findings == []
    assert monitor.session.repair.host.snapshot.step > 0  # snapshots were taken
    assert torch.equal(rng_plain, rng_watched)  # and drew nothing from the RNG
    for k, v in plain.items():
        assert torch.equal(v, watched[k]), k


def test_a_hopeless_run_stops_after_the_bound_with_a_final_finding(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    model = mlp([64, 32, 10], nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def nan_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y) * float("nan")

    _, monitor = fit(model, opt, epochs=3, loss_fn=nan_loss, policy=RepairPolicy(max_attempts=2))
    assert monitor is not None
    # the outputs are finite and the loss is not: its cause is the loss, not the learning
    # rate, so repair skips the poisoned steps (the weights stay finite) and then gives up
    assert monitor.findings[0].cause.value == "unstable_loss"
    assert actions(monitor) == [("nonfinite", "skip_batch")]
    assert all(r["healthy_after"] is False for r in monitor.repairs)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    final = [f for f in monitor.findings if f.final]
    assert len(final) == 1 and final[0].kind is FailureMode.NONFINITE
    assert final[0].message.startswith("could not repair: ")
    assert "tried: skip_batch" in final[0].message
    assert "skip_batch: skipped" in monitor.report()
    assert "could not repair" in caplog.text
    assert "[could not repair]" in monitor.report()


def test_repairs_are_logged_reported_and_written_to_the_sink(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Sink:
        def __init__(self) -> None:
            self.repairs: list[dict[str, Any]] = []

        def write_window(self, record: Any, findings: Any) -> None: ...

        def write_repair(self, repair: dict[str, Any]) -> None:
            self.repairs.append(dict(repair))

        def write_final(self, findings: Any) -> None: ...

        def close(self) -> None: ...

    model, opt = exploding_setup(3.0)  # NaN within the first window on every seed tried
    sink = Sink()
    xtr, ytr, _, _ = digits()
    monitor = gradvitals.watch(model, opt, lint=False, repair=True)
    monitor.session.sinks.append(sink)
    for i in range(0, 640, 32):
        loss = nn.functional.cross_entropy(model(xtr[i : i + 32] * 5), ytr[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.observe_loss(loss)
    monitor.close()
    assert monitor.repairs
    assert [r["action"] for r in sink.repairs] == [r["action"] for r in monitor.repairs]
    assert sink.repairs[0]["healthy_after"] is not None  # written once settled
    # lr 3 on 5x inputs: NaN at once after steps as large as the weights, so the rate is
    # cut first (its cause is the learning rate)
    first = monitor.repairs[0]
    assert (first["kind"], first["action"]) == ("nonfinite", "lower_lr")
    assert "repair 1/3 for nonfinite" in caplog.text
    text = monitor.report()
    assert "Repairs:" in text and "lower_lr for nonfinite" in text


# -- optimizer consistency after structural changes ------------------------------------
def _record(step: int) -> WindowRecord:
    return WindowRecord(
        index=99,
        step_start=step,
        step_end=step,
        layers={"0": LayerStats("0", grad_norm=1.0, weight_norm=1.0, update_norm=1e-3)},
        loss=LossStats(sum=1.0, count=1),
    )


def test_add_norm_registers_new_parameters_and_keeps_adam_state() -> None:
    torch.manual_seed(0)
    model = mlp([64, 32, 32, 10], nn.Tanh)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    policy = RepairPolicy(actions={"vanishing_gradient": ["add_norm"]})
    xtr, ytr, _, _ = digits()
    monitor = gradvitals.watch(model, opt, lint=False, policy=policy, every=4)
    for i in range(0, 8 * 32, 32):
        loss = nn.functional.cross_entropy(model(xtr[i : i + 32]), ytr[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    old = list(model.parameters())
    snap = monitor.session.repair.host.snapshot
    saved = {
        id(p): {k: v.clone() for k, v in s.items()}
        for p, s in zip(snap._params, snap._opt_state, strict=True)
    }
    finding = Finding(FailureMode.VANISHING_GRADIENT, "0", monitor.step_count, "test")
    monitor.session.repair.on_findings([finding], _record(monitor.step_count))

    assert actions(monitor) == [("vanishing_gradient", "add_norm")]
    assert isinstance(model[1], nn.Sequential) and isinstance(model[1][0], nn.LayerNorm)
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert len(opt.param_groups) == 1  # joined the existing group: schedulers unaffected
    assert all(any(p is q for q in grouped) for p in model.parameters())
    assert len(grouped) == len(old) + 4  # two LayerNorms, weight and bias each
    for p in old:  # Adam state restored, not dropped
        for k, v in saved[id(p)].items():
            assert torch.equal(opt.state[p][k], v), k
    for i in range(8 * 32, 12 * 32, 32):  # trains on, and the new weights get state
        loss = nn.functional.cross_entropy(model(xtr[i : i + 32]), ytr[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert "exp_avg" in opt.state[model[1][0].weight]
    assert "1.1" in monitor.history[-1].sites  # re-planned: the wrapped Tanh is watched
    monitor.close()


def test_reinit_dead_units_resets_their_rows_and_momentum() -> None:
    torch.manual_seed(0)
    model = mlp([8, 6, 3], nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    policy = RepairPolicy(actions={"dying_relu": ["reinit_dead"]})
    monitor = gradvitals.watch(model, opt, lint=False, policy=policy)
    x = torch.randn(16, 8)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    monitor.session.repair.host.snapshot.capture(monitor.step_count)
    with torch.no_grad():
        model[0].bias[[1, 4]] = -100.0  # kill units 1 and 4
    before = model[0].weight.detach().clone()
    ev = {"units": 6, "dead_unit_indices": [1, 4], "site_role": "output"}
    finding = Finding(FailureMode.DYING_RELU, "1", 3, "dead", evidence=ev)
    monitor.session.repair.on_findings([finding], _record(3))
    w, b = model[0].weight, model[0].bias
    assert torch.equal(w[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
    assert not torch.equal(w[[1, 4]], before[[1, 4]])
    assert torch.equal(b[[1, 4]], torch.zeros(2))
    buf = opt.state[w]["momentum_buffer"]
    assert torch.equal(buf[[1, 4]], torch.zeros(2, 8)) and buf[[0, 2]].abs().sum() > 0
    monitor.close()


def test_snapshot_memory_is_params_plus_optimizer_state() -> None:
    model = mlp([64, 32, 10], nn.ReLU)
    n = sum(p.numel() * 4 for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 64)).sum().backward()
    opt.step()
    monitor = gradvitals.watch(model, opt, lint=False, policy=RepairPolicy(offload_to_cpu=True))
    snap = monitor.session.repair.host.snapshot
    assert 3 * n <= snap.nbytes <= 3 * n + 64  # weights + exp_avg + exp_avg_sq (+ steps)
    monitor.close()


# -- pieces ----------------------------------------------------------------------------
def test_our_clip_does_not_fight_a_tighter_user_clip() -> None:
    w = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    GradClip(1.0).install(opt)
    w.grad = torch.tensor([3.0, 4.0])
    torch.nn.utils.clip_grad_norm_([w], 0.5)  # the training loop's own, tighter clip
    opt.step()
    assert float(w.detach().norm()) == pytest.approx(0.5)


def test_scale_lr_scales_groups_and_scheduler_bases() -> None:
    w = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [w]}, {"params": [], "lr": 0.5}], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.01)
    assert scale_lr(opt, 0.1, sched) == "lr 1 -> 0.1 (and 1 more group)"
    assert sched.base_lrs == pytest.approx([0.1, 0.05])
    assert sched.eta_min == pytest.approx(0.001)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] < 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"actions": {"dying_relu": ["leaky"]}}, "unknown repair action 'leaky'.*leaky_variant"),
        ({"actions": {"exploding_gradient": ["reinit_dead"]}}, "cannot repair exploding"),
        ({"actions": {"born_dead": ["lower_lr"]}}, "cannot repair 'born_dead'"),
        ({"actions": {"dying_relu": "lower_lr"}}, r"write \['lower_lr'\]"),
        ({"lr_factor": 2.0}, "lr_factor must be in"),
        ({"swap_to": "gelu"}, "swap_to must be one of leaky_relu, relu"),
    ],
)
def test_policy_errors_teach(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        RepairPolicy(**kwargs)


def test_policy_must_be_a_repair_policy() -> None:
    model = mlp([4, 4, 2], nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UsageError, match=r"policy must be a gradvitals\.RepairPolicy"):
        gradvitals.watch(model, opt, lint=False, policy="aggressive")


def test_an_empty_action_list_turns_a_mode_off() -> None:
    torch.manual_seed(0)
    model = mlp([8, 6, 3], nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = gradvitals.watch(
        model, opt, lint=False, policy=RepairPolicy(actions={"dying_relu": []})
    )
    f = Finding(FailureMode.DYING_RELU, "1", 3, "dead", evidence={"units": 6})
    monitor.session.repair.on_findings([f], _record(3))
    assert monitor.repairs == [] and not any(f.final for f in monitor.findings)
    monitor.close()


def test_a_suspect_window_is_not_snapshotted() -> None:
    model = mlp([8, 6, 3], nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = gradvitals.watch(model, opt, lint=False, repair=True)
    rep = monitor.session.repair
    dead = SiteStats("1", "relu", 6, n_examples=64, n_elements=384, ever_positive=np.zeros(6, bool))
    rec = _record(5)
    rec.sites = {"1": dead}
    rep.on_healthy(rec)
    assert rep.snapshot_step == 0  # kept the attach-time snapshot
    rep.on_healthy(_record(6))
    assert rep.snapshot_step == monitor.step_count
    monitor.close()


def test_a_dict_policy_is_accepted() -> None:
    model = mlp([4, 4, 2], nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = gradvitals.watch(model, opt, lint=False, policy={"max_attempts": 1})
    assert monitor.session.repair.policy.max_attempts == 1
    monitor.close()
