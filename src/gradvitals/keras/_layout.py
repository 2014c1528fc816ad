"""What to measure in a Keras model: its layers with weights, and its activation sites.

A *layer* is a top-level Keras layer that owns trainable weights (a nested
``keras.Model`` is walked into); its name is the Keras layer name (``"dense_1"``) and
its kind the class name (``"Dense"``, ``"Conv2D"``), so
:attr:`~gradvitals.stats.LayerStats.is_weight_layer` keeps Dense, Conv and recurrent
layers for the depth comparisons. Layers come in ``model.layers`` order, which is
forward order for Functional and Sequential models (definition order for subclassed
ones).

An activation *site* is the output of a layer that applies a known elementwise
activation: ``Dense(activation=...)``, ``Conv*D(activation=...)``, ``Activation``,
``ReLU``, ``LeakyReLU``, ``ELU``, ``PReLU``. ``Dense(activation="relu")`` exposes only
its post-activation output, which is what dead units and saturation are measured
on. The model's output layers are not sites: an output sigmoid/softmax belongs to the
loss, and a confident classifier saturates it by design.

>>> keras_activation_name(type("F", (), {"__name__": "hard_sigmoid"})())
'hardsigmoid'
>>> keras_activation_name(type("F", (), {"__name__": "softmax"})()) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SUBCLASSED",
    "GraphView",
    "LayerTable",
    "Site",
    "graph_view",
    "keras_activation_name",
    "plan_sites",
    "walk_layers",
]

#: Keras names that are not hidden-unit nonlinearities (or not elementwise).
_NOT_SITES = frozenset({"identity", "softmax", "log_softmax", "glu", "sparsemax"})

#: Classes (anywhere in the MRO) whose ``activation`` attribute is applied elementwise
#: to the layer's output. Recurrent layers also have ``activation`` but their output
#: is not that function's output, so they are left out.
_ACTIVATED = frozenset(
    {
        "Dense",
        "EinsumDense",
        "BaseConv",
        "BaseConvTranspose",
        "BaseDepthwiseConv",
        "BaseSeparableConv",
        "Activation",
    }
)


def keras_activation_name(fn: Any) -> str | None:
    """The catalog name of a Keras activation function, or None when it is not one.

    Uses the function's ``__name__`` (``keras.activations.relu`` -> ``"relu"``) and the
    gradvitals catalog's aliases (``hard_sigmoid`` -> ``"hardsigmoid"``, ``swish`` ->
    ``"silu"``). Linear, softmax and unknown functions give None: no site.
    """
    from gradvitals.activations import get
    from gradvitals.errors import UsageError

    name = getattr(fn, "__name__", None)
    if not isinstance(name, str):
        return None
    try:
        canonical = get(name).name
    except UsageError:
        return None
    return None if canonical in _NOT_SITES else canonical


def _layer_activation(layer: Any) -> str | None:
    """The catalog name of the activation a layer applies to its output, if any."""
    mro = {cls.__name__ for cls in type(layer).__mro__}
    if "ReLU" in mro and type(layer).__module__.startswith("keras"):
        if getattr(layer, "max_value", None) == 6.0:
            return "relu6"
        if (getattr(layer, "negative_slope", 0.0) or 0.0) > 0.0:
            return "leaky_relu"
        return "relu"
    for cls_name, act in (("LeakyReLU", "leaky_relu"), ("ELU", "elu"), ("PReLU", "prelu")):
        if cls_name in mro:
            return act
    if mro & _ACTIVATED:
        return keras_activation_name(getattr(layer, "activation", None))
    return None


def _unit_axis(layer: Any, keras: Any) -> int:
    """The axis that indexes units: features/channels last unless ``channels_first``."""
    fmt = getattr(layer, "data_format", None)
    if fmt is None and "Activation" in {c.__name__ for c in type(layer).__mro__}:
        fmt = keras.config.image_data_format()
    return 1 if fmt == "channels_first" else -1


def walk_layers(model: Any) -> list[Any]:
    """Top-level layers in ``model.layers`` order, walking into nested models."""
    import keras

    out: list[Any] = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            out.extend(walk_layers(layer))
        else:
            out.append(layer)
    return out


@dataclass
class LayerTable:
    """Trainable variables grouped by owning layer, in forward order."""

    names: list[str]
    kinds: list[str]
    numel: list[int]
    variables: list[Any]
    layer_of_var: list[int]
    layers: list[Any] = field(default_factory=list)

    @classmethod
    def from_model(cls, model: Any) -> LayerTable:
        names: list[str] = []
        kinds: list[str] = []
        numel: list[int] = []
        variables: list[Any] = []
        owner: list[int] = []
        layers: list[Any] = []
        seen: set[int] = set()

        def add(name: str, kind: str, layer: Any, own: list[Any]) -> None:
            own = [v for v in own if id(v) not in seen]
            if not own:
                return
            if name in names:  # two layers with one name (nested models): keep both
                name = f"{name}#{names.count(name)}"
            names.append(name)
            kinds.append(kind)
            layers.append(layer)
            numel.append(sum(int(_size(v)) for v in own))
            for v in own:
                seen.add(id(v))
                variables.append(v)
                owner.append(len(names) - 1)

        for layer in walk_layers(model):
            add(layer.name, type(layer).__name__, layer, list(layer.trainable_weights))
        # weights the model owns directly (a subclassed model's add_weight)
        add(model.name, type(model).__name__, model, list(model.trainable_weights))
        return cls(names, kinds, numel, variables, owner, layers)


def _size(v: Any) -> int:
    n = 1
    for d in v.shape:
        n *= int(d)
    return n


@dataclass
class Site:
    """One activation site: a layer's output and the activation that produced it."""

    name: str
    activation: str
    layer: Any
    unit_axis: int


