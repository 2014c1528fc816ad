"""Write framed records to a file on a background thread, so the caller never waits on I/O.

A :class:`BackgroundWriter` owns one open binary file and a daemon thread. The caller
:meth:`~BackgroundWriter.submit`\\ s *jobs* (callables that build and frame records with
:meth:`~BackgroundWriter.write_record`) and returns at once; the thread runs the jobs in
order, writes and flushes the file after each one. Promises:

- **Bounded, never lossy.** At most ``max_pending`` jobs wait (default
  :data:`MAX_PENDING`); one more ``submit`` blocks until the thread catches up. Nothing
  is dropped while the file is healthy.
- **Nothing lost at the end.** :meth:`~BackgroundWriter.close` runs every waiting job,
  joins the thread and closes the file. The owner registers ``close`` with
  :func:`weakref.finalize`, which also runs at interpreter exit (after non-daemon threads
  end, while this daemon thread is still alive), so an unclosed writer still drains.
- **Errors never reach the caller as exceptions.** The first error on the thread (disk
  full, permission denied, a job that raises) stops the writing; it is shown **once**, as
  a ``RuntimeWarning`` on the caller's thread at its next ``submit``, ``flush`` or
  ``close``. Later jobs are discarded (the file would be corrupt after a partial write).

Records use TFRecord framing (see :mod:`gradvitals.report._records`): length, masked
CRC-32C of the length, data, masked CRC-32C of the data, with the C CRC-32C when one is
installed.

>>> import io
>>> class Keep(io.BytesIO):
...     def close(self): self.kept = self.getvalue(); super().close()
>>> fh = Keep()
>>> w = BackgroundWriter(fh, label="demo log")
>>> w.submit(lambda: w.write_record(b"abc"))
>>> w.submit(lambda: w.write_record(b"defg"))
>>> w.close()
>>> fh.kept == frame(b"abc") + frame(b"defg"), w.closed
(True, True)
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
from collections import deque
from collections.abc import Callable
from typing import IO

from gradvitals.errors import UsageError
from gradvitals.report._records import masked_crc32c

__all__ = ["MAX_PENDING", "BackgroundWriter", "frame"]

#: Jobs that may wait for the writer thread before ``submit`` blocks.
MAX_PENDING = 64

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def frame(data: bytes) -> bytes:
    """One TFRecord: 8-byte little-endian length, its masked CRC-32C, data, the data's.

    >>> frame(b"").hex()  # length 0, the masked CRC of 8 zero bytes, no data, mask(0)
    '000000000000000029039807d8ea82a2'
    """
    n = _LENGTH.pack(len(data))
    return n + _CRC.pack(masked_crc32c(n)) + data + _CRC.pack(masked_crc32c(data))


class BackgroundWriter:
    """Runs write jobs on a daemon thread, in order, against one binary file.

    Args:
        file: an open binary file; the writer owns it and closes it.
        label: what the file is, for messages (e.g. ``"TensorBoard log runs/x/events..."``).
        max_pending: jobs that may wait before :meth:`submit` blocks (default
            :data:`MAX_PENDING`, at least 1).

    The thread starts on the first :meth:`submit`; until then :meth:`write_record`
    may be called directly (a file header written by the constructor of the owner),
    and flushes at once.
    """

    def __init__(self, file: IO[bytes], *, label: str, max_pending: int = MAX_PENDING) -> None:
        if max_pending < 1:
            raise UsageError(f"max_pending must be at least 1, got {max_pending}")
        self.label = label
        self.max_pending = int(max_pending)
        self._file = file
        self._jobs: deque[Callable[[], object]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._running = 0  # jobs taken by the thread and not yet finished (0 or 1)
        self._error: BaseException | None = None
        self._warned = False
        self._pid = os.getpid()

    # -- the caller's side --------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (the file may still be draining)."""
        return self._stopping

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished yet."""
        with self._cond:
            return len(self._jobs) + self._running

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the writing, if any."""
        return self._error

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job`` for the writer thread and return; block while the queue is full.

        Raises:
            UsageError: the writer is closed.
        """
        self._warn_error()
        with self._cond:
            if self._stopping:
                raise UsageError(f"{self.label} is closed; create a new one to log more")
            if self._error is not None:
                return  # the file is broken: the warning said so, and writing stopped
            self._start()
            while len(self._jobs) >= self.max_pending and self._alive():
                self._cond.wait(0.5)
            self._jobs.append(job)
            self._cond.notify_all()

    def flush(self) -> None:
        """Wait until every submitted job is written and flushed to the OS."""
        self._warn_error()
        with self._cond:
            while (self._jobs or self._running) and self._alive():
                self._cond.wait(0.5)
        self._warn_error()

    def close(self) -> None:
        """Run every waiting job, stop the thread and close the file. Idempotent.

        Safe from any thread: called on the writer thread itself (a finalizer run by the
        garbage collector there), it only asks the thread to stop after the queue.
        """
        with self._cond:
            already = self._stopping
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if os.getpid() != self._pid:  # a forked child: the thread and the file are the parent's
            return
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if thread is None and not already:
            self._close_file()
        self._warn_error()

    # -- the writer thread's side -------------------------------------------------------
    def write_record(self, data: bytes) -> None:
        """Frame ``data`` and write it. Call from a job, or before the first submit (a
        header: then it is flushed at once)."""
        self._file.write(frame(data))
        if self._thread is None:
            self._file.flush()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"gradvitals-writer-{id(self):x}", daemon=True
            )
            self._thread.start()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs:
                    break
                job = self._jobs.popleft()
                self._running = 1
                self._cond.notify_all()
            try:
                if self._error is None:
                    job()
                    self._file.flush()
            except Exception as e:
                self._error = e
            finally:
                del job
                with self._cond:
                    self._running = 0
                    self._cond.notify_all()
        self._close_file()

    def _close_file(self) -> None:
        try:
            self._file.close()
        except Exception as e:
            if self._error is None:
                self._error = e

    def _warn_error(self) -> None:
        if self._error is None or self._warned:
            return
        self._warned = True
        e = self._error
        why = f"{type(e).__name__}: {e}" if not isinstance(e, OSError) else (e.strerror or str(e))
        warnings.warn(
            f"gradvitals stopped writing {self.label}: {why}. Training goes on; the file "
            "holds the records written before the error (free disk space or fix the "
            "permissions, then log to a new directory).",
            RuntimeWarning,
            stacklevel=3,
        )
