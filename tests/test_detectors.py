"""Detectors driven by scripted statistic series: the firing window, and quiet when healthy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from gradvitals import FailureMode, Thresholds
from gradvitals.detectors import (
    DyingReluDetector,
    EdgeTrigger,
    ExplodingGradientDetector,
    NonfiniteDetector,
    SaturationDetector,
    VanishingGradientDetector,
)
from gradvitals.session import DetectorSuite, Session
from gradvitals.stats import LayerStats, LossStats, SiteStats, WindowRecord


def relu_window(i: int, alive: list[int], examples: int = 128, name: str = "relu1") -> WindowRecord:
    s = SiteStats(
        name,
        "relu",
        len(alive),
        n_examples=examples,
        n_elements=examples * len(alive),
        ever_positive=np.array(alive, bool),
    )
    return WindowRecord(i, 10 * i, 10 * i + 9, sites={name: s})


def layers_window(
    i: int, grads: list[float], loss: float | None = None, upd: float = 1e-3
) -> WindowRecord:
    layers = {
        f"fc{j}": LayerStats(
            f"fc{j}",
            grad_norm=g,
            weight_norm=1.0,
            update_norm=upd * g / max(grads),
            numel=100,
            kind="Linear",
        )
        for j, g in enumerate(grads)
    }
    return WindowRecord(
        i,
        10 * i,
        10 * i + 9,
        layers=layers,
        loss=None if loss is None else LossStats(sum=loss, count=1),
    )


def fire_steps(det: object, records: list[WindowRecord]) -> list[int]:
    return [f.step for r in records for f in det.update(r)]  # type: ignore[attr-defined]


# -- dying ---------------------------------------------------------------------------------


def test_dying_fires_when_the_same_units_stay_dead() -> None:
    series = [
        relu_window(i, a)
        for i, a in enumerate([[1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    ]
    assert fire_steps(DyingReluDetector(), series) == [29]


def test_dying_quiet_when_dead_units_change_window_to_window() -> None:
    # 50% "dead" each window, but different units: they are recovering, not dead
    series = [relu_window(i, a) for i, a in enumerate([[1, 1, 0, 0], [0, 0, 1, 1]] * 3)]
    assert fire_steps(DyingReluDetector(), series) == []


def test_dying_quiet_below_threshold_and_with_too_few_examples() -> None:
    quiet = [relu_window(i, [1, 1, 1, 0]) for i in range(5)]  # 25% dead
    assert fire_steps(DyingReluDetector(), quiet) == []
    few = [relu_window(i, [0, 0, 0, 0], examples=8) for i in range(3)]  # 24 < 32 examples
    assert fire_steps(DyingReluDetector(), few) == []


def test_dying_counts_examples_over_the_intersected_windows() -> None:
    # 8 examples a window: dead for all of them once 4 windows hold 32 examples
    small = [relu_window(i, [0, 0, 0, 1], examples=8) for i in range(5)]
    assert len(fire_steps(DyingReluDetector(), small)) == 1
    # ... but a unit alive in any of those windows is not dead
    mixed = [relu_window(i, [0, 0, 1, 1] if i % 2 else [1, 1, 0, 1], examples=8) for i in range(5)]
    assert fire_steps(DyingReluDetector(), mixed) == []


def test_dying_refires_only_after_recovery() -> None:
    pattern = [[0, 0, 0, 1]] * 3 + [[1, 1, 1, 1]] * 3 + [[0, 0, 0, 1]] * 2
    series = [relu_window(i, a) for i, a in enumerate(pattern)]
    assert fire_steps(DyingReluDetector(), series) == [19, 79]


def test_sigmoid_sites_are_never_dead() -> None:
    s = SiteStats(
        "sig", "sigmoid", 4, n_examples=128, n_elements=512, ever_positive=np.zeros(4, bool)
    )
    recs = [WindowRecord(i, i, i, sites={"sig": s}) for i in range(4)]
    assert fire_steps(DyingReluDetector(), recs) == []


# -- vanishing -----------------------------------------------------------------------------


def test_vanishing_fires_after_patience_and_names_first_layer() -> None:
    recs = [layers_window(i, [1e-7, 1e-5, 1e-2], loss=2.3) for i in range(3)]
    det = VanishingGradientDetector()
    out = [f for r in recs for f in det.update(r)]
    assert [(f.kind, f.layer, f.step) for f in out] == [(FailureMode.VANISHING_GRADIENT, "fc0", 19)]


def test_vanishing_quiet_when_converged_or_uniformly_small() -> None:
    # tiny gradients everywhere: a converged net
    recs = [layers_window(i, [1e-8, 1e-8, 1e-8], loss=1e-5) for i in range(4)]
    assert fire_steps(VanishingGradientDetector(), recs) == []
    # a steep ratio but the loss has fallen below 5% of its start
    recs = [layers_window(0, [1e-7, 1e-2], loss=2.0)] + [
        layers_window(i, [1e-7, 1e-2], loss=0.01) for i in range(1, 4)
    ]
    assert fire_steps(VanishingGradientDetector(), recs) == []


def test_vanishing_defers_to_dead_units() -> None:
    rec = layers_window(0, [1e-9, 1e-2], loss=2.3)
    rec.sites["r"] = SiteStats(
        "r", "relu", 4, n_examples=128, n_elements=512, ever_positive=np.zeros(4, bool)
    )
    det = VanishingGradientDetector()
    assert fire_steps(det, [rec, rec, rec]) == []


# -- exploding -----------------------------------------------------------------------------


def test_exploding_fires_on_growth_with_worsening_loss() -> None:
    grads = [1.0, 1.1, 0.9, 1.0, 30.0]
    losses = [2.3, 2.2, 2.1, 2.0, 2.9]
    recs = [
        layers_window(i, [g, g], loss=lo)
        for i, (g, lo) in enumerate(zip(grads, losses, strict=True))
    ]
    det = ExplodingGradientDetector()
    out = [f for r in recs for f in det.update(r)]
    assert [f.step for f in out] == [49]
    # the session attaches the registry's remedies, with a clip norm from healthy history:
    # 2 x the median global norm of the healthy windows, sqrt(2) x [1, 1.1, 0.9, 1]
    session = Session(console=False)
    found = [f for r in recs for f in session.submit(r)]
    clip = found[0].remedies[1]
    assert clip.key == "clip_grad_norm" and "max_norm=2.83" in clip.code
    assert clip.params["max_norm"] == pytest.approx(2 * 2**0.5)


def test_exploding_quiet_when_norm_grows_while_loss_falls() -> None:
    grads = [0.1, 0.2, 0.15, 2.7, 3.0, 2.0]  # leaving the initial plateau
    losses = [2.3, 2.3, 2.26, 1.78, 0.78, 0.5]
    recs = [
        layers_window(i, [g, g], loss=lo)
        for i, (g, lo) in enumerate(zip(grads, losses, strict=True))
    ]
    assert fire_steps(ExplodingGradientDetector(), recs) == []


def test_exploding_update_ratio_rule() -> None:
    recs = [layers_window(i, [1.0, 1.0], loss=2.0, upd=u) for i, u in enumerate([1e-3, 1e-3, 2.0])]
    assert fire_steps(ExplodingGradientDetector(), recs) == [29]


# -- saturation / nonfinite ----------------------------------------------------------------


def test_saturation_patience_and_threshold() -> None:
    def rec(i: int, sat: int) -> WindowRecord:
        s = SiteStats("t", "tanh", 8, n_examples=32, n_elements=100, n_saturated=sat)
        return WindowRecord(i, i, i, sites={"t": s})

    assert fire_steps(SaturationDetector(), [rec(i, s) for i, s in enumerate([60, 60, 60])]) == [1]
    assert (
        fire_steps(SaturationDetector(), [rec(i, s) for i, s in enumerate([60, 40, 60, 40])]) == []
    )


def test_nonfinite_first_step_from_loss_and_quiet_when_finite() -> None:
    ok = WindowRecord(0, 0, 9, loss=LossStats(sum=2.0, count=10))
    bad = WindowRecord(
        1, 10, 19, loss=LossStats(sum=2.0, count=10, n_nonfinite=2, first_nonfinite_step=13)
    )
    det = NonfiniteDetector()
    assert det.update(ok) == []
    (f,) = det.update(bad)
    assert f.evidence["first_step"] == 13 and f.layer is None
    assert det.update(bad) == []  # once per episode


def test_suite_routes_nonfinite_windows_only_to_nonfinite() -> None:
    suite = DetectorSuite()
    rec = relu_window(0, [0, 0, 0, 0])
    rec.loss = LossStats(sum=0.0, count=3, n_nonfinite=3, first_nonfinite_step=0)
    out = suite.update(rec) + suite.update(rec)
    assert [f.kind for f in out] == [FailureMode.NONFINITE]


# -- conformance ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        DyingReluDetector,
        SaturationDetector,
        VanishingGradientDetector,
        ExplodingGradientDetector,
        NonfiniteDetector,
        DetectorSuite,
    ],
)
def test_state_round_trip_and_pickle_resume_identically(make: type) -> None:
    series = (
        [relu_window(i, [1, 0, 0, 0]) for i in range(2)]
        + [layers_window(i, [1e-7, 1e-2], loss=2.3) for i in range(2, 4)]
        + [
            layers_window(i, [g, g], loss=lo)
            for i, (g, lo) in enumerate([(1, 2), (1, 2), (40, 3)], start=4)
        ]
    )
    a = make(Thresholds())
    for r in series[:3]:
        a.update(r)
    b = make(Thresholds())
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    c = pickle.loads(pickle.dumps(a))
    for r in series[3:]:
        fa, fb, fc = a.update(r), b.update(r), c.update(r)
        assert [f.to_dict() for f in fa] == [f.to_dict() for f in fb] == [f.to_dict() for f in fc]


def test_edge_trigger_state_machine() -> None:
    t = EdgeTrigger(patience=2, recover=2)
    seq = [True, True, True, False, True, False, False, True, True]
    assert [t.observe("x", b) for b in seq] == [
        False,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        True,
    ]


def test_only_activations_that_can_die_are_judged_dead() -> None:
    import gradvitals.activations as acts
    from gradvitals.stats import DIES_WHEN_NEVER_POSITIVE

    for name in DIES_WHEN_NEVER_POSITIVE:
        assert acts.get(name).can_die
    leaky = SiteStats(
        "a", "leaky_relu", 4, n_examples=128, n_elements=512, ever_positive=np.zeros(4, bool)
    )
    recs = [WindowRecord(i, i, i, sites={"a": leaky}) for i in range(4)]
    assert fire_steps(DyingReluDetector(), recs) == []
