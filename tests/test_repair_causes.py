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


def _poisoned_run(poisoned: set[int], steps: int) -> tuple[Any, nn.Module]:
    """SGD regression with repair on (every=5); a NaN input at the steps ``poisoned``."""
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradvitals.watch(model, opt, every=5, repair=True, lint=False, console=False)
    for t in range(steps):
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
    return mon, model


def test_poisoned_batches_are_skipped_not_answered_with_a_learning_rate_cut() -> None:
    mon, model = _poisoned_run({7, 23, 41}, steps=60)
    first = mon.findings[0]
    assert first.kind is FailureMode.NONFINITE and first.cause is Cause.NONFINITE_INPUT
    assert first.remedies[0].key == "clean_inputs"
    assert [r["action"] for r in mon.repairs] == ["skip_batch"]
    assert not any(f.final for f in mon.findings)  # later poisoned batches: skipped again
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert any(n.startswith("skip_batch: skipped") for n in mon.session.notes)


def test_a_poisoned_batch_the_guard_skips_right_after_the_repair_counts_as_held() -> None:
    # step 12 lands in the window right after the repair (steps 10-14)
    mon, _ = _poisoned_run({7, 12}, steps=30)
    assert [r["action"] for r in mon.repairs] == ["skip_batch"]
    assert mon.repairs[0]["healthy_after"] is True
    assert [f.evidence.get("handled_by") is not None for f in mon.findings] == [False, True]


def test_a_clean_run_never_installs_the_skip_guard() -> None:
    mon, _ = _poisoned_run(set(), steps=30)
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


# -- guard_op (opt-in): a fully padded sequence in nn.MultiheadAttention ------------------
class _PaddedAttention(nn.Module):
    """Embedding -> nn.MultiheadAttention with a key padding mask -> pooled logits."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(8, 16, padding_idx=0)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == 0
        h = self.emb(tokens)
        a, _ = self.attn(h, h, h, key_padding_mask=pad)  # need_weights=True: NaN rows
        keep = (~pad).unsqueeze(-1).float()
        return self.head((a * keep).sum(1) / keep.sum(1).clamp(min=1.0))


def _tokens(t: int, empty: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(t)
    tokens = torch.randint(1, 8, (16, 6), generator=g)
    tokens[:, 4:] = 0
    if empty:
        tokens[5] = 0  # one fully padded sequence: its attention row is all -inf
    return tokens, (tokens == 3).any(1).long()


def _padded_run(policy: RepairPolicy, empty_at: set[int]) -> tuple[Any, nn.Module]:
    """40 steps, every=5; a fully padded sequence at the steps ``empty_at``.

    Steps 10 and 30 open windows: they are sampled, so the replay names the op (a NaN
    born at an unsampled step is ``unknown``: its batch is gone).
    """
    torch.manual_seed(0)
    model = _PaddedAttention()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mon = gradvitals.watch(model, opt, every=5, policy=policy, lint=False, console=False)
    for t in range(40):
        tokens, labels = _tokens(t, t in empty_at)
        loss = nn.functional.cross_entropy(model(tokens), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    return mon, model


def test_guard_op_opens_fully_masked_attention_rows_when_opted_in() -> None:
    mon, model = _padded_run(RepairPolicy(opt_in=["guard_op"]), {10, 30})
    first = mon.findings[0]
    assert (first.kind, first.cause, first.layer) == (
        FailureMode.NONFINITE,
        Cause.UNSTABLE_OP,
        "attn",
    )
    assert [r["action"] for r in mon.repairs] == ["guard_op"]
    assert not any(f.final for f in mon.findings)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    # the hook outlives close(): evaluation on a fully padded input is finite
    tokens, _ = _tokens(99, empty=True)
    with torch.no_grad():
        assert bool(model(tokens).isfinite().all())


def test_guard_op_is_a_recommendation_unless_opted_in() -> None:
    assert "guard_op" not in RepairPolicy().actions_for(FailureMode.NONFINITE, Cause.UNSTABLE_OP)
    mon, model = _padded_run(RepairPolicy(), {10, 30})
    assert mon.findings[0].remedies[0].key == "guard_op"  # still the first advice
    assert [r["action"] for r in mon.repairs] == ["skip_batch"]
    tokens, _ = _tokens(99, empty=True)
    with torch.no_grad():
        assert not bool(model(tokens).isfinite().all())  # the forward was not changed


def test_guard_op_is_not_installed_on_a_run_without_empty_rows() -> None:
    mon, _ = _padded_run(RepairPolicy(opt_in=["guard_op"]), set())
    assert mon.findings == [] and mon.repairs == []
    assert mon.session.repair.host.guarded_ops == {}


def test_the_mask_hook_leaves_rows_with_a_visible_key_bitwise_unchanged() -> None:
    from gradvitals.torch._repair_actions import unmask_empty_rows

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(3, 5, 8)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    pad[2] = True  # fully padded
    before = mha(x, x, x, key_padding_mask=pad)[0]
    handle = mha.register_forward_pre_hook(unmask_empty_rows, with_kwargs=True)
    after = mha(x, x, x, key_padding_mask=pad)[0]
    assert torch.equal(before[:2], after[:2]) and bool(before[2].isnan().all())
    # the opened row is what a finite fill gives: attention over every key
    assert torch.allclose(after[2], mha(x[2:], x[2:], x[2:])[0][0])
    float_mask = torch.zeros(3, 5).masked_fill(pad, float("-inf"))
    assert torch.equal(mha(x, x, x, key_padding_mask=float_mask)[0], after)
    handle.remove()


def test_opt_in_names_only_actions_that_change_the_model() -> None:
    import pytest

    from gradvitals.errors import UsageError

    with pytest.raises(UsageError, match="Valid: guard_op"):
        RepairPolicy(opt_in=["lower_lr"])
    with pytest.raises(UsageError, match=r"write \['guard_op'\]"):
        RepairPolicy(opt_in="guard_op")
