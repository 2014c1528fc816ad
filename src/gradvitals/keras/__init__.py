"""The Keras 3 adapter: ``VitalsCallback`` for ``model.fit`` (TensorFlow backend).

Importing this package imports Keras and TensorFlow; ``import gradvitals`` does not.

>>> from gradvitals.keras import VitalsCallback
>>> VitalsCallback(probe=None)
Traceback (most recent call last):
...
gradvitals.errors.UsageError: VitalsCallback needs probe data to measure on: pass a few ...
"""

from gradvitals.keras._compat import require_keras as _require_keras

_require_keras()

from gradvitals.keras._callback import VitalsCallback as VitalsCallback  # noqa: E402
from gradvitals.keras._lint import lint_keras as lint_keras  # noqa: E402

__all__ = ["VitalsCallback", "lint_keras"]
