"""Keras ``skip_batch``: poisoned batches are skipped inside the compiled step.

Both directions: a run fed batches with NaN inputs is repaired by ``skip_batch`` (the
finding's cause is ``nonfinite_input``; exactly the poisoned steps after the guard went
in are skipped, the weights stay finite); a healthy run with ``repair=True`` never
installs the guard; with the guard in, finite steps are bitwise those of an unguarded
model and a NaN step changes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from conftest import seeded  # noqa: E402
from gradvitals import FailureMode, RepairPolicy  # noqa: E402
from gradvitals.keras import VitalsCallback  # noqa: E402
from gradvitals.keras._repair import KERAS_ACTIONS, KerasRepairHost  # noqa: E402
from gradvitals.keras._skip import guard_refusal  # noqa: E402
from gradvitals.remedies import ActionContext  # noqa: E402

N, BATCH = 512, 64  # 8 steps per epoch
POISONED = (0, 3, 6)  # batches with one all-NaN example, every epoch


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:N] / 16.0).astype("float32"), y[:N].astype("int32")


def mlp(opt: Any) -> Any:
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="h1"),
            keras.layers.Dense(10, name="out"),
        ]
    )
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def state(model: Any) -> list[np.ndarray]:
    """Weights, then every optimizer variable (slots, iterations, learning rate)."""
    return [np.array(w) for w in model.get_weights()] + [
        np.array(v.numpy()) for v in model.optimizer.variables
    ]


def train(model: Any, x: np.ndarray, y: np.ndarray, cb: Any = None, epochs: int = 1) -> None:
    model.fit(
        x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=False,
        callbacks=[cb] if cb is not None else [],
    )  # fmt: skip


def test_nan_batches_are_skipped_after_one_rollback() -> None:
    keras.utils.set_random_seed(seeded(0))
    x, y = digits()
    for b in POISONED:
        x[b * BATCH + 5] = np.nan  # the probe (the first 256 examples) holds two of them
    model = mlp(keras.optimizers.Adam(1e-3))
    cb = VitalsCallback(probe=(x[:256], y[:256]), every=4, console=False, repair=True)
    epochs = 3
    train(model, x, y, cb, epochs=epochs)

    first = cb.findings[0]
    assert (first.kind, first.cause.value) == (FailureMode.NONFINITE, "nonfinite_input")
    assert [(r["kind"], r["action"], r["cause"]) for r in cb.repairs] == [
        ("nonfinite", "skip_batch", "nonfinite_input")
    ]
    assert not any(f.final for f in cb.findings)  # later NaN windows: handled, no give-up
    host = cb._repair_host
    start = host._installed_at
    steps_per_epoch = N // BATCH
    poisoned = [e * steps_per_epoch + b for e in range(epochs) for b in POISONED]
    assert 0 < start <= poisoned[1]  # installed after the first window, which held step 0
    # exactly the poisoned steps after the guard went in were skipped, no clean one
    expected = sum(s >= start for s in poisoned)
    assert host.guard.skipped == expected > 0
    assert f"skip_batch: skipped {expected} optimizer step(s)" in " ".join(cb.session.notes)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(np.isfinite(v.numpy()).all() for v in model.optimizer.variables)
    assert "skip_batch" in cb.report()


def test_healthy_run_never_installs_the_guard() -> None:
    keras.utils.set_random_seed(seeded(0))
    x, y = digits()
    model = mlp(keras.optimizers.Adam(1e-3))
    cb = VitalsCallback(probe=(x[:256], y[:256]), every=4, console=False, repair=True)
    train(model, x, y, cb, epochs=2)
    assert cb.findings == [] and cb.repairs == []
    assert cb._repair_host.guard is None
    assert "apply" not in vars(model.optimizer)  # the class's own apply
    assert not any("skip_batch" in n for n in cb.session.notes)


def test_guarded_steps_are_bitwise_and_a_nan_step_changes_nothing() -> None:
    x, y = digits()
    keras.utils.set_random_seed(seeded(0))
    plain = mlp(keras.optimizers.Adam(1e-2))
    guarded = mlp(keras.optimizers.Adam(1e-2))
    guarded.set_weights(plain.get_weights())

    cb = VitalsCallback(probe=(x[:64], y[:64]), console=False)
    cb.set_model(guarded)
    host = KerasRepairHost(cb, RepairPolicy())
    assert host.capture(0)  # builds the optimizer: its slots are in the first snapshot
    assert len(host.snapshot[2]) == len(host._slots()) > 0
    ctx = ActionContext(FailureMode.NONFINITE, [], RepairPolicy())
    assert KERAS_ACTIONS.get("skip_batch").apply(host, ctx).startswith("skipping every")
    host.after_repair(["skip_batch"])
    assert KERAS_ACTIONS.get("skip_batch").apply(host, ctx) is None  # once is enough

    train(plain, x, y)
    train(guarded, x, y)
    for a, b in zip(state(plain), state(guarded), strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise: same values, same NaN positions
    assert host.guard is not None and host.guard.skipped == 0

    before = state(guarded)
    bad = x[:BATCH].copy()
    bad[7, 3] = np.nan
    guarded.train_on_batch(bad, y[:BATCH])
    for a, b in zip(before, state(guarded), strict=True):  # weights, slots, iterations
        np.testing.assert_array_equal(a, b)
    assert host.guard.skipped == 1
    assert host.check() == [
        "skip_batch: skipped 1 optimizer step(s) whose gradients were not finite"
    ]


def test_every_step_skipped_is_not_a_repair() -> None:
    keras.utils.set_random_seed(seeded(0))
    x, y = digits()
    x[:, 0] = np.nan  # every example: no step can train
    model = mlp(keras.optimizers.Adam(1e-3))
    cb = VitalsCallback(probe=(x[:256], y[:256]), every=4, console=False, repair=True)
    train(model, x, y, cb, epochs=2)
    assert [r["action"] for r in cb.repairs] == ["skip_batch"]
    every = [n for n in cb.session.notes if n.startswith("skip_batch skipped every step")]
    assert len(every) == 1 and "does not train" in every[0]


def test_loss_scale_optimizer_is_not_guarded() -> None:
    model = mlp(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)))
    assert guard_refusal(model) == "the optimizer is not built yet"
    model.optimizer.build(model.trainable_variables)
    assert "LossScaleOptimizer already skips" in str(guard_refusal(model))
