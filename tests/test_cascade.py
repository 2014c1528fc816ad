"""One root, its consequences nested (``detectors/_cascade.py``).

Scripted findings test each rule of :func:`nest` in both directions; the end-to-end
case trains the zoo's ResNet-18 at 100x its learning rate with ``gradvitals.watch``,
replays the run's ``monitor.history`` through a fresh ``DetectorSuite`` as
``Session.submit`` does, and checks that the flat list of findings becomes one root.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gradvitals import Cause, FailureMode, Finding
from gradvitals.detectors._cascade import EFFECTS, GAP, is_open, nest, same_units
from gradvitals.stats import LossStats, WindowRecord

F = FailureMode


def finding(
    kind: FailureMode,
    step: int,
    layer: str | None = None,
    cause: Cause = Cause.UNKNOWN,
    **evidence: Any,
) -> Finding:
    return Finding(kind, layer, step, f"{kind.value} at {step}", dict(evidence), cause=cause)


def dead(step: int, layer: str, idx: list[int], units: int = 16, role: str = "output") -> Finding:
    return finding(F.DYING_RELU, step, layer, units=units, dead_unit_indices=idx, site_role=role)


def window(
    end: int, loss: float | None = 2.0, length: int = 20, nonfinite: int = 0
) -> WindowRecord:
    lo = None if loss is None else LossStats(sum=loss, count=1, n_nonfinite=nonfinite)
    return WindowRecord(end // length, end - length + 1, end, loss=lo)


def walk(fs: list[Finding]) -> Iterator[Finding]:
    for f in fs:
        yield f
        yield from walk(f.consequences)


# -- rule 1: the same units under two names --------------------------------------------------


def test_a_relu_output_and_the_next_layers_input_with_the_same_dead_units_are_one_finding() -> None:
    relu = dead(40, "layer4.1.relu", [0, 3, 5, 7, 9], units=16)
    fc = dead(40, "fc", [0, 3, 5, 7, 9], units=16, role="input")
    # the input site comes first in the list: the output site is kept all the same
    roots = nest([fc, relu], [], window(40))
    assert roots == [relu]
    assert relu.consequences == [fc]
    assert fc.evidence["cascade_rule"] == "same_units"
    assert fc.evidence["same_units_as"] == "layer4.1.relu"
    assert fc.cause is Cause.UNKNOWN  # an alias takes nothing from its twin


@pytest.mark.parametrize(
    ("a", "b", "units_b", "same"),
    [
        (list(range(10)), list(range(10)), 16, True),
        (list(range(10)), list(range(9)), 16, True),  # Jaccard 9/10 = 0.9
        (list(range(10)), list(range(8)), 16, False),  # 8/10
        (list(range(10)), list(range(10)), 32, False),  # another layer's width
        (list(range(10)), list(range(10, 20)), 16, False),
    ],
)
def test_same_units_needs_the_same_width_and_a_90_percent_overlap(
    a: list[int], b: list[int], units_b: int, same: bool
) -> None:
    y = dead(10, "y", b, units=units_b, role="input")
    assert same_units(dead(10, "x", a), y) is same
    roots = nest([dead(10, "x", a), y], [], window(10))
    assert len(roots) == (1 if same else 2)


def test_two_activation_outputs_are_two_layers_even_when_both_are_all_dead() -> None:
    every = list(range(16))
    a, b = dead(10, "net.1", every), dead(10, "net.3", every)
    assert not same_units(a, b)
    assert nest([a, b], [], window(10)) == [a, b]


def test_an_alias_found_a_window_later_nests_under_the_earlier_name() -> None:
    relu = dead(40, "layer4.1.relu", [1, 2, 3, 4])
    roots = nest([dead(60, "fc", [1, 2, 3, 4], role="input")], [relu], window(60))
    assert roots == [] and [c.layer for c in relu.consequences] == ["fc"]
    # long after (beyond the gap, no loss reference): a new finding, not an alias
    relu = dead(40, "layer4.1.relu", [1, 2, 3, 4])
    late = dead(40 + 20 * (GAP + 1), "fc", [1, 2, 3, 4], role="input")
    assert nest([late], [relu], window(late.step)) == [late]


# -- rule 2 and 4: instability explains its aftermath -----------------------------------------


def test_an_explosion_with_dead_units_in_the_same_window_is_the_root() -> None:
    boom = finding(F.EXPLODING_GRADIENT, 20, "fc2", Cause.LEARNING_RATE, first_loss=2.3)
    d1, d2 = dead(20, "relu1", [0, 1, 2]), dead(20, "relu2", [4, 5, 6, 7])
    assert nest([d1, boom, d2], [], window(20, loss=9.0)) == [boom]
    assert boom.consequences == [d1, d2]
    assert [c.cause for c in boom.consequences] == [Cause.LEARNING_RATE] * 2
    assert d1.evidence["root"] == {"kind": "exploding_gradient", "step": 20, "layer": "fc2"}


@pytest.mark.parametrize(
    "kind",
    [F.DYING_RELU, F.SATURATION, F.NONFINITE, F.VANISHING_GRADIENT, F.STALLED, F.DIVERGED_PLATEAU],
)
@pytest.mark.parametrize("root_kind", [F.EXPLODING_GRADIENT, F.DIVERGED_PLATEAU])
def test_an_open_instability_explains_every_later_failure(kind: F, root_kind: F) -> None:
    root = finding(root_kind, 20, loss_before=2.0)
    later = finding(kind, 200)  # far beyond the gap, but the loss is still 4.0 > 2.2
    assert nest([later], [root], window(200, loss=4.0)) == []
    assert root.consequences == [later]


def test_a_recovered_run_starts_a_new_root() -> None:
    root = finding(F.EXPLODING_GRADIENT, 20, loss_median=2.0)
    later = finding(F.DYING_RELU, 200)
    assert nest([later], [root], window(200, loss=2.1)) == [later]  # back within 10%
    assert root.consequences == []


def test_nans_after_an_explosion_are_a_consequence_even_when_the_loss_is_nan() -> None:
    root = finding(F.EXPLODING_GRADIENT, 20)  # no loss reference in its evidence
    nan = finding(F.NONFINITE, 400)
    assert nest([nan], [root], window(400, loss=1.0, nonfinite=1)) == []
    assert root.consequences == [nan]


def test_a_finding_with_an_origin_of_its_own_stays_a_root() -> None:
    root = finding(F.EXPLODING_GRADIENT, 20, first_loss=2.3)
    bad_batch = finding(F.NONFINITE, 40, "conv1", Cause.NONFINITE_INPUT)
    born_dead = finding(F.DYING_RELU, 40, "relu", Cause.BAD_INIT)
    stalled = finding(F.STALLED, 40, None, Cause.NO_GRADIENT)  # everything dead after it
    roots = nest([bad_batch, born_dead, stalled], [root], window(40, loss=9.0))
    assert roots == [bad_batch, born_dead]
    assert root.consequences == [stalled] and stalled.cause is Cause.NO_GRADIENT


def test_dead_and_saturated_layers_explain_vanishing_below_them_not_the_reverse() -> None:
    for kind in (F.DYING_RELU, F.SATURATION):
        root = finding(kind, 40, "act3")
        vanish = finding(F.VANISHING_GRADIENT, 60, "fc1")
        assert nest([vanish], [root], window(60)) == []
        assert root.consequences == [vanish]
    vanish = finding(F.VANISHING_GRADIENT, 40, "fc1")
    assert nest([finding(F.DYING_RELU, 60, "act3")], [vanish], window(60)) != []
    assert vanish.consequences == []
    assert EFFECTS.get(F.NONFINITE, frozenset()) == frozenset()


def test_an_lstm_explosion_then_vanishing_gradients_is_one_root() -> None:
    boom = finding(F.EXPLODING_GRADIENT, 6, "rnn", loss_median=4.2)
    vanish = finding(F.VANISHING_GRADIENT, 31, "embed")
    assert nest([vanish], [boom], window(31, loss=12.0, length=5)) == []
    assert vanish.evidence["root"]["kind"] == "exploding_gradient"


def test_a_consequence_joins_the_earliest_open_root() -> None:
    dying = finding(F.DYING_RELU, 20, "relu2")  # a root of its own
    boom = finding(F.EXPLODING_GRADIENT, 30, "fc")  # dying does not explain explosions
    assert nest([boom], [dying], window(30)) == [boom]
    vanish = finding(F.VANISHING_GRADIENT, 40, "fc1")
    assert nest([vanish], [dying, boom], window(40)) == []
    assert dying.consequences == [vanish] and boom.consequences == []


def test_final_findings_are_not_roots_and_the_order_of_roots_is_kept() -> None:
    final = finding(F.EXPLODING_GRADIENT, 20)
    final.final = True
    a, b = finding(F.DYING_RELU, 30, "relu1"), finding(F.SATURATION, 30, "sig1")
    assert nest([a, b], [final], window(30)) == [a, b]
    assert final.consequences == []


def test_a_chain_stays_open_while_consequences_keep_coming() -> None:
    root = finding(F.EXPLODING_GRADIENT, 20)  # no loss reference: the gap decides
    steps = [20 + 20 * GAP * k for k in range(1, 4)]  # each one gap after the last
    for s in steps:
        assert nest([finding(F.DYING_RELU, s, f"relu{s}")], [root], window(s)) == []
    assert [c.step for c in root.consequences] == steps


# -- rule 3: is a root open? ------------------------------------------------------------------


def test_is_open_by_gap_in_windows_of_the_current_length_and_by_the_loss() -> None:
    root = finding(F.DIVERGED_PLATEAU, 100, loss_before=-3.0)  # a negative log-likelihood
    assert is_open(root, window(100 + 20 * GAP, loss=None))
    assert not is_open(root, window(100 + 20 * GAP + 1, loss=None))
    # -3.0 + 10% of |-3.0| = -2.7: above is still damaged, below is recovered
    assert is_open(root, window(1000, loss=-2.5))
    assert not is_open(root, window(1000, loss=-2.9))
    assert is_open(root, window(1000, loss=-2.9, nonfinite=1))


# -- the acceptance case: ResNet-18 at 100x its learning rate, end to end ---------------------


@pytest.mark.slow
def test_resnet18_at_100x_is_one_root_with_its_consequences_nested() -> None:
    torch = pytest.importorskip("torch")
    from gradvitals.session import DetectorSuite
    from zoo import loops as L
    from zoo import models as M

    model = M.resnet18()
    opt = torch.optim.SGD(model.parameters(), lr=5.0, momentum=0.9, weight_decay=5e-4)
    x, y = M.digit_images(16)

    def loss_of(m: Any, batch: Any) -> Any:
        xb, yb = batch
        return torch.nn.functional.cross_entropy(m(xb), yb)

    # watch()'s defaults (every=20, samples=2): the NaN comes in the window ending at 150
    run = L.train(
        model,
        opt,
        L.sampler(x, y, batch=32),
        loss_of,
        steps=151,
        watch=dict(lint=False, console=False),
    )
    # the session nests as it goes: one root, every consequence under it
    live = run.monitor.findings
    assert [f.kind for f in live] == [F.EXPLODING_GRADIENT]
    kinds = [f.kind for f in walk(live)]
    # what the cascade holds, not how many of each: the trajectory differs between CPU
    # kernel paths (11 findings and a NaN at step 150 on AVX-512, 7 and a NaN at 90 with
    # ATEN_CPU_CAPABILITY=default, 8 and no NaN within 151 steps on AVX2)
    assert F.DYING_RELU in kinds and len(kinds) >= 3
    nan_seen = any(
        (r.loss is not None and r.loss.n_nonfinite)
        or any(lay.n_grad_nonfinite for lay in r.layers.values())
        for r in run.monitor.history
    )
    assert (F.NONFINITE in kinds) == nan_seen  # a NaN, when it comes, is nested too

    # the same, replayed as Session.submit does: the suite, the "#k" site fix, then nest
    suite, roots, flat = DetectorSuite(), [], []
    for record in run.monitor.history:
        new = suite.update(record)
        for f in new:
            if f.layer and "#" in f.layer:
                f.evidence.setdefault("site", f.layer)
                f.layer = f.layer.split("#")[0]
        flat += new
        roots += nest(new, roots, record)
    assert sorted((f.kind, f.layer, f.step) for f in flat) == sorted(
        (f.kind, f.layer, f.step) for f in walk(live)
    )

    assert [(r.kind, r.step) for r in roots] == [(F.EXPLODING_GRADIENT, live[0].step)]
    assert sorted(id(f) for f in walk(roots)) == sorted(id(f) for f in flat)  # none lost
    (root,) = roots
    assert all(c.evidence["root"]["step"] == root.step for c in root.consequences)
    # later explosions belong to the first episode: the loss never came back
    later = [c for c in root.consequences if c.kind is F.EXPLODING_GRADIENT]
    assert len(later) == kinds.count(F.EXPLODING_GRADIENT) - 1
    # the pooled input of fc is layer4.1.relu's second call under another name: it is
    # nested under that output site, not reported as one more dead layer
    parent = {id(c): f for f in walk(roots) for c in f.consequences}
    aliases = [f for f in walk(roots) if f.evidence.get("cascade_rule") == "same_units"]
    assert aliases and all(a.evidence["site_role"] == "input" for a in aliases)
    assert (aliases[0].layer, parent[id(aliases[0])].layer) == ("fc", "layer4.1.relu")
