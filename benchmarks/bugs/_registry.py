"""The registry of corpus cases: one list, filled when the case modules are imported.

Case modules call :func:`register` at import time. :func:`load_all` imports every module
under ``torch_cases/`` and ``keras_cases/`` (Keras modules import keras only when a case
runs). :func:`get` is strict: an unknown id raises with the closest valid ids.

>>> cases = load_all()
>>> len(cases) >= 34 and len({c.id for c in cases}) == len(cases)
True
>>> get("torch_nan_inputs").framework
'torch'
>>> get("torch_nan_input")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
KeyError: "no bug case 'torch_nan_input'. Did you mean: torch_nan_inputs, ..."
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from bugs._case import BugCase

__all__ = ["CASES", "get", "load_all", "register", "select"]

#: Every registered case, in registration order.
CASES: list[BugCase] = []

_PACKAGES = ("bugs.torch_cases", "bugs.keras_cases")


def register(case: BugCase) -> BugCase:
    """Add ``case`` to :data:`CASES`; ids must be unique."""
    if any(c.id == case.id for c in CASES):
        raise ValueError(f"bug case id {case.id!r} is registered twice; ids must be unique")
    CASES.append(case)
    return case


def load_all() -> list[BugCase]:
    """Import every case module (idempotent) and return :data:`CASES`."""
    for pkg_name in _PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")
    return CASES


def get(case_id: str) -> BugCase:
    """The case called ``case_id``; a ``KeyError`` that lists close ids otherwise."""
    load_all()
    for c in CASES:
        if c.id == case_id:
            return c
    ids = [c.id for c in CASES]
    close = difflib.get_close_matches(case_id, ids, n=3, cutoff=0.5)
    hint = f"Did you mean: {', '.join(close)}? " if close else ""
    raise KeyError(
        f"no bug case {case_id!r}. {hint}Valid ids ({len(ids)}): {', '.join(ids)}. "
        "List them with: python benchmarks/bugs/run.py --list"
    )


def select(ids: list[str] | None = None, framework: str | None = None) -> list[BugCase]:
    """Cases by id (in the order given; unknown ids raise) and/or by framework."""
    load_all()
    chosen = [get(i) for i in ids] if ids else list(CASES)
    if framework is not None:
        if framework not in ("torch", "keras"):
            raise KeyError(f"framework must be 'torch' or 'keras', got {framework!r}")
        chosen = [c for c in chosen if c.framework == framework]
    return chosen
