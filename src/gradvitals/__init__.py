"""gradvitals: vital signs for neural-network training.

``import gradvitals`` imports no framework. :func:`watch` loads the PyTorch adapter on
first use; ``gradvitals.keras`` and friends load theirs when imported.

>>> import gradvitals
>>> gradvitals.FailureMode.DYING_RELU.value
'dying_relu'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradvitals.detectors import DetectorSuite as DetectorSuite
from gradvitals.detectors import Thresholds as Thresholds
from gradvitals.findings import Cause as Cause
from gradvitals.findings import FailureMode as FailureMode
from gradvitals.findings import Finding as Finding
from gradvitals.findings import Remedy as Remedy
from gradvitals.remedies import remedies_for as remedies_for
from gradvitals.remedies._policy import RepairPolicy as RepairPolicy

if TYPE_CHECKING:
    from gradvitals.torch import Monitor

__version__ = "0.1.0"

__all__ = [
    "Cause",
    "DetectorSuite",
    "FailureMode",
    "Finding",
    "Remedy",
    "RepairPolicy",
    "Thresholds",
    "__version__",
    "collapse",
    "lint",
    "remedies_for",
    "watch",
]


def watch(model: Any, optimizer: Any = None, **kwargs: Any) -> Monitor:
    """Attach a training monitor to a PyTorch model. See :func:`gradvitals.torch.watch`."""
    from gradvitals.torch import watch as _watch

    return _watch(model, optimizer, **kwargs)


def collapse(model: Any) -> Any:
    """The single affine layer equivalent to a stack of affine layers.

    See :func:`gradvitals.torch.collapse`.
    """
    from gradvitals.torch._collapse import collapse as _collapse

    return _collapse(model)


def lint(model: Any, example_input: Any = None, **kwargs: Any) -> list[Finding]:
    """Pre-flight checks of a model. See :func:`gradvitals.torch.lint`."""
    from gradvitals.torch._lint import lint as _lint

    return _lint(model, example_input, **kwargs)
