"""``gradvitals.lab.run(name, **options)``: size, options, output folder, timing, summary.

Every experiment module provides ``CLAIM`` (str), ``Config`` (a frozen dataclass of
sizes and settings), ``SIZES`` (``{"smoke", "default", "full"} -> Config``) and
``run(cfg, ctx) -> LabResult``. Options override ``Config`` fields by name.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class C:
...     steps: int = 10
...     lrs: tuple[float, ...] = (0.1, 1.0)
...     bn: bool = False
>>> apply_options(C(), {"steps": "20", "lrs": "0.01,0.1", "bn": "yes"})
C(steps=20, lrs=(0.01, 0.1), bn=True)
>>> apply_options(C(), {"step": 3})
Traceback (most recent call last):
...
gradvitals.errors.UsageError: unknown option 'step' for this experiment; valid options: bn, lrs, steps
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradvitals.errors import UsageError
from gradvitals.lab._context import LabContext
from gradvitals.lab._registry import get
from gradvitals.lab._result import LabResult

__all__ = ["apply_options", "default_config", "run"]

SIZES = ("smoke", "default", "full")


def _coerce(text: str, like: Any, key: str) -> Any:
    try:
        if isinstance(like, bool):
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, tuple):
            elem = like[0] if like else ""
            return tuple(_coerce(t, elem, key) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(
            f"option {key}={text!r}: expected {type(like).__name__} like {like!r}"
        ) from None
    return text.strip()


def apply_options(cfg: Any, options: dict[str, Any]) -> Any:
    """``cfg`` with fields replaced by ``options``; strings are parsed to the field's type
    (tuples as comma-separated lists). Unknown names raise with the valid ones."""
    valid = {f.name for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    for key, value in options.items():
        k = key.replace("-", "_")
        if k not in valid:
            raise UsageError(
                f"unknown option {key!r} for this experiment; valid options: {', '.join(sorted(valid))}"
            )
        like = getattr(cfg, k)
        if isinstance(value, str) and not isinstance(like, str):
            value = _coerce(value, like, k)
        elif isinstance(like, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[k] = value
    return dataclasses.replace(cfg, **changes)


def default_config(name: str, size: str = "default") -> Any:
    """The configuration ``name`` runs with at ``size`` (``smoke``, ``default``, ``full``)."""
    if size not in SIZES:
        raise UsageError(f"unknown size {size!r}; valid sizes: {', '.join(SIZES)}")
    module = importlib.import_module(get(name).module)
    return module.SIZES[size]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded: the lab's nets are tiny, and intra-op threads only
    spin against each other (3-4x slower on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(
    name: str,
    *,
    full: bool = False,
    smoke: bool = False,
    out: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> LabResult:
    """Run one lab experiment and write its summary, figures and TensorBoard logs.

    Args:
        name: an experiment from :func:`gradvitals.lab.names` (``"vanishing"``...).
        full: the larger, more faithful size (minutes).
        smoke: the tiny size the tests use (seconds).
        out: output folder (default ``./gradvitals-lab/<name>``).
        seed: base seed; the same seed gives the same numbers.
        progress: draw a progress bar on stderr for work longer than 2 s.
        **options: overrides of the experiment's ``Config`` fields, by name
            (see :func:`default_config`), e.g. ``lrs=(0.1, 1.0)`` or ``steps=300``.

    Returns:
        The :class:`LabResult`; ``summary.md`` is written into ``out``.

    Raises:
        UsageError: an unknown experiment (listing the valid names) or option.
    """
    exp = get(name)
    if full and smoke:
        raise UsageError("choose one size: full=True or smoke=True, not both")
    size = "full" if full else "smoke" if smoke else "default"
    module = importlib.import_module(exp.module)
    cfg = apply_options(module.SIZES[size], options)
    out_dir = Path(out) if out is not None else Path("gradvitals-lab") / exp.name
    ctx = LabContext(exp.name, out_dir, seed=int(seed), size=size, show_progress=progress)
    t0, c0 = time.perf_counter(), time.process_time()
    with _one_thread():
        result: LabResult = module.run(cfg, ctx)
    result.seconds = time.perf_counter() - t0
    result.cpu_seconds = time.process_time() - c0
    result.size = size
    result.seed = int(seed)
    result.config = dataclasses.asdict(cfg)
    result.out_dir = out_dir
    result.write(out_dir / "summary.md")
    return result
