"""gradvitals: vital signs for neural-network training.

``import gradvitals`` imports no framework. :func:`watch` loads the PyTorch adapter on
first use; ``gradvitals.keras`` and friends load theirs when imported.

>>> import gradvitals
>>> gradvitals.FailureMode.DYING_RELU.value
'dying_relu'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from gradvitals.detectors import Thresholds as Thresholds
from gradvitals.findings import Cause as Cause
from gradvitals.findings import FailureMode as FailureMode
from gradvitals.findings import Finding as Finding
from gradvitals.findings import Remedy as Remedy
from gradvitals.remedies import remedies_for as remedies_for
from gradvitals.remedies._policy import RepairPolicy as RepairPolicy
from gradvitals.session import DetectorSuite as DetectorSuite
from gradvitals.session import Session as Session

if TYPE_CHECKING:
    from gradvitals.torch import Monitor

from gradvitals._version import __version__ as __version__

__all__ = [
    "Cause",
    "DetectorSuite",
    "FailureMode",
    "Finding",
    "Remedy",
    "RepairPolicy",
    "Session",
    "Thresholds",
    "__version__",
    "collapse",
    "lint",
    "remedies_for",
    "watch",
]


def watch(
    model: Any,
    optimizer: Any = None,
    *,
    every: int = 20,
    samples: int = 2,
    warmup: bool = True,
    log_dir: str | None = None,
    thresholds: Thresholds | dict[str, Any] | None = None,
    scaler: Any = None,
    lint: bool = True,
    console: bool = True,
    history_limit: int | None = 10_000,
    repair: bool = False,
    policy: RepairPolicy | dict[str, Any] | None = None,
    distributed: bool | None = None,
    sinks: Sequence[Any] = (),
    on_finding: Callable[[Finding], Any] | None = None,
    on_window: Callable[[Any, list[Finding]], Any] | None = None,
    stop_on: Iterable[Any] | str | None = None,
) -> Monitor:
    """Attach a training monitor to a PyTorch model; see :func:`gradvitals.torch.watch`.

    Importing :mod:`gradvitals` does not import torch: this loads the PyTorch adapter
    on first use.
    """
    from gradvitals.torch import watch as _watch

    return _watch(
        model,
        optimizer,
        every=every,
        samples=samples,
        warmup=warmup,
        log_dir=log_dir,
        thresholds=thresholds,
        scaler=scaler,
        lint=lint,
        console=console,
        history_limit=history_limit,
        repair=repair,
        policy=policy,
        distributed=distributed,
        sinks=sinks,
        on_finding=on_finding,
        on_window=on_window,
        stop_on=stop_on,
    )


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
