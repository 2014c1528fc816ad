"""A dependency-free progress bar on stderr, shown only for work longer than ~2 s.

>>> import io
>>> out = io.StringIO()
>>> for _ in progress(range(3), desc="demo", file=out, min_seconds=0.0):
...     pass
>>> "demo" in out.getvalue() and "3/3" in out.getvalue()
True
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

__all__ = ["Progress", "progress"]


class Progress:
    """A manual progress bar: ``update(n)``, ``set_description(s)``, ``close()``."""

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        file: IO[str] | None = None,
        min_seconds: float = 2.0,
        width: int = 24,
        disable: bool = False,
    ) -> None:
        self.total = total
        self.desc = desc
        self.file = file if file is not None else sys.stderr
        self.min_seconds = min_seconds
        self.width = width
        self.disable = disable
        self.n = 0
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._shown = False

    def set_description(self, desc: str) -> None:
        self.desc = desc
        self._render()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._render()

    def _render(self, final: bool = False) -> None:
        if self.disable:
            return
        now = time.perf_counter()
        elapsed = now - self.t0
        if elapsed < self.min_seconds and not (final and self._shown):
            return
        if not final and now - self._last < 0.1:
            return
        self._last = now
        if self.total:
            frac = min(1.0, self.n / self.total)
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            line = f"\r{self.desc} [{bar}] {self.n}/{self.total} {elapsed:5.1f}s"
        else:
            line = f"\r{self.desc} {self.n} {elapsed:5.1f}s"
        self.file.write(line)
        self.file.flush()
        self._shown = True

    def close(self) -> None:
        self._render(final=True)
        if self._shown and not self.disable:
            self.file.write("\n")
            self.file.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    items: Iterable[T],
    desc: str = "",
    *,
    total: int | None = None,
    file: IO[str] | None = None,
    min_seconds: float = 2.0,
    disable: bool = False,
) -> Iterator[T]:
    """Iterate over ``items`` while drawing a bar (only once ``min_seconds`` have passed)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = Progress(total, desc, file=file, min_seconds=min_seconds, disable=disable)
    try:
        for x in items:
            yield x
            bar.update()
    finally:
        bar.close()
