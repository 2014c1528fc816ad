"""Keras programs whose data is the bug: NaN features, a zero standard deviation, raw
scales.

``keras_nan_features`` (https://github.com/danielegrattarola/keras-gat/issues/14): the
GAT example trained with a NaN loss on the Citeseer dataset. The reporter found NaN
values in the loaded features; adding ``X[np.isnan(X)] = 0`` after loading made it work,
and the maintainer fixed the loader. Our program: a digits MLP in Keras with 1% of the
images carrying a few NaN pixels; the fix replaces NaN by 0.

``keras_zero_std`` (https://github.com/keras-team/keras/issues/2134): in this thread on NaN
regression losses, one user found that standardized data held NaN because a feature's
standard deviation was 0 (``(x - mean) / std`` is 0/0); adding 1e-6 to ``std`` fixed it.
Our program: the raw digit counts standardized per pixel; corner pixels are always 0.

``keras_unscaled_inputs`` (https://github.com/keras-team/keras/issues/510): a Keras MLP
gave a NaN loss unless ``clipnorm`` was set. The maintainer: pre-process the data so each
dimension has zero mean and unit variance; a simple MLP on correctly preprocessed data
does not explode. Our program: an MLP with SGD on the raw breast-cancer measurements (up
to ~4000); the fix standardizes them.

``keras_linear_unscaled_x`` (https://github.com/tensorflow/tensorflow/issues/3148): the
TensorFlow getting-started linear regression (``y = 0.1 x + 0.3``, gradient descent at 0.5)
turned ``W`` and ``b`` into NaN when ``x`` was changed from ``rand(100)`` to
``arange(100)``. The maintainer: with inputs around 50 that learning rate is too high for
stable convergence; fix it by scaling the data (``arange(100) / 100``), or else lower the
learning rate to 1e-4 and train ~40000 iterations. Our program: the same regression as a
one-unit Keras model, full-batch SGD at 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bugs import _data
from bugs._case import BugCase, Outcome
from bugs._registry import register
from bugs.keras_cases._common import compile_logits, fit_and_score, seed_keras
from gradvitals.findings import Cause, FailureMode


def _classifier(keras: Any, d: int, classes: int, hidden: int = 128) -> Any:
    return keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(classes, name="logits"),
        ]
    )


def run_nan_features(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    keras = seed_keras(seed)
    x, y, x_test, y_test = _data.digits(seed)
    rng = np.random.default_rng(seed)
    for r in rng.choice(len(x), size=len(x) // 100, replace=False):
        x[r, rng.choice(64, size=3, replace=False)] = np.nan
    if variant == "fixed":  # the fix from the issue: replace NaN features by 0
        x[np.isnan(x)] = 0.0
    model = _classifier(keras, 64, 10)
    compile_logits(model, keras.optimizers.Adam(1e-3))
    return fit_and_score(model, x, y, x_test, y_test, "accuracy", watch, steps=steps, seed=seed)


def run_zero_std(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    keras = seed_keras(seed)
    x, y, x_test, y_test = _data.digits(seed, raw=True)
    mean = x.mean(0)
    std = x.std(0) + (1e-6 if variant == "fixed" else 0.0)  # the fix: + 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        x, x_test = (x - mean) / std, (x_test - mean) / std
    model = _classifier(keras, 64, 10)
    compile_logits(model, keras.optimizers.Adam(1e-3))
    return fit_and_score(model, x, y, x_test, y_test, "accuracy", watch, steps=steps, seed=seed)


def run_unscaled_inputs(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    keras = seed_keras(seed)
    x, y, x_test, y_test = _data.breast_cancer(seed, standardize=variant == "fixed")
    model = _classifier(keras, 30, 2, hidden=64)
    compile_logits(model, keras.optimizers.SGD(0.01, momentum=0.9))
    return fit_and_score(model, x, y, x_test, y_test, "accuracy", watch, steps=steps, seed=seed)


register(
    BugCase(
        id="keras_nan_features",
        url="https://github.com/danielegrattarola/keras-gat/issues/14",
        framework="keras",
        title="NaN loss on Citeseer: the loaded features contain NaN",
        report=(
            "Training the GAT example on Citeseer gave a NaN loss. The reporter found NaN "
            "values in the loaded feature matrix and fixed it with X[np.isnan(X)] = 0 after "
            "loading; the maintainer then fixed the loader."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.NONFINITE_INPUT,
        first_remedy="clean_inputs",
        repairable=True,
        run=run_nan_features,
        note="a digits MLP with 1% of the images carrying 3 NaN pixels, instead of a GAT",
    )
)

register(
    BugCase(
        id="keras_zero_std",
        url="https://github.com/keras-team/keras/issues/2134",
        framework="keras",
        title="Standardized data holds NaN: a feature's standard deviation is 0",
        report=(
            "In a thread on NaN losses in Keras regression, one user traced theirs to NaN "
            "values in the standardized data. A feature with zero standard deviation made "
            "(x - mean) / std a 0/0; adding 1e-6 to the standard deviation fixed it."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.NONFINITE_INPUT,
        first_remedy="clean_inputs",
        repairable=False,
        run=run_zero_std,
        note="digits classification; some corner pixels are 0 in every image",
    )
)

register(
    BugCase(
        id="keras_unscaled_inputs",
        url="https://github.com/keras-team/keras/issues/510",
        framework="keras",
        title="MLP loss is NaN unless clipnorm is set; the maintainer: standardize the data",
        report=(
            "A Keras MLP trained to a NaN loss unless clipnorm was set. The maintainer's "
            "answer: pre-process the data so every dimension has zero mean and unit "
            "variance; a simple MLP on correctly preprocessed data does not explode."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.UNSCALED_DATA,
        first_remedy="normalize_data",
        repairable=False,
        run=run_unscaled_inputs,
        note="the raw breast-cancer measurements (up to ~4000), SGD with momentum",
    )
)


def run_linear_unscaled_x(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 200
    keras = seed_keras(seed)
    x = np.arange(100, dtype="float32")[:, None]
    if variant == "fixed":  # the maintainer's fix: scale the input
        x = x / 100.0
    y = 0.1 * x + 0.3
    rng = np.random.default_rng(seed)
    x_test = x + rng.uniform(-0.5, 0.5, size=x.shape).astype("float32") * float(x[1, 0] - x[0, 0])
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, name="line")])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    return fit_and_score(
        model, x, y, x_test, 0.1 * x_test + 0.3, "r2", watch, steps=steps, seed=seed, batch=100
    )


register(
    BugCase(
        id="keras_linear_unscaled_x",
        url="https://github.com/tensorflow/tensorflow/issues/3148",
        framework="keras",
        title="Getting-started linear regression gives NaN with x = arange(100)",
        report=(
            "The getting-started linear regression turned W and b into NaN when x was "
            "changed from rand(100) to arange(100). The maintainer: inputs around 50 make "
            "the learning rate of 0.5 far too high; scale the data (arange(100) / 100), or "
            "lower the learning rate to 1e-4 and train ~40000 iterations."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.UNSCALED_DATA,
        first_remedy="normalize_data",
        repairable=False,
        run=run_linear_unscaled_x,
        steps=200,
        metric="r2",
        note="a one-unit Keras model instead of TF 0.9 variables; full-batch SGD at 0.5",
    )
)
