"""Pre-flight lint for a Keras 3 model: its output layer, its compiled loss and a batch.

:func:`lint_keras` checks what a Keras model makes checkable without training:

- the last layer's activation against the compiled loss: a softmax/sigmoid/ReLU output
  with ``from_logits=True`` (the loss applies softmax/sigmoid again), or a linear/ReLU/
  tanh output with ``from_logits=False`` (the default!), which Keras clips to
  ``[1e-7, 1 - 1e-7]`` so negative scores get no gradient (``output_activation``);
- a softmax over one unit (the output is 1.0 whatever the input), and a categorical
  cross-entropy over one unit (the loss is constant);
- with ``y``: a bounded output (sigmoid, tanh, ReLU) and targets outside its range; a
  binary cross-entropy on targets outside [0, 1]; MSE/MAE/Huber on one column of class
  ids with a multi-unit output (``loss_mismatch``);
- with ``x``/``y``: inputs or regression targets far from unit scale
  (``unscaled_data``), unless the model starts with ``Normalization``, ``Rescaling``,
  ``BatchNormalization`` or ``LayerNormalization`` (or a Dense/Conv layer followed at
  once by a batch/layer normalization).

``log(softmax(x))`` inside a loss cannot be seen in a compiled Keras model (the loss is
library code, or an untraced function), so the unstable-loss rule is PyTorch-only.
The decisions and thresholds are shared with :func:`gradvitals.lint`; see
``gradvitals._preflight_rules`` for the formulas. Keras is imported only when
:func:`lint_keras` runs.

>>> from gradvitals.keras._lint import keras_loss_name
>>> keras_loss_name("mse"), keras_loss_name(None)
(('mse_loss', False), (None, False))
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gradvitals import _preflight_rules as rules
from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.remedies import render

__all__ = ["keras_loss_name", "lint_keras"]

#: Keras loss function name -> (PyTorch functional name with logits, without logits)
_LOSSES: dict[str, tuple[str, str]] = {
    "sparse_categorical_crossentropy": ("cross_entropy", "categorical_probabilities"),
    "categorical_crossentropy": ("cross_entropy", "categorical_probabilities"),
    "categorical_focal_crossentropy": ("cross_entropy", "categorical_probabilities"),
    "binary_crossentropy": ("binary_cross_entropy_with_logits", "binary_cross_entropy"),
    "binary_focal_crossentropy": ("binary_cross_entropy_with_logits", "binary_cross_entropy"),
    "mean_squared_error": ("mse_loss", "mse_loss"),
    "mean_absolute_error": ("l1_loss", "l1_loss"),
    "huber": ("huber_loss", "huber_loss"),
    "log_cosh": ("huber_loss", "huber_loss"),
}
_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "logcosh": "log_cosh"}
#: Keras activation name -> the rules' name
_ACTS = {
    "linear": "linear",
    "softmax": "softmax",
    "log_softmax": "log_softmax",
    "sigmoid": "sigmoid",
    "hard_sigmoid": "hardsigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "relu6": "relu6",
    "softplus": "softplus",
    "exponential": "exp",
    "elu": "elu",
    "selu": "selu",
    "softsign": "softsign",
    "hard_tanh": "hardtanh",
}
_TRAILING = frozenset(
    {"Dropout", "Flatten", "Reshape", "Identity", "GaussianNoise", "GaussianDropout"}
)
_NORMALIZING = frozenset(
    {"Normalization", "Rescaling", "BatchNormalization", "LayerNormalization", "GroupNormalization"}
)
_AFFINE = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D", "EinsumDense"})


def keras_loss_name(loss: Any) -> tuple[str | None, bool]:
    """``(name, from_logits)`` of a compiled Keras loss, ``name`` in the PyTorch
    functional vocabulary of ``gradvitals._preflight_rules`` (``"cross_entropy"``,
    ``"binary_cross_entropy"``, ``"mse_loss"``...; ``"categorical_probabilities"`` for a
    categorical cross-entropy on probabilities); ``(None, False)`` for an unknown,
    missing or multi-output loss.
    """
    if (
        loss is None
        or isinstance(loss, (list, tuple, dict))
        or type(loss).__name__ == "ListWrapper"
    ):
        return None, False
    from_logits = False
    fn = loss
    if not isinstance(loss, str):
        config = loss.get_config() if hasattr(loss, "get_config") else {}
        from_logits = bool(config.get("from_logits", False)) if isinstance(config, dict) else False
        fn = getattr(loss, "fn", loss)
    name = fn if isinstance(fn, str) else str(getattr(fn, "__name__", ""))
    name = _ALIASES.get(name.lower(), name.lower())
    pair = _LOSSES.get(name)
    if pair is None:
        return None, False
    return (pair[0] if from_logits else pair[1]), from_logits


def _loss_label(loss: Any, from_logits: bool) -> str:
    if isinstance(loss, str):
        return repr(loss)
    cls = type(loss).__name__
    if cls == "LossFunctionWrapper":
        cls = str(getattr(getattr(loss, "fn", None), "__name__", cls))
    return f"{cls}(from_logits={from_logits})"


def _activation(layer: Any) -> str | None:
    cls = type(layer).__name__
    if cls == "Softmax":
        return "softmax"
    if cls == "ReLU":
        return "relu6" if getattr(layer, "max_value", None) == 6 else "relu"
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    name = str(getattr(act, "__name__", act))
    return _ACTS.get(name)


def _units(model: Any, layer: Any) -> int | None:
    units = getattr(layer, "units", None)
    if isinstance(units, int):
        return units
    try:
        last = model.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return int(last) if isinstance(last, int) else None


def _layers(model: Any) -> list[Any]:
    return [la for la in getattr(model, "layers", []) if type(la).__name__ != "InputLayer"]


def _normalised_first(layers: list[Any]) -> bool:
    if not layers:
        return False
    first = type(layers[0]).__name__
    if first in _NORMALIZING:
        return True
    if first in _AFFINE and len(layers) > 1:
        return type(layers[1]).__name__ in ("BatchNormalization", "LayerNormalization")
    return False


def _arrays(data: Any, name: str) -> list[tuple[str, np.ndarray]]:
    if data is None:
        return []
    items = data.items() if isinstance(data, dict) else [(None, data)]
    out = []
    for key, v in items:
        try:
            a = np.asarray(v)
        except (TypeError, ValueError):
            continue
        if a.dtype.kind in "fiub":
            out.append((name if key is None else f"{name}[{key!r}]", a))
    return out


def _keras(f: Finding | None) -> Finding | None:
    if f is None:
        return None
    remedies = [render(r.key, "keras", **r.params) for r in f.remedies]
    return dataclasses.replace(f, remedies=remedies)


def lint_keras(model: Any, x: Any = None, y: Any = None) -> list[Finding]:
    """Check a Keras model's output layer and compiled loss, and optionally a batch.

    Args:
        model: a Keras 3 model; compile it first for the loss rules.
        x: optional inputs (array, tensor, or dict of them) for the input-scale rule.
        y: optional targets (class ids, 0/1 labels or regression values).

    Returns:
        Findings with ``step=-1``, a cause, and remedies with Keras code; an empty list
        when nothing is wrong.

    Raises:
        UsageError: ``model`` is not a Keras model.
        ImportError: Keras is not installed.
    """
    try:
        import keras
    except ImportError as e:  # pragma: no cover - exercised only without keras
        raise ImportError(
            'lint_keras needs Keras 3. Install it with: pip install "gradvitals[keras]" tensorflow'
        ) from e
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"lint_keras() takes a keras.Model, got {type(model).__name__}; for PyTorch "
            "models use gradvitals.lint(model, x, target=y, loss_fn=...)."
        )
    layers = _layers(model)
    tail = [la for la in layers if type(la).__name__ not in _TRAILING]
    last = tail[-1] if tail else None
    act = _activation(last) if last is not None else None
    layer = str(last.name) if last is not None else None
    units = _units(model, last) if last is not None else None
    loss, from_logits = keras_loss_name(getattr(model, "loss", None))
    label = _loss_label(getattr(model, "loss", None), from_logits)
    found: list[Finding | None] = []
    where = f" (layer '{layer}')"
    if act is not None and layer is not None:
        if act == "softmax" and units is not None:
            found.append(rules.unit_softmax(act, units, layer=layer, where=where))
        if loss in rules.LOGIT_LOSSES:
            found.append(
                rules.output_for_loss(
                    act, loss, classes=units, layer=layer, where=where, loss_label=label
                )
            )
        elif loss in ("categorical_probabilities", "binary_cross_entropy"):
            found.append(rules.probability_loss_on_scores(act, label, layer=layer))
    if loss in ("cross_entropy", "categorical_probabilities") and units == 1 and act != "softmax":
        found.append(rules.class_loss_on_one_unit("cross_entropy", 1, loss_label=label))
    targets = _arrays(y, "y")
    for name, t in targets:
        s = rules.summarize(t)
        if loss in rules.BINARY_LOSSES:
            found.append(rules.binary_targets(loss, s, loss_label=label))
            continue
        if loss in rules.REGRESSION_LOSSES and units is not None:
            column = t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)
            mismatch = rules.regression_on_class_ids(
                loss, units, s, column=column, loss_label=label
            )
            if mismatch is not None:
                found.append(mismatch)
                continue
        if loss in (None, *rules.REGRESSION_LOSSES) and act is not None and t.dtype.kind == "f":
            lo, hi = rules.OUTPUT_RANGE.get(act, (-np.inf, np.inf))
            outside = float(np.mean((t < lo) | (t > hi))) if t.size else 0.0
            found.append(
                rules.output_range_vs_targets(
                    act, s, fraction_outside=outside, layer=layer, where=where
                )
            )
        if loss in (None, *rules.REGRESSION_LOSSES) and t.dtype.kind == "f":
            found.append(rules.data_scale(name, s, rules.TARGET_SCALE, role="target"))
    if not _normalised_first(layers):
        for name, a in _arrays(x, "x"):
            if a.dtype.kind == "f":
                found.append(rules.data_scale(name, rules.summarize(a), rules.INPUT_SCALE))
    out: list[Finding] = []
    for f in found:
        k = _keras(f)
        if k is not None and all(k.message != o.message for o in out):
            out.append(k)
    return out
