"""Repair follows the cause, and says when the training loop undoes it.

- a loop that sets ``g['lr']`` every step (nanoGPT's cosine schedule) undoes ``lower_lr``:
  the override is detected and reported, and ``monitor.lr_scale`` makes the repair hold;
- a poisoned batch is skipped (``skip_batch``), not answered with a learning-rate cut, and
  a later poisoned batch is skipped again without giving up;
- the actions of a mode are not repeated when its cause changes between findings.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import gradvitals
from gradvitals import Cause, FailureMode
from gradvitals.remedies import RepairPolicy
from gradvitals.remedies import _ledger as ledger


def _regression(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    x = torch.randn(512, 8)
    return model, x, x[:, :1] * 2.0 + x[:, 1:2]


def _run(loop_lr: Any, *, steps: int, lr: float, use_scale: bool, scale: float = 8.0) -> Any:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    mon = gradvitals.watch(model, opt, every=5, repair=True, lint=False, console=False)
    for t in range(steps):
        for g in opt.param_groups:  # the loop owns the learning rate, every step
            g["lr"] = loop_lr(t) * (mon.lr_scale if use_scale else 1.0)
        i = (t * 32) % 512
        loss = nn.functional.mse_loss(model(x[i : i + 32] * scale), y[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    return mon, opt


def test_a_loop_that_sets_the_lr_every_step_is_caught_undoing_lower_lr() -> None:
    mon, _ = _run(lambda t: 0.5, steps=60, lr=0.5, use_scale=False)
    assert any(r["action"] == "lower_lr" for r in mon.repairs)
    assert any("sets g['lr'] every step" in n for n in mon.session.notes)
    assert "monitor.lr_scale" in mon.report()
    assert mon.lr_scale < 1.0


def test_multiplying_the_schedule_by_lr_scale_makes_the_repair_hold() -> None:
    mon, opt = _run(lambda t: 0.5, steps=60, lr=0.5, use_scale=True)
    assert any(r["action"] == "lower_lr" for r in mon.repairs)
    assert not any("sets g['lr'] every step" in n for n in mon.session.notes)
    assert opt.param_groups[0]["lr"] == 0.5 * mon.lr_scale < 0.5


def test_a_healthy_loop_that_sets_its_lr_is_left_alone() -> None:
    def cosine(t: int) -> float:
        return 0.001 + 0.01 * 0.5 * (1 + math.cos(math.pi * t / 60))

    mon, _ = _run(cosine, steps=60, lr=0.01, use_scale=False, scale=1.0)
    assert mon.findings == [] and mon.repairs == [] and mon.session.notes == []
    assert mon.lr_scale == 1.0


def test_poisoned_batches_are_skipped_not_answered_with_a_learning_rate_cut() -> None:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradvitals.watch(model, opt, every=5, repair=True, lint=False, console=False)
    poisoned = {7, 23, 41}
    for t in range(60):
        i = (t * 32) % 512
        xb = x[i : i + 32].clone()
        if t in poisoned:
            xb[3, 2] = float("nan")
        loss = nn.functional.mse_loss(model(xb), y[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    first = mon.findings[0]
    assert first.kind is FailureMode.NONFINITE and first.cause is Cause.NONFINITE_INPUT
    assert first.remedies[0].key == "clean_inputs"
    assert [r["action"] for r in mon.repairs] == ["skip_batch"]
    assert not any(f.final for f in mon.findings)  # later poisoned batches: skipped again
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert any(n.startswith("skip_batch: skipped") for n in mon.session.notes)


def test_a_clean_run_never_installs_the_skip_guard() -> None:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradvitals.watch(model, opt, every=5, repair=True, lint=False, console=False)
    for t in range(30):
        i = (t * 32) % 512
        loss = nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    assert mon.repairs == [] and mon.session.repair.host.guard is None


def test_actions_are_not_repeated_when_the_cause_changes() -> None:
    policy = RepairPolicy()
    done = [{"kind": "dying_relu", "action": "lower_lr", "cause": "learning_rate"}]
    # a later dying finding whose cause is unknown continues the mode's list
    assert ledger.next_actions(policy, done, FailureMode.DYING_RELU, Cause.UNKNOWN) == [
        "leaky_variant",
        "reinit_dead",
    ]
    # a skipped poisoned batch does not use up the learning-rate actions of a divergence
    done = [{"kind": "nonfinite", "action": "skip_batch", "cause": "nonfinite_input"}]
    assert ledger.next_actions(policy, done, FailureMode.NONFINITE, Cause.LEARNING_RATE) == [
        "lower_lr",
        "clip_grad_norm",
        "lower_lr",
    ]


class _FakeHost:
    """A host that records what it was asked to do (framework-free repair tests)."""

    def __init__(self) -> None:
        from gradvitals.remedies import ActionRegistry

        self.actions = ActionRegistry("fake")
        self.applied: list[str] = []
        for name in ("lower_lr", "clip_grad_norm"):
            self.actions.register(name)(
                lambda host, ctx, name=name: host.applied.append(name) or f"{name} done"
            )

    def capture(self, step: int) -> bool:
        return True

    def restore(self) -> int | None:
        return 0

    def after_repair(self, applied: Any) -> None:
        pass

    def check(self) -> list[str]:
        return []

    def handled(self, kind: Any, cause: Any) -> str | None:
        return None


def _scripted_session(script: dict[int, list[Any]]) -> tuple[Any, _FakeHost]:
    """A session whose detectors report ``script[window]`` (findings) per window."""
    from gradvitals.session import Session

    s = Session(console=False, every=10)
    host = _FakeHost()
    s.enable_repair(host, RepairPolicy(max_attempts=3))
    s.suite.update = lambda rec: [f() for f in script.get(rec.index, [])]  # type: ignore[method-assign]
    return s, host


def _boom(step: int) -> Any:
    from gradvitals.findings import Finding

    return lambda: Finding(
        FailureMode.EXPLODING_GRADIENT,
        "fc",
        step,
        "norm jumped",
        {"first_loss": 1.0},
        cause=Cause.LEARNING_RATE,
    )


def _window(i: int, loss: float) -> Any:
    from gradvitals.stats import LossStats, WindowRecord

    return WindowRecord(i, 10 * i, 10 * i + 9, loss=LossStats(sum=loss, count=1))


def test_an_explosion_that_comes_back_after_its_repair_is_repaired_again() -> None:
    # window 1 explodes and is repaired; window 2 explodes again while the first
    # episode is still open (the loss is still far above its start): the second
    # finding is nested under the first, but the repair did not hold, so the
    # controller must see it and take the next action
    s, host = _scripted_session({1: [_boom(19)], 2: [_boom(29)]})
    for i, loss in enumerate([1.0, 5.0, 5.0]):
        s.submit(_window(i, loss))
    assert [r["action"] for r in s.repairs] == ["lower_lr", "clip_grad_norm"]
    assert host.applied == ["lower_lr", "clip_grad_norm"]
    # one root, the recurrence nested under it
    assert [f.step for f in s.findings if not f.final] == [19]
    assert [f.step for f in s.findings[0].consequences] == [29]


def test_a_second_explosion_without_a_repair_in_between_is_only_nested() -> None:
    # without repair acting on the first episode, a second finding of the same episode
    # is its consequence and nothing more; with repair off, nothing is applied at all
    from gradvitals.session import Session

    s = Session(console=False, every=10)
    s.suite.update = lambda rec: [_boom(10 * rec.index + 9)()] if rec.index in (1, 2) else []  # type: ignore[method-assign]
    for i, loss in enumerate([1.0, 5.0, 5.0]):
        s.submit(_window(i, loss))
    assert s.repairs == []
    assert [f.step for f in s.findings] == [19]
    assert [f.step for f in s.findings[0].consequences] == [29]
