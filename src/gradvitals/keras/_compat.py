"""Import Keras 3 and check its backend, with errors that say what to do.

``import gradvitals.keras`` goes through :func:`require_keras`: a missing Keras, a
Keras 2 (``tf.keras``), or a backend other than TensorFlow raises ``ImportError``
with the fix.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INSTALL_HINT", "require_keras"]

INSTALL_HINT = 'pip install "gradvitals[keras]" tensorflow'


def require_keras() -> tuple[Any, Any]:
    """``(keras, tensorflow)`` for the Keras 3 TensorFlow backend, or ``ImportError``."""
    try:
        import keras
    except ImportError as e:
        raise ImportError(
            "gradvitals.keras needs Keras 3 with TensorFlow, which is not installed. "
            f"Install it with: {INSTALL_HINT}"
        ) from e
    version = str(getattr(keras, "__version__", "0"))
    if int(version.split(".")[0] or 0) < 3:
        raise ImportError(
            f"gradvitals.keras needs Keras 3 (found keras {version}, the Keras 2 API). "
            f"Upgrade with: {INSTALL_HINT}"
        )
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            f"gradvitals.keras supports the TensorFlow backend only; this Keras runs on "
            f"{backend!r}. Set KERAS_BACKEND=tensorflow before importing keras (e.g. "
            "`export KERAS_BACKEND=tensorflow`). For PyTorch models use gradvitals.watch()."
        )
    try:
        import tensorflow as tf
    except ImportError as e:  # pragma: no cover - the backend check imports it already
        raise ImportError(
            f"gradvitals.keras needs TensorFlow. Install it with: {INSTALL_HINT}"
        ) from e
    return keras, tf
