"""Optional dependencies of the report package, imported on first use.

A missing package is a :class:`~gradvitals.errors.GradvitalsError` (the CLI prints
one line) that is also an ``ImportError`` and names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from gradvitals.errors import GradvitalsError

__all__ = ["MissingDependency", "require"]


class MissingDependency(GradvitalsError, ImportError):
    """An optional package that this feature needs is not installed."""


def require(module: str, *, feature: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming the pip extra.

    >>> require("json", feature="reports", extra="report").__name__
    'json'
    >>> require("no_such_module_xyz", feature="reports", extra="report")
    Traceback (most recent call last):
    ...
    gradvitals.report._deps.MissingDependency: reports need no_such_module_xyz, which is not installed; pip install 'gradvitals[report]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise MissingDependency(
            f"{feature} need {top}, which is not installed; pip install 'gradvitals[{extra}]'"
        ) from e
