"""A dependency-free progress display on stderr, shown only for work longer than ~2 s.

On a terminal it is a bar redrawn in place (``\\r``). Anywhere else (a CI log, a
file, a pipe) it writes plain lines, one per finished item: no ``\\r``, no frames.
An *item* is an element of :func:`progress`, or the stretch of work under one
description of a :class:`Progress` (it ends at the next :meth:`~Progress.set_description`
or at :meth:`~Progress.close`). An item that runs long also gets a line every
``heartbeat`` seconds (30 by default), so a log never looks stuck.

>>> import io
>>> out = io.StringIO()  # not a terminal: one line per item
>>> for _ in progress(range(3), desc="demo", file=out, min_seconds=0.0):
...     pass
>>> print(out.getvalue(), end="")
demo: 1/3 (...s)
demo: 2/3 (...s)
demo: 3/3 (...s)
demo: done, 3/3 in ...s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

__all__ = ["Progress", "progress"]


def _isatty(file: IO[str]) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """A manual progress display: ``update(n)``, ``set_description(s)``, ``close()``.

    Args:
        total: units of work, or None if unknown.
        desc: what is being done.
        file: where to write (default ``sys.stderr``).
        min_seconds: nothing is written before this much time has passed.
        width: bar width in characters (terminal only).
        disable: write nothing.
        tty: draw a bar redrawn in place (True) or write lines (False); default: a
            bar when ``file`` is a terminal.
        heartbeat: off a terminal, the longest silence within an item, in seconds.
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        file: IO[str] | None = None,
        min_seconds: float = 2.0,
        width: int = 24,
        disable: bool = False,
        tty: bool | None = None,
        heartbeat: float = 30.0,
    ) -> None:
        self.total = total
        self.heartbeat = heartbeat
        self.desc = desc
        self.file = file if file is not None else sys.stderr
        self.min_seconds = min_seconds
        self.width = width
        self.disable = disable
        self.tty = _isatty(self.file) if tty is None else tty
        self.n = 0
        self.t0 = time.perf_counter()
        self._last = self.t0  # the last line or frame written
        self._shown = False
        self._closed = False

    # -- public ----------------------------------------------------------------------
    def set_description(self, desc: str) -> None:
        """Start a new item; off a terminal, write a line for the one just finished."""
        if desc == self.desc:
            return
        if not self.tty:
            self.item_done()
        self.desc = desc
        self._render()

    def update(self, n: int = 1) -> None:
        """Add ``n`` units of work done."""
        self.n += n
        if self.tty:
            self._render()
        elif (
            not self.disable and time.perf_counter() - self._last >= self.heartbeat and self._due()
        ):
            self._line(f"{self.desc}: {self._count()} ({self._elapsed():.1f}s)")

    def item_done(self) -> None:
        """Off a terminal, write one line for the item just finished (after ``min_seconds``)."""
        if self.tty or self.disable or not self._due():
            return
        self._line(f"{self.desc}: {self._count()} ({self._elapsed():.1f}s)")

    def abort(self) -> None:
        """Stop without a final line; a half-drawn bar is wiped, so an error printed
        next is the only line left."""
        if self.tty and self._shown and not self.disable:
            self._write("\r\x1b[K")
        self.disable = True

    def close(self) -> None:
        """Write the final state (only if something was shown or it took ``min_seconds``)."""
        if self._closed:
            return
        self._closed = True
        if self.disable:
            return
        if self.tty:
            self._render(final=True)
            if self._shown:
                self._write("\n")
        elif self._shown or self._due():
            self._write(f"{self.desc}: done, {self._count()} in {self._elapsed():.1f}s\n")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- drawing ---------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _due(self) -> bool:
        return self._elapsed() >= self.min_seconds

    def _count(self) -> str:
        return f"{self.n}/{self.total}" if self.total else str(self.n)

    def _line(self, text: str) -> None:
        self._last = time.perf_counter()
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()
        self._shown = True

    def _render(self, final: bool = False) -> None:
        """Redraw the terminal bar (at most every 0.1 s); nothing off a terminal."""
        if self.disable or not self.tty:
            return
        now = time.perf_counter()
        if now - self.t0 < self.min_seconds and not (final and self._shown):
            return
        if not final and self._shown and now - self._last < 0.1:
            return
        self._last = now
        elapsed = now - self.t0
        if self.total:
            frac = min(1.0, self.n / self.total)
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self._write(f"\r{self.desc} [{bar}] {self.n}/{self.total} {elapsed:5.1f}s")
        else:
            self._write(f"\r{self.desc} {self.n} {elapsed:5.1f}s")


def progress(
    items: Iterable[T],
    desc: str = "",
    *,
    total: int | None = None,
    file: IO[str] | None = None,
    min_seconds: float = 2.0,
    disable: bool = False,
    tty: bool | None = None,
) -> Iterator[T]:
    """Iterate over ``items`` while showing progress (only once ``min_seconds`` have
    passed): a bar on a terminal, else one line per item."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = Progress(total, desc, file=file, min_seconds=min_seconds, disable=disable, tty=tty)
    try:
        for x in items:
            yield x
            bar.update()
            bar.item_done()
    finally:
        bar.close()