@dataclass
class GraphView:
    """A symbolic view of the model: its inputs, each site's output and the prediction."""

    inputs: Any
    site_outputs: list[Any]
    prediction: Any


SUBCLASSED = (
    "activation statistics (dead units, saturation) need a Functional or Sequential "
    "model; {cls} is a subclassed model, so only gradients, update ratios, the loss and "
    "NaN/Inf are watched. Build it with keras.Input(...) (Functional API) or "
    "keras.Sequential to watch activations too."
)


def _is_graph_model(model: Any) -> bool:
    import keras

    if isinstance(model, keras.Sequential):
        return True
    try:
        return model.input is not None and bool(model.outputs)
    except (AttributeError, ValueError, TypeError):
        return False


def plan_sites(model: Any) -> tuple[list[Site], str | None]:
    """The activation sites of a Functional or Sequential model, in forward order.

    Returns:
        ``(sites, why_none)``: the candidate sites (the model's output layers are
        dropped later, by :func:`graph_view`), and for a subclassed model a sentence
        saying why activations are not watched and what still is.
    """
    import keras

    if not _is_graph_model(model):
        return [], SUBCLASSED.format(cls=type(model).__name__)
    sites: list[Site] = []
    for layer in getattr(model, "layers", []):
        act = _layer_activation(layer)
        if act is not None:
            sites.append(Site(layer.name, act, layer, _unit_axis(layer, keras)))
    return sites, None


def graph_view(model: Any, sites: list[Site], example_x: Any) -> tuple[GraphView, list[Site]]:
    """Symbolic tensors for a sub-model of layer outputs, and the sites kept.

    A Functional model (or a Sequential one given an ``Input``) already has them
    (``layer.output``; a shared layer gives its first call). A Sequential model built
    without an ``Input`` gets a fresh ``keras.Input`` shaped like ``example_x`` and its
    layers are called on it once (symbolically: no weights change). Output layers are
    dropped from ``sites``.
    """
    import keras
    import tensorflow as tf

    try:
        inputs = model.input
        prediction = model.output
    except (AttributeError, ValueError):
        inputs = prediction = None
    if inputs is not None:
        out_ids = {id(t) for t in tf.nest.flatten(model.outputs)}
        kept = [s for s in sites if id(s.layer.output) not in out_ids]
        return GraphView(inputs, [s.layer.output for s in kept], prediction), kept
    # a Sequential model without an Input: trace one symbolic call
    x = tf.nest.flatten(example_x)[0]
    inputs = keras.Input(shape=tuple(x.shape[1:]), dtype=x.dtype)
    h = inputs
    by_layer: dict[int, Any] = {}
    for layer in model.layers:
        h = layer(h)
        by_layer[id(layer)] = h
    last = model.layers[-1] if model.layers else None
    kept = [s for s in sites if s.layer is not last and id(s.layer) in by_layer]
    return GraphView(inputs, [by_layer[id(s.layer)] for s in kept], h), kept
