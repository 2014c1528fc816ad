"""Keras code for the remedy catalog: the same remedies, with snippets a Keras user can paste.

The catalog (:func:`gradvitals.remedies_for`) is keyed by failure mode and shared by
every adapter; its ``code`` is PyTorch. Findings from the Keras callback keep the
same remedies (``key``, ``action``, ``why``, order) and get Keras code by ``key``.

>>> from gradvitals.findings import FailureMode
>>> from gradvitals.remedies import remedies_for
>>> [r.code for r in keras_remedies(remedies_for(FailureMode.EXPLODING_GRADIENT, clip_norm=2.5))][:2]
['model.optimizer.learning_rate = float(model.optimizer.learning_rate) * 0.1', 'keras.optimizers.Adam(learning_rate, global_clipnorm=2.5)  # or SGD(..., global_clipnorm=2.5)']
"""

from __future__ import annotations

import dataclasses
import re

from gradvitals.findings import Remedy

__all__ = ["keras_remedies"]

_CODE: dict[str, str] = {
    "lower_lr": "model.optimizer.learning_rate = float(model.optimizer.learning_rate) * 0.1",
    "batchnorm": (
        "keras.layers.Dense(h), keras.layers.BatchNormalization(), keras.layers.Activation('relu')"
    ),
    "relu_he": "keras.layers.Dense(h, activation='relu', kernel_initializer='he_normal')",
    "residual": "x = keras.layers.Add()([x, block(x)])",
    "check_numerics": (
        "keras.callbacks.TerminateOnNaN()  # and, while debugging only: "
        "tf.debugging.enable_check_numerics()"
    ),
    "leaky_variant": "keras.layers.Dense(h, activation='leaky_relu')  # or 'elu', 'gelu'",
    "he_init": (
        "keras.layers.Dense(h, activation='relu', kernel_initializer='he_normal', "
        "bias_initializer='zeros')"
    ),
    "check_bias": "print(model.get_layer({layer!r}).bias.numpy().min())",
    "xavier_init": (
        "keras.layers.Dense(h, activation='tanh', kernel_initializer='glorot_uniform')"
        "  # and standardise the inputs"
    ),
    "add_nonlinearity": "keras.layers.Dense(h, activation='relu'), keras.layers.Dense(k)",
    "widen": "keras.layers.Dense(64, activation='relu')  # wider hidden layers",
}


def _clip_code(torch_code: str) -> str:
    m = re.search(r"max_norm=([0-9.eE+-]+)", torch_code)
    value = m.group(1) if m else "1.0"
    return f"keras.optimizers.Adam(learning_rate, global_clipnorm={value})  # or SGD(..., global_clipnorm={value})"


def keras_remedies(remedies: list[Remedy], layer: str | None = None) -> list[Remedy]:
    """The same remedies with Keras code (unknown keys keep their code)."""
    out = []
    for r in remedies:
        if r.key == "clip_grad_norm":
            code = _clip_code(r.code)
        elif r.key in _CODE:
            code = _CODE[r.key].format(layer=layer or "LAYER")
        else:
            code = r.code
        out.append(dataclasses.replace(r, code=code))
    return out
