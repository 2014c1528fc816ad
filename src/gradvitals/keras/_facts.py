"""What the Keras callback can tell the diagnosis about the model and the data.

The Keras callback measures on probe batches: it sees neither the training batches
nor the loss's graph, and cannot replay a failing step. What it does know, once, when
training starts, goes into ``session.model_facts`` for :func:`~gradvitals.session.
_diagnosis.diagnose` (and the output layers into each window's ``record.facts`` for the
output-activation detector):

- ``activations``: the hidden activation of each site (sigmoid/tanh stacks ->
  ``saturating_activation``); ``has_normalization``; ``recurrent`` layers;
- ``output_layers``: each output layer's activation and units, and the range of the
  probe targets when they are dense (one target per output unit): a softmax over one
  unit, a sigmoid fed labels 1 and 5;
- ``loss``: its name and whether it is a function the user wrote (a NaN from finite
  outputs is then the loss's);
- ``param_dtypes`` and ``optimizer_eps``: float16 weights under an Adam epsilon float16
  cannot use;
- ``probe``: the probe examples' non-finite inputs and targets and the inputs' scale.
  The probe is a sample of the user's training data, so a NaN in it is a NaN in the
  data (the training batches themselves stay unseen).

>>> import numpy as np
>>> p = probe_facts([(np.array([[1.0, np.nan], [3.0, 4.0]]), np.array([0.0, 1.0]), None)])
>>> p["examples"], p["input_nonfinite"], p["input_abs_max"], round(p["input_rms"], 3)
(2, 1, 4.0, 2.944)
>>> target_facts([(None, np.array([1.0, 5.0, 5.0]), None)], units=1)
{'target_min': 1.0, 'target_max': 5.0, 'target_integer': True}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradvitals.keras._layout import Site, keras_activation_name, walk_layers

__all__ = ["model_facts", "probe_facts", "target_facts"]

_NORMALIZATION = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "RMSNormalization",
)
_RECURRENT = (
    "LSTM",
    "GRU",
    "SimpleRNN",
    "RNN",
    "Bidirectional",
    "ConvLSTM1D",
    "ConvLSTM2D",
    "ConvLSTM3D",
)


def _first_leaf(x: Any) -> Any:
    if isinstance(x, dict):
        return next(iter(x.values()), None)
    if isinstance(x, (list, tuple)):
        return x[0] if x else None
    return x


def _numpy(x: Any) -> np.ndarray | None:
    leaf = _first_leaf(x)
    if leaf is None:
        return None
    try:
        a = np.asarray(leaf)
    except (TypeError, ValueError):
        return None
    return a if a.dtype.kind in "fiub" else None


def probe_facts(batches: list[tuple[Any, Any, Any]]) -> dict[str, Any]:
    """Non-finite inputs (examples) and targets, and the scale of the finite inputs."""
    xs = [a for a in (_numpy(b[0]) for b in batches) if a is not None and a.size]
    ys = [a for a in (_numpy(b[1]) for b in batches) if a is not None and a.size]
    out: dict[str, Any] = {"examples": int(sum(len(a) for a in xs))}
    if xs:
        x = np.concatenate([a.reshape(len(a), -1).astype(np.float64) for a in xs])
        ok = np.isfinite(x)
        out["input_nonfinite"] = int((~ok.all(axis=1)).sum())
        finite = np.where(ok, x, 0.0)
        out["input_abs_max"] = float(np.abs(finite).max())
        out["input_rms"] = float(math.sqrt(float((finite**2).sum()) / max(int(ok.sum()), 1)))
    if ys:
        y = np.concatenate([a.reshape(len(a), -1).astype(np.float64) for a in ys])
        out["target_nonfinite"] = int((~np.isfinite(y).all(axis=1)).sum())
    return out


def target_facts(batches: list[tuple[Any, Any, Any]], units: int) -> dict[str, Any]:
    """The range of dense probe targets (one per output unit), and whether they look like
    class labels (integers taking at most ``max(2, units)`` values). Sparse class indices
    (one integer per example for several units) are not compared with the output."""
    ys = [a for a in (_numpy(b[1]) for b in batches) if a is not None and a.size]
    if not ys:
        return {}
    y = np.concatenate([a.reshape(len(a), -1).astype(np.float64) for a in ys])
    if y.shape[1] != units:
        return {}
    finite = y[np.isfinite(y)]
    if not finite.size:
        return {}
    values = np.unique(finite)
    labels = bool(np.all(values == np.round(values)) and len(values) <= max(2, units))
    return {
        "target_min": float(finite.min()),
        "target_max": float(finite.max()),
        "target_integer": labels,
    }


def _activation_name(layer: Any) -> str | None:
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", None)
    if name == "softmax":
        return "softmax"
    return keras_activation_name(fn) if fn is not None else None


def _units(layer: Any) -> int | None:
    units = getattr(layer, "units", None)
    if isinstance(units, int):
        return units
    try:
        last = layer.output.shape[-1]
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    return int(last) if last is not None else None


def _output_layers(model: Any) -> list[Any]:
    layers = walk_layers(model)
    try:
        outs = {id(t) for t in model.outputs}
        found = [ly for ly in layers if id(getattr(ly, "output", None)) in outs]
    except (AttributeError, ValueError, TypeError):
        found = []
    return found or layers[-1:]


def _loss(model: Any) -> dict[str, Any]:
    loss = getattr(model, "loss", None)
    if loss is None:
        return {}
    if isinstance(loss, str):
        return {"name": loss, "custom": False}
    module = getattr(loss, "__module__", "") or type(loss).__module__
    name = getattr(loss, "__name__", None) or type(loss).__name__
    return {"name": str(name), "custom": callable(loss) and not module.startswith("keras")}


def model_facts(
    model: Any, sites: list[Site], batches: list[tuple[Any, Any, Any]]
) -> dict[str, Any]:
    """The facts the diagnosis reads (see the module docstring)."""
    layers = walk_layers(model)
    kinds = [{c.__name__ for c in type(ly).__mro__} for ly in layers]
    heads = _output_layers(model)
    outputs = []
    for layer in heads:
        units = _units(layer)
        entry: dict[str, Any] = {
            "name": layer.name,
            "activation": _activation_name(layer),
            "units": units,
        }
        if units is not None and len(heads) == 1:  # the probe targets are this head's
            entry.update(target_facts(batches, units))
        outputs.append(entry)
    opt = getattr(model, "optimizer", None)
    eps = getattr(opt, "epsilon", None)
    return {
        "framework": "keras",
        "activations": {s.name: s.activation for s in sites},
        "has_normalization": any(k & set(_NORMALIZATION) for k in kinds),
        "recurrent": [ly.name for ly, k in zip(layers, kinds, strict=True) if k & set(_RECURRENT)],
        "output_sites": [],
        "output_layers": outputs,
        "loss": _loss(model),
        "param_dtypes": sorted({str(getattr(v, "dtype", "")) for v in model.trainable_variables}),
        "optimizer_eps": float(eps) if isinstance(eps, (int, float)) else None,
        "probe": probe_facts(batches),
    }
