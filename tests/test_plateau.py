"""stalled and diverged_plateau: scripted series in both directions, then real zoo runs.

Scripted windows are built by hand, so every firing window and number below is
computed from the rules in the detectors' docstrings. The real runs use the zoo's
tiny GPT-2, ViT and LSTM: each broken run must fire with the expected cause, and its
healthy twin (same model, data and seed) must stay quiet. Assertions are on kinds,
causes and windows, never on one seed's loss values.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest

from gradvitals import Cause, FailureMode, Finding, Thresholds
from gradvitals.detectors import DivergedPlateauDetector, StalledDetector
from gradvitals.errors import UsageError
from gradvitals.remedies import get_mode, remedies_for, training_modes, urgency
from gradvitals.session import DetectorSuite
from gradvitals.stats import LayerStats, LossStats, WindowRecord


def window(
    i: int,
    loss: float | None,
    *,
    grad: float = 0.5,
    update: float | None = 1e-3,
    weight: float = 1.0,
    has_grad: bool = True,
    layers: int = 2,
) -> WindowRecord:
    """Window ``i`` (steps 10i..10i+9): ``layers`` alike layers and one loss value."""
    lays = {
        f"fc{j}": LayerStats(
            f"fc{j}",
            grad_norm=grad if has_grad else math.nan,
            weight_norm=weight,
            update_norm=math.nan if update is None else update,
            numel=100,
            has_grad=has_grad,
            kind="Linear",
        )
        for j in range(layers)
    }
    lo = None if loss is None else LossStats(sum=loss, count=1)
    return WindowRecord(i, 10 * i, 10 * i + 9, layers=lays, loss=lo)


def run(det: Any, records: list[WindowRecord]) -> list[Finding]:
    return [f for r in records for f in det.update(r)]


# -- stalled: scripted ------------------------------------------------------------------------


def test_stalled_fires_on_the_third_window_without_a_step_and_blames_the_learning_rate() -> None:
    # gradients arrive (|g|/|w| = 0.5) but the optimizer moves nothing (lr = 0)
    found = run(StalledDetector(), [window(i, 4.15, update=0.0) for i in range(6)])
    assert [(f.step, f.cause) for f in found] == [(29, Cause.LEARNING_RATE)]
    (f,) = found
    assert f.kind is FailureMode.STALLED and f.layer is None
    assert f.evidence["max_grad_ratio"] == 0.5 and f.evidence["max_update_ratio"] == 0.0
    assert "gradients arrive" in f.evidence["cause_evidence"]


def test_stalled_without_any_gradient_is_no_gradient() -> None:
    # a graph cut before the loss: no parameter gets a .grad, nothing moves
    found = run(StalledDetector(), [window(i, 2.4, has_grad=False, update=0.0) for i in range(3)])
    assert [(f.step, f.cause) for f in found] == [(29, Cause.NO_GRADIENT)]
    assert found[0].evidence["layers_without_gradient"] == 2
    assert "no layer received a gradient" in found[0].evidence["cause_evidence"]


def test_stalled_zero_gradients_under_weight_decay_still_count_as_still() -> None:
    # a one-unit softmax: gradients exactly 0; AdamW's decay still shrinks the weights
    # by lr * wd = 3e-5 per step, far above 1e-6: that is not learning
    found = run(StalledDetector(), [window(i, 50.0, grad=0.0, update=3e-5) for i in range(3)])
    assert [f.cause for f in found] == [Cause.NO_GRADIENT]


def test_stalled_tiny_gradients_without_measured_steps_are_no_gradient() -> None:
    # no optimizer hooks (updates unmeasured): a gradient of 1e-9 |w| cannot move w
    found = run(StalledDetector(), [window(i, 1.0, grad=1e-9, update=None) for i in range(3)])
    assert [f.cause for f in found] == [Cause.NO_GRADIENT]


@pytest.mark.parametrize(
    ("name", "kw", "loss"),
    [
        ("healthy steps", dict(update=1e-3), 2.3),
        ("one layer still learns", dict(update=1e-3, layers=1), 2.3),
        ("gradients unmeasured but weights move", dict(has_grad=False, update=1e-3), 2.3),
        ("a gradient with no measured step", dict(update=None), 2.3),
        ("neither gradients nor steps measured", dict(has_grad=False, update=None), 2.3),
    ],
)
def test_stalled_is_quiet_when_something_moves(name: str, kw: dict[str, Any], loss: float) -> None:
    series = [window(i, loss, **kw) for i in range(6)]
    if name == "one layer still learns":  # fc0 moves, fc1 is still: not "everywhere"
        for r in series:
            r.layers["fc1"] = LayerStats("fc1", grad_norm=0.5, weight_norm=1.0, update_norm=0.0)
    assert run(StalledDetector(), series) == [], name


def test_stalled_is_quiet_on_a_converged_run_and_fires_on_a_constant_zero_loss() -> None:
    # tiny gradients because the loss went from 2.3 to 0.01: converged, not stalled
    series = [window(0, 2.3)] + [window(i, 0.01, grad=1e-10, update=0.0) for i in range(1, 6)]
    assert run(StalledDetector(), series) == []
    # cross-entropy over one class: the loss is exactly 0 from the start, gradients too
    zero = [window(i, 0.0, grad=0.0, update=0.0) for i in range(3)]
    assert [f.cause for f in run(StalledDetector(), zero)] == [Cause.NO_GRADIENT]


def test_stalled_loss_band_is_half_the_first_loss_and_patience_is_consecutive() -> None:
    t = Thresholds()
    assert (t.stall_loss_ratio, t.stall_patience, t.stall_update_ratio) == (0.5, 3, 1e-6)
    # 1.2 >= 2.3 - 0.5 * 2.3 = 1.15: still at its start level; 1.1 is not
    assert (
        len(
            run(
                StalledDetector(),
                [window(0, 2.3)] + [window(i, 1.2, update=0.0) for i in range(1, 4)],
            )
        )
        == 1
    )
    assert (
        run(StalledDetector(), [window(0, 2.3)] + [window(i, 1.1, update=0.0) for i in range(1, 4)])
        == []
    )
    # a negative log-likelihood: |L0| sets the band, -3.0 >= -3.0 - 1.5
    assert len(run(StalledDetector(), [window(i, -3.0, update=0.0) for i in range(3)])) == 1
    # a moving window in between restarts the count
    steps = [0.0, 0.0, 1e-3, 0.0, 0.0, 0.0]
    found = run(StalledDetector(), [window(i, 2.3, update=u) for i, u in enumerate(steps)])
    assert [f.step for f in found] == [59]


def test_stalled_without_a_loss_decides_from_the_layers_and_without_layers_not_at_all() -> None:
    assert len(run(StalledDetector(), [window(i, None, update=0.0) for i in range(3)])) == 1
    empty = [WindowRecord(i, i, i, loss=LossStats(sum=2.0, count=1)) for i in range(5)]
    assert run(StalledDetector(), empty) == []


def test_stalled_state_round_trip_and_rearm() -> None:
    series = [window(i, 4.1, update=0.0) for i in range(8)]
    a = StalledDetector()
    run(a, series[:2])
    b = StalledDetector()
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    assert [f.step for f in run(a, series[2:])] == [f.step for f in run(b, series[2:])] == [29]
    a.rearm()  # after a repair that did not help, the same stall fires again
    assert [f.step for f in run(a, [window(i, 4.1, update=0.0) for i in range(8, 11)])] == [109]
    a.rearm(forget_history=True)
    assert a.first_loss is None


# -- diverged_plateau: scripted ---------------------------------------------------------------

#: GPT-2 at 100x its learning rate, as the zoo shows it: a huge first Adam step, the loss
#: jumps, comes back to about where it started and stays there (a healthy run reaches ~1.5)
GPT2_100X = [4.14, 7.12, 5.91, 4.64, 4.40, 4.35, 4.58, 4.50, 4.41, 4.35]


def losses(values: list[float], first_step: float = 1e-3, step: float = 1e-3) -> list[WindowRecord]:
    return [window(i, v, update=first_step if i == 0 else step) for i, v in enumerate(values)]


def test_diverged_fires_after_four_windows_of_a_jump_that_does_not_come_back() -> None:
    found = run(DivergedPlateauDetector(), losses(GPT2_100X, first_step=1.0))
    assert [(f.step, f.cause) for f in found] == [(49, Cause.LEARNING_RATE)]
    ev = found[0].evidence
    # S = max(|4.14|, 4.14 - 4.14) = 4.14; the jump 7.12 - 4.14 = 2.98 >= 0.4 * 4.14
    assert ev["scale"] == pytest.approx(4.14) and ev["jump_step"] == 19
    assert ev["best_loss"] == 4.14 and ev["windows"] == 4
    assert ev["lost_progress"] == pytest.approx((4.40 - 4.14) / 4.14)
    assert "step was 1 of its weights" in ev["cause_evidence"]


def test_diverged_cause_from_a_gradient_norm_spike_or_unknown() -> None:
    series = losses(GPT2_100X)
    for r in series:  # every step is 1e-3 of the weights: no large step anywhere
        for lay in r.layers.values():
            lay.grad_norm = 0.5
    for lay in series[1].layers.values():
        lay.grad_norm = 40.0  # the jump window's norm: 80x the median of the one before
    (f,) = run(DivergedPlateauDetector(), series)
    assert f.cause is Cause.LEARNING_RATE and "spiked" in f.evidence["cause_evidence"]
    # without either, a rise of 0.4-0.8 S is batch noise; from 0.8 S on it is a jump
    assert run(DivergedPlateauDetector(), losses(GPT2_100X)) == []
    big = [4.14, 8.0, 6.0, 4.6, 4.4, 4.3]  # 3.86 = 0.93 S
    (g,) = run(DivergedPlateauDetector(), losses(big))
    assert g.cause is Cause.UNKNOWN and "no large step" in g.evidence["cause_evidence"]


def test_diverged_is_quiet_on_a_net_that_cannot_learn() -> None:
    # every ReLU dead from the start: the loss is the batches' noise around a constant
    # (the conformance scenario's windows), a 41% "jump" with no large step behind it
    series = losses([18.49, 13.94, 19.62, 20.66, 20.58, 16.07])
    assert run(DivergedPlateauDetector(), series) == []


def test_diverged_fires_on_a_late_collapse_to_chance() -> None:
    # learned from 2.3 to 0.5, then a collapse to 2.0 that stays: 83% of the progress lost
    series = losses([2.3, 1.4, 0.9, 0.6, 0.5, 2.0, 1.9, 2.1, 2.0, 2.0])
    (f,) = run(DivergedPlateauDetector(), series)
    assert (f.step, f.evidence["jump_step"]) == (89, 59)
    assert f.evidence["scale"] == pytest.approx(1.8)  # max(0.5, 2.3 - 0.5)


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("healthy descent", [2.3, 1.9, 1.5, 1.2, 1.0, 0.9, 0.8, 0.75, 0.7]),
        ("a plateau at the start without a jump", [2.30, 2.31, 2.29, 2.30, 2.30, 2.31, 2.29]),
        ("a spike that recovers", [2.3, 1.5, 1.0, 2.0, 1.1, 0.9, 0.8, 0.75]),
        ("an early bump, then learning", [2.3, 3.6, 2.5, 1.9, 1.5, 1.2, 1.0]),
        # a converged run spikes, then hovers just above its lowest window: recovered
        ("a spike on a converged run", [2.3, 0.5, 0.1, 0.05, 1.5, 0.2, 0.07, 0.06, 0.06, 0.06]),
        ("a rise below the jump threshold", [2.3, 1.2, 1.0, 1.5, 1.5, 1.5, 1.5, 1.5]),
    ],
)
def test_diverged_is_quiet(name: str, values: list[float]) -> None:
    assert run(DivergedPlateauDetector(), losses(values)) == [], name


def test_diverged_episode_closes_only_when_clearly_below_the_start() -> None:
    # no progress before the jump: the way back must reach L0 - 0.1 * S = 3.726
    det = DivergedPlateauDetector()
    back = losses([4.14, 7.0, 3.80, 4.3, 4.3, 4.3], first_step=1.0)
    assert run(det, back) != []  # 3.80 is not enough
    back = losses([4.14, 7.0, 3.70, 4.3, 4.3, 4.3], first_step=1.0)
    assert run(DivergedPlateauDetector(), back) == []


def test_diverged_skips_nonfinite_and_lossless_windows() -> None:
    series = losses(GPT2_100X[:3], first_step=1.0)
    series.append(WindowRecord(3, 30, 39, loss=LossStats(sum=0.0, count=2, n_nonfinite=2)))
    series.append(WindowRecord(4, 40, 49))
    series += [window(i, v) for i, v in enumerate(GPT2_100X[3:6], start=5)]
    found = run(DivergedPlateauDetector(), series)
    assert [f.step for f in found] == [69]  # the 4th window with a loss


def test_diverged_state_round_trip_rearm_and_refire() -> None:
    series = losses(GPT2_100X, first_step=1.0)
    a = DivergedPlateauDetector()
    run(a, series[:3])
    b = DivergedPlateauDetector()
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    fa, fb = run(a, series[3:]), run(b, series[3:])
    assert [f.to_dict() for f in fa] == [f.to_dict() for f in fb] and len(fa) == 1
    a.rearm()  # a repair rolled back: the episode is gone; a new jump opens a new one
    assert a.episode is None and a.best == 4.14
    again = [window(i, v) for i, v in enumerate([7.5, 6.0, 5.0, 4.5, 4.4], start=10)]
    assert [f.step for f in run(a, again)] == [139]
    a.rearm(forget_history=True)
    assert (a.first_loss, a.best, a.norms) == (None, None, [])


# -- thresholds, registry, suite -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stall_update_ratio": 0.0}, r"stall_update_ratio must be in \(0, 1\)"),
        ({"stall_loss_ratio": 1.0}, r"stall_loss_ratio must be in \(0, 1\)"),
        ({"stall_patience": 0}, r"stall_patience must be in \[1, inf\)"),
        ({"plateau_jump": 0}, r"plateau_jump must be in \(0, inf\)"),
        ({"plateau_recover": -1.0}, r"plateau_recover must be in \(0, inf\)"),
        ({"plateau_patience": 2.5}, r"plateau_patience must be a whole number"),
        ({"plateau_update_ratio": 0.0}, r"plateau_update_ratio must be in \(0, inf\)"),
    ],
)
def test_new_thresholds_are_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        Thresholds(**kwargs)


def test_thresholds_reach_the_detectors() -> None:
    t = Thresholds(stall_patience=1, plateau_patience=2)
    assert len(StalledDetector(t).update(window(0, 2.3, update=0.0))) == 1
    found = run(DivergedPlateauDetector(t), losses(GPT2_100X, first_step=1.0))
    assert [f.step for f in found] == [29]


def test_both_modes_are_registered_with_detectors_remedies_and_causes() -> None:
    stalled, diverged = get_mode(FailureMode.STALLED), get_mode(FailureMode.DIVERGED_PLATEAU)
    assert isinstance(stalled.detector(Thresholds()), StalledDetector)  # type: ignore[misc]
    assert isinstance(diverged.detector(Thresholds()), DivergedPlateauDetector)  # type: ignore[misc]
    order = [s.kind for s in training_modes()]
    assert order.index(FailureMode.EXPLODING_GRADIENT) < order.index(FailureMode.DIVERGED_PLATEAU)
    assert urgency("nonfinite") < urgency("stalled") < urgency("exploding_gradient")
    assert (
        urgency("exploding_gradient") < urgency("diverged_plateau") < urgency("vanishing_gradient")
    )
    assert not stalled.repairable and diverged.repair_actions[0] == "lower_lr"
    assert remedies_for("stalled", Cause.NO_GRADIENT)[0].key == "fix_graph"
    assert remedies_for("stalled", Cause.LEARNING_RATE)[0].key == "check_lr"
    assert remedies_for("diverged_plateau", Cause.UNKNOWN)[0].key == "restore_checkpoint"
    keras = remedies_for("diverged_plateau", Cause.LEARNING_RATE, framework="keras")
    assert "warmup_steps=1000" in keras[1].code and keras[1].key == "lr_warmup"


def test_the_suite_runs_both_and_findings_round_trip() -> None:
    suite = DetectorSuite()
    found = run(suite, [window(i, 4.15, update=0.0) for i in range(3)])
    assert [f.kind for f in found] == [FailureMode.STALLED]
    back = Finding.from_dict(found[0].to_dict())
    assert back.kind is FailureMode.STALLED and back.cause is Cause.LEARNING_RATE
    state = pickle.loads(pickle.dumps(suite.state_dict()))
    assert {"stalled", "diverged_plateau"} <= set(state)


# -- real runs: the zoo ----------------------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from zoo import loops as L  # noqa: E402
from zoo import models as M  # noqa: E402

VOCAB = 64
TOKENS = M.markov_tokens(512, 33, VOCAB)
STEPS = 42  # warm-up windows of 1, 2, 4 steps, then 7 windows of 5


def lm_loss(model: nn.Module, batch: tuple[Any, ...]) -> Any:
    (seq,) = batch
    out = model(seq[:, :-1])
    logits = out.logits if hasattr(out, "logits") else out
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), seq[:, 1:].reshape(-1))


def cls_loss(model: nn.Module, batch: tuple[Any, ...]) -> Any:
    x, y = batch
    return F.cross_entropy(model(x), y)


def detached(loss_of: Any) -> Any:
    """The classic silenced error: the loss computed without a graph, then told to need one."""

    def loss(model: nn.Module, batch: tuple[Any, ...]) -> Any:
        with torch.no_grad():
            value = loss_of(model, batch)
        return value.requires_grad_(True)

    return loss


def gpt2(lr: float, seed: int = 0) -> L.Run:
    model = M.gpt2(VOCAB, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return L.train(model, opt, L.sampler(TOKENS, batch=16, seed=1 + seed), lm_loss, steps=STEPS)


def lstm(lr: float, seed: int = 0, loss_of: Any = lm_loss) -> L.Run:
    model = M.RNNLM("lstm", VOCAB, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches = L.sampler(TOKENS, batch=16, seed=1 + seed)
    return L.train(model, opt, batches, loss_of, steps=STEPS, clip=1.0)


def vit(lr: float, seed: int = 0, one_unit_softmax: bool = False) -> L.Run:
    model = M.ViT(seed=seed, num_classes=1 if one_unit_softmax else 10)
    x, y = M.digit_images(16)
    loss_of = cls_loss
    if one_unit_softmax:  # a binary task given a softmax over its single output
        model.head = nn.Sequential(model.head, nn.Softmax(dim=-1))
        y = (y >= 5).float()

        def loss_of(model: nn.Module, batch: tuple[Any, ...]) -> Any:
            xb, t = batch
            return F.binary_cross_entropy(model(xb).squeeze(1), t)

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return L.train(model, opt, L.sampler(x, y, batch=32, seed=1 + seed), loss_of, steps=STEPS)


def new_modes(r: L.Run) -> list[tuple[str, str]]:
    keep = {FailureMode.STALLED, FailureMode.DIVERGED_PLATEAU}
    return [(f.kind.value, f.cause.value) for f in r.monitor.findings if f.kind in keep]


def test_gpt2_at_lr_0_stalls_for_the_learning_rate_and_its_healthy_twin_is_quiet() -> None:
    assert new_modes(gpt2(lr=0.0)) == [("stalled", "learning_rate")]
    healthy = gpt2(lr=3e-3)
    assert healthy.monitor.findings == []


def test_a_detached_lstm_loss_stalls_for_no_gradient() -> None:
    run_ = lstm(lr=1e-2, loss_of=detached(lm_loss))
    assert new_modes(run_) == [("stalled", "no_gradient")]
    (f,) = run_.monitor.findings
    assert f.step == 6  # windows [0], [1, 2], [3..6]: the third stalled window
    assert f.remedies[0].key == "fix_graph"
    assert lstm(lr=1e-2).monitor.findings == []


@pytest.mark.slow
def test_a_one_unit_softmax_stalls_for_no_gradient() -> None:
    # softmax over one unit is 1 for every input: the loss varies with the batch's
    # labels, the gradient is exactly 0 everywhere, and AdamW's decay alone moves weights
    assert new_modes(vit(lr=3e-3, one_unit_softmax=True)) == [("stalled", "no_gradient")]


def test_gpt2_at_100x_its_learning_rate_is_a_diverged_plateau() -> None:
    assert new_modes(gpt2(lr=0.3)) == [("diverged_plateau", "learning_rate")]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_vit_and_lstm_at_100x_are_diverged_plateaus_and_quiet_at_1x(seed: int) -> None:
    assert new_modes(vit(lr=0.3, seed=seed)) == [("diverged_plateau", "learning_rate")]
    assert new_modes(lstm(lr=1.0, seed=seed)) == [("diverged_plateau", "learning_rate")]
    assert new_modes(vit(lr=3e-3, seed=seed)) == []
    assert new_modes(lstm(lr=1e-2, seed=seed)) == []
