"""Shared plumbing of the Keras cases: seeding, an exact-step ``fit`` and the outcome.

A case builds and compiles its model (where its bug usually is) and hands it to
:func:`fit_and_score`, which attaches the runner's callback, trains for the case's
steps and measures the :class:`~bugs._case.Outcome`.

Importing this module does not import keras; every function imports it when called.

>>> import numpy as np
>>> metric_value(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 0]), "accuracy")
1.0
>>> round(metric_value(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), "r2"), 3)
0.786
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bugs import _data
from bugs._case import Outcome

__all__ = [
    "compile_logits",
    "fit",
    "fit_and_score",
    "fit_steps",
    "keras_outcome",
    "metric_value",
    "probe",
    "seed_keras",
]


def seed_keras(seed: int) -> Any:
    """Clear the Keras session, seed Python/numpy/TF, and return the ``keras`` module."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    return keras


def probe(x: np.ndarray, y: np.ndarray, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` training examples: what ``VitalsCallback`` measures on."""
    return x[:n], y[:n]


def compile_logits(model: Any, optimizer: Any) -> None:
    """Compile a classifier whose last layer outputs logits: ``optimizer`` and sparse
    categorical cross-entropy with ``from_logits=True``."""
    import keras

    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )


def fit_steps(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch: int,
    steps: int,
    seed: int,
    callbacks: list[Any],
) -> list[float]:
    """Train for exactly ``steps`` optimizer steps (the same shuffled minibatches as the
    PyTorch cases), as one ``model.fit`` epoch; returns the epoch's mean loss as a list."""
    idx = np.concatenate(list(_data.batch_indices(len(x), batch, steps=steps, seed=seed)))
    history = model.fit(
        x[idx], y[idx], batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=callbacks
    )
    return [float(v) for v in history.history["loss"]]


def metric_value(pred: np.ndarray, y: np.ndarray, metric: str) -> float:
    """Accuracy (argmax; one column = probability above 0.5) or R²; NaN if not finite."""
    pred = np.asarray(pred, dtype=np.float64)
    if not np.isfinite(pred).all():
        return float("nan")
    if metric == "accuracy":
        if pred.ndim == 1 or pred.shape[-1] == 1:
            labels = (pred.reshape(-1) > 0.5).astype(np.int64)
        else:
            labels = pred.argmax(-1)
        return float((labels == np.asarray(y).reshape(-1)).mean())
    p, t = pred.reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    return 1.0 - float(((p - t) ** 2).sum()) / float(((t - t.mean()) ** 2).sum())


def keras_outcome(
    model: Any,
    epoch_losses: list[float],
    x_test: np.ndarray,
    y_test: np.ndarray,
    metric: str,
    *,
    steps: int,
) -> Outcome:
    """The :class:`Outcome` of a finished ``fit``. ``final_loss`` is the epoch's mean
    training loss (Keras reports no per-step loss without a per-batch callback)."""
    value = metric_value(model.predict(x_test, verbose=0), y_test, metric)
    weights_finite = all(
        np.isfinite(np.asarray(w, dtype=np.float64)).all() for w in model.get_weights()
    )
    loss = epoch_losses[-1] if epoch_losses else float("nan")
    return Outcome(
        final_loss=loss,
        metric=value,
        metric_name=metric,
        nonfinite=not math.isfinite(loss) or not weights_finite or not math.isfinite(value),
        steps=steps,
    )


def fit(
    model: Any, x: np.ndarray, y: np.ndarray, watch: Any, *, steps: int, seed: int, batch: int = 32
) -> list[float]:
    """:func:`fit_steps` with the runner's callback (``watch``, none when it is ``None``)
    measuring on :func:`probe` of the training data."""
    callbacks = watch(probe(x, y)) if watch else []
    return fit_steps(model, x, y, batch=batch, steps=steps, seed=seed, callbacks=callbacks)


def fit_and_score(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    metric: str,
    watch: Any,
    *,
    steps: int,
    seed: int,
    batch: int = 32,
) -> Outcome:
    """:func:`fit` on ``(x, y)``, then :func:`keras_outcome` on ``(x_test, y_test)``."""
    losses = fit(model, x, y, watch, steps=steps, seed=seed, batch=batch)
    return keras_outcome(model, losses, x_test, y_test, metric, steps=steps)
