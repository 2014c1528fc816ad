"""Keras programs whose training setup is the bug: learning rate, float16, deep sigmoid
stacks.

``keras_linreg_lr`` (https://github.com/keras-team/keras/issues/3040): a one-unit linear
regression on ``x = 0..199``, ``y = 2x`` with SGD at 0.001 (batch size 1) produced NaN
weights after a few iterations; the reporter "realized my learning rate was too high".
Our program: the same model and data; the fix lowers the learning rate 100x.

``keras_float16_epsilon`` (https://github.com/keras-team/keras/issues/11832): an EDSR
model trained with ``floatx`` set to float16 saw its loss go down for ~10 minibatches,
then up to inf and NaN; the reporter solved it with ``K.set_epsilon(1e-4)`` (Keras' 1e-7
fuzz factor, Adam's epsilon among others, is 0 in float16). Our program: a digits MLP in
float16 with Adam; the fix gives Adam ``epsilon=1e-4``.

``keras_deep_sigmoid`` (https://ai.stackexchange.com/questions/16557/what-could-be-the-problem-when-a-neural-network-with-four-hidden-layers-with-the):
a TensorFlow network with four hidden layers of 500 sigmoid units could not learn, with a
high loss even on the training data. The answer: a deep stack of sigmoids shrinks the
error signal by at least 4x per layer (its derivative is at most 0.25), the vanishing
gradient; switch to ReLU-family activations. Our program: the same stack on the digits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bugs import _data
from bugs._case import BugCase, Outcome
from bugs._registry import register
from bugs.keras_cases._common import compile_logits, fit_and_score, seed_keras
from gradvitals.findings import Cause, FailureMode


def run_linreg_lr(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 200
    keras = seed_keras(seed)
    x = np.arange(200, dtype="float32")[:, None]
    y = 2.0 * x
    x_test = x + 0.5
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, name="line")])
    lr = 1e-3 if variant == "buggy" else 1e-5
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    return fit_and_score(
        model, x, y, x_test, 2.0 * x_test, "r2", watch, steps=steps, seed=seed, batch=1
    )


def run_float16_epsilon(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    keras = seed_keras(seed)
    x, y, x_test, y_test = _data.digits(seed)
    x, x_test = x.astype("float16"), x_test.astype("float16")
    previous = keras.config.floatx()
    keras.config.set_floatx("float16")
    try:
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(128, activation="relu", name="hidden"),
                keras.layers.Dense(10, name="logits"),
            ]
        )
        eps = 1e-7 if variant == "buggy" else 1e-4  # the fix: an epsilon float16 can hold
        compile_logits(model, keras.optimizers.Adam(1e-3, epsilon=eps))
        return fit_and_score(model, x, y, x_test, y_test, "accuracy", watch, steps=steps, seed=seed)
    finally:
        keras.config.set_floatx(previous)


def run_deep_sigmoid(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    keras = seed_keras(seed)
    x, y, x_test, y_test = _data.digits(seed)
    act = "sigmoid" if variant == "buggy" else "relu"
    init = "glorot_uniform" if variant == "buggy" else "he_normal"
    layers = [keras.Input((64,))]
    for i in range(4):
        layers.append(
            keras.layers.Dense(500, activation=act, kernel_initializer=init, name=f"hidden{i}")
        )
    layers.append(keras.layers.Dense(10, name="logits"))
    model = keras.Sequential(layers)
    compile_logits(model, keras.optimizers.SGD(0.01))
    return fit_and_score(model, x, y, x_test, y_test, "accuracy", watch, steps=steps, seed=seed)


register(
    BugCase(
        id="keras_linreg_lr",
        url="https://github.com/keras-team/keras/issues/3040",
        framework="keras",
        title="Simple linear regression gives NaN weights after a few iterations",
        report=(
            "A one-unit linear regression (x = 0..199, y = 2x, SGD at 0.001, batch size 1) "
            "ended with NaN weights after a few iterations. The reporter realized the "
            "learning rate was too high."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.LEARNING_RATE,
        first_remedy="lower_lr",
        repairable=True,
        run=run_linreg_lr,
        steps=200,
        metric="r2",
        note="the fixed run uses a 100x lower learning rate (the report gives no value)",
    )
)

register(
    BugCase(
        id="keras_float16_epsilon",
        url="https://github.com/keras-team/keras/issues/11832",
        framework="keras",
        title="Training in float16: the loss goes to inf and NaN; fixed with epsilon 1e-4",
        report=(
            "With Keras' floatx set to float16 the loss went down for about ten minibatches, "
            "then up to inf and NaN, while float32 trained. The reporter solved it by "
            "setting Keras' epsilon to 1e-4; the default 1e-7 rounds to 0 in float16."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.LOW_PRECISION_OVERFLOW,
        first_remedy="fix_precision",
        repairable=False,
        run=run_float16_epsilon,
        note=(
            "a digits MLP instead of EDSR; Keras 3 takes Adam's epsilon as an argument. In "
            "our 300 steps the loss jumps ~6x and the weights grow ~100x but stay finite"
        ),
    )
)

register(
    BugCase(
        id="keras_deep_sigmoid",
        url=(
            "https://ai.stackexchange.com/questions/16557/what-could-be-the-problem-when-a-"
            "neural-network-with-four-hidden-layers-with-the"
        ),
        framework="keras",
        title="Four hidden layers of 500 sigmoid units: the network does not learn",
        report=(
            "A network with four hidden layers of 500 sigmoid units kept a high loss even "
            "on its training data. The answer: each sigmoid layer shrinks the back-propagated "
            "error by at least 4x (the vanishing gradient); use ReLU-family activations."
        ),
        symptom=FailureMode.VANISHING_GRADIENT,
        cause=Cause.SATURATING_ACTIVATION,
        first_remedy="relu_he",
        repairable=False,
        run=run_deep_sigmoid,
        note="digits classification with SGD instead of binary-vector regression",
    )
)
