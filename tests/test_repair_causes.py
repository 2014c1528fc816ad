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
