"""Keras programs whose output activation, targets or loss do not fit together.

``keras_softmax_one_unit`` (https://stats.stackexchange.com/questions/481881/convolutional-neural-network-fails-even-when-given-answer):
a binary CNN predicted the same class for every input, even when the answer was given as
an input. The answer: its last layer is ``Dense(1, activation="softmax")``, and a softmax
over a single unit is always 1, so nothing can be learned; use a sigmoid unit (with binary
cross-entropy) or two softmax units. Our program: a breast-cancer MLP ending in
``Dense(1, softmax)`` with the reporter's categorical cross-entropy.

``keras_sigmoid_targets_out_of_range`` (https://example-a.com/answer/64630464, a copy of
the Stack Overflow question 64630464): a binary classifier of MNIST "1" vs "5" with a
sigmoid output and binary cross-entropy reached a loss of -9.9e4 and ~56% accuracy. The
answer: the labels are 1 and 5, while the sigmoid squashes the output into [0, 1];
relabelling 5 as 0 gives ~99.9% accuracy. Our program: digits 1 vs 5 with labels {1, 5}.

``keras_sigmoid_regression_output`` (https://github.com/jsyoon0823/Time-series-prediction/issues/3):
the attention model's regression output goes through a sigmoid, so it only works for
targets in [0, 1]; feeding other values cannot work. The author agreed that the targets
must be MinMax-normalized. Our program: the diabetes progression score (25-346) regressed
through a sigmoid output; the fix MinMax-scales the targets.

``keras_focal_log_zero`` (https://github.com/mkocabas/focal-loss-keras/issues/17): the
focal loss took ``K.log(pt_1)`` and ``K.log(1 - pt_0)`` of sigmoid probabilities and
produced NaN; adding ``K.epsilon()`` inside the logs fixed it. Our program: the focal loss
on the breast-cancer measurements, a 256-unit hidden layer, Adam at 0.05 and batches of
64, so that Adam's first steps push some predictions to exactly 0 or 1. Our first
re-derivation (64 units, Adam at 0.1, batches of 32) saturated too, but the fixed run's
summed loss then jumped and wandered (saturated wrong examples) for the rest of the run.
Even here the bug is a matter of chance: the buggy run turns NaN on seeds 0 and 1, not 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bugs import _data
from bugs._case import BugCase, Outcome
from bugs._registry import register
from bugs.keras_cases._common import fit, fit_and_score, keras_outcome, metric_value, seed_keras
from gradvitals.findings import Cause, FailureMode


def run_softmax_one_unit(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    keras = seed_keras(seed)
    x, y, x_test, y_test = _data.breast_cancer(seed)
    y2, y_test2 = y.astype("float32")[:, None], y_test.astype("float32")[:, None]
    out_act = "softmax" if variant == "buggy" else "sigmoid"
    loss = "categorical_crossentropy" if variant == "buggy" else "binary_crossentropy"
    model = keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(1, activation=out_act, name="out"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    return fit_and_score(model, x, y2, x_test, y_test2, "accuracy", watch, steps=steps, seed=seed)


def run_sigmoid_targets_out_of_range(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 200
    keras = seed_keras(seed)
    x, y, x_test, y_test = _data.digits(seed)
    keep, keep_test = np.isin(y, (1, 5)), np.isin(y_test, (1, 5))
    x, y, x_test, y_test = x[keep], y[keep], x_test[keep_test], y_test[keep_test]
    if variant == "fixed":  # the fix: labels 0/1 for a sigmoid output
        y, y_test = np.where(y == 5, 0, y), np.where(y_test == 5, 0, y_test)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", name="hidden"),
            keras.layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    y, y_test = y.astype("float32")[:, None], y_test.astype("float32")[:, None]
    # accuracy against the task's truth, whatever the labels: 1 means "digit 1"
    truth = (y_test.reshape(-1) == 1).astype(np.int64)
    return fit_and_score(model, x, y, x_test, truth, "accuracy", watch, steps=steps, seed=seed)


def run_sigmoid_regression_output(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 400
    keras = seed_keras(seed)
    x, y, x_test, y_test = _data.diabetes(seed)
    mu, sd = x.mean(0), x.std(0)
    x, x_test = (x - mu) / sd, (x_test - mu) / sd  # the features are standardized in both
    lo, hi = float(y.min()), float(y.max())
    target = (y - lo) / (hi - lo) if variant == "fixed" else y  # the fix: MinMax targets
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(64, activation="relu", name="hidden"),
            keras.layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    target = target.astype("float32")[:, None]
    losses = fit(model, x, target, watch, steps=steps, seed=seed)
    o = keras_outcome(model, losses, x_test, y_test, "r2", steps=steps)
    if variant == "fixed":  # score the un-normalized predictions on the original scale
        pred = model.predict(x_test, verbose=0) * (hi - lo) + lo
        o = Outcome(o.final_loss, metric_value(pred, y_test, "r2"), "r2", o.nonfinite, steps)
    return o


def run_focal_log_zero(
    variant: str,
    watch: Any,
    steps: int,
    seed: int,
    *,
    lr: float = 0.05,
    hidden: int = 256,
    batch: int = 64,
) -> Outcome:
    steps = steps or 300
    keras = seed_keras(seed)
    from keras import ops

    eps = 1e-7 if variant == "fixed" else 0.0  # the fix: K.epsilon() inside the logs

    def focal_loss(y_true: Any, y_pred: Any, gamma: float = 2.0, alpha: float = 0.25) -> Any:
        pt_1 = ops.where(ops.equal(y_true, 1.0), y_pred, ops.ones_like(y_pred))
        pt_0 = ops.where(ops.equal(y_true, 0.0), y_pred, ops.zeros_like(y_pred))
        pos = alpha * ops.power(1.0 - pt_1, gamma) * ops.log(pt_1 + eps)
        neg = (1 - alpha) * ops.power(pt_0, gamma) * ops.log(1.0 - pt_0 + eps)
        return -ops.sum(pos) - ops.sum(neg)

    x, y, x_test, y_test = _data.breast_cancer(seed)
    y2 = y.astype("float32")[:, None]
    model = keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=focal_loss)
    return fit_and_score(
        model, x, y2, x_test, y_test, "accuracy", watch, steps=steps, seed=seed, batch=batch
    )


register(
    BugCase(
        id="keras_softmax_one_unit",
        url=(
            "https://stats.stackexchange.com/questions/481881/"
            "convolutional-neural-network-fails-even-when-given-answer"
        ),
        framework="keras",
        title="Dense(1, activation='softmax'): the same prediction for every input",
        report=(
            "A binary CNN predicted the same class for every input, even when the answer "
            "was part of the input. The answer: a softmax over one output unit is always 1, "
            "so the network cannot learn; use a sigmoid unit or two softmax units."
        ),
        symptom=FailureMode.STALLED,
        cause=Cause.OUTPUT_ACTIVATION,
        first_remedy="remove_output_activation",
        repairable=False,
        run=run_softmax_one_unit,
        note="a breast-cancer MLP instead of a CNN; the fix uses a sigmoid unit with BCE",
    )
)

register(
    BugCase(
        id="keras_sigmoid_targets_out_of_range",
        url="https://example-a.com/answer/64630464",
        framework="keras",
        title="Sigmoid output trained on labels 1 and 5: negative loss, ~56% accuracy",
        report=(
            "A binary classifier of MNIST 1s and 5s (sigmoid output, binary cross-entropy) "
            "reached a loss of -9.9e4 and 56% accuracy. The answer: the labels are 1 and 5 "
            "while the sigmoid output lies in [0, 1]; relabelling 5 as 0 gives 99.9%."
        ),
        symptom=FailureMode.SATURATION,
        cause=Cause.OUTPUT_ACTIVATION,
        first_remedy="clean_targets",
        repairable=False,
        run=run_sigmoid_targets_out_of_range,
        steps=200,
        note="digits 1 vs 5; the URL is a copy of Stack Overflow question 64630464",
    )
)

register(
    BugCase(
        id="keras_sigmoid_regression_output",
        url="https://github.com/jsyoon0823/Time-series-prediction/issues/3",
        framework="keras",
        title="Regression through a sigmoid output only works for targets in [0, 1]",
        report=(
            "The model's regression output passes through a sigmoid, so it can only produce "
            "values in [0, 1] and fails on other targets. The author agreed that the targets "
            "must be MinMax-normalized first."
        ),
        symptom=FailureMode.SATURATION,
        cause=Cause.OUTPUT_ACTIVATION,
        first_remedy="normalize_data",
        repairable=False,
        run=run_sigmoid_regression_output,
        steps=400,
        metric="r2",
        note="an MLP on the diabetes measurements instead of an attention model on stocks",
    )
)

register(
    BugCase(
        id="keras_focal_log_zero",
        url="https://github.com/mkocabas/focal-loss-keras/issues/17",
        framework="keras",
        title="Focal loss returns NaN: log of a probability that is exactly 0",
        report=(
            "The Keras focal loss took K.log(pt_1) and K.log(1 - pt_0) of the sigmoid "
            "probabilities and returned NaN during training. Adding K.epsilon() inside the "
            "logs fixed it, and the fix was merged."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.UNSTABLE_LOSS,
        first_remedy="guard_op",
        repairable=False,
        run=run_focal_log_zero,
        note=(
            "breast-cancer MLP (256 units) with Adam at 0.05 and batches of 64, so that some "
            "predictions saturate early; with Adam at 0.1 the fixed run's loss jumped and "
            "wandered (diverged_plateau)"
        ),
    )
)
