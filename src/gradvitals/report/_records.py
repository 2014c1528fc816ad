"""Read the records of an event file, streaming, checking framing and checksums.

TensorBoard's ``EventAccumulator`` stops silently at a truncated or corrupt record,
so a half-written log would give a report with data quietly missing. This module
walks the TFRecord framing itself: each record is an 8-byte little-endian length
:math:`n`, the masked CRC-32C of those 8 bytes, :math:`n` bytes of data, and the
masked CRC-32C of the data, where ``mask(c) = ((c >> 15 | c << 17) + 0xa282ead8) mod 2**32``.
Any damage is a :class:`~gradvitals.errors.GradvitalsError` naming the file and the byte.

The file is read in 8 MiB chunks (memory stays flat on a multi-GB log), and the
checksums use a C CRC-32C when one is installed (``google-crc32c`` or ``crc32c``,
both optional: see :func:`crc_implementation`); tensorboard's pure-Python one is the
fallback and runs at about 4 MB/s.

>>> import os, tempfile
>>> def frame(data):
...     n = len(data).to_bytes(8, "little")
...     crc = lambda b: masked_crc32c(b).to_bytes(4, "little")
...     return n + crc(n) + data + crc(data)
>>> path = os.path.join(tempfile.mkdtemp(), "events.out.tfevents.1")
>>> _ = open(path, "wb").write(frame(b"abc") + frame(b"defg"))
>>> check_event_file(path)
2
>>> _ = open(path, "wb").write(frame(b"abc") + frame(b"defg")[:-3])
>>> check_event_file(path)
Traceback (most recent call last):
...
gradvitals.errors.GradvitalsError: event file .../events.out.tfevents.1 is truncated at byte 19 (record 2 is cut off after 1 complete record); ...
>>> notes = []
>>> list(iter_records(path, allow_truncated=True, on_truncated=notes.append))
[b'abc']
>>> print(notes[0])
event file .../events.out.tfevents.1 ends in a partial record at byte 19 (being written?): read its first 1 record
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from gradvitals.errors import GradvitalsError
from gradvitals.report._deps import require

__all__ = [
    "check_event_file",
    "crc_implementation",
    "iter_records",
    "masked_crc32c",
    "open_readable",
]

_CHUNK = 8 << 20  # bytes read at a time
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length
_FOOTER = struct.Struct("<I")  # masked CRC of the data
_MASK_DELTA = 0xA282EAD8
_TRUNC_FIX = (
    "the writer was killed mid-write or is still writing; wait for the run to end, "
    "or pass --allow-truncated to read up to the last complete record"
)


@functools.cache
def _crc32c() -> tuple[Callable[[bytes], int], str]:
    """The fastest CRC-32C available, and its name."""
    try:
        import google_crc32c

        if google_crc32c.implementation == "c":
            return google_crc32c.value, "google-crc32c (C)"
    except ImportError:
        pass
    try:
        import crc32c

        return crc32c.crc32c, "crc32c (C)"
    except ImportError:
        pass
    stub = require(
        "tensorboard.compat.tensorflow_stub.pywrap_tensorflow", feature="reports", extra="report"
    )
    return stub.crc32c, "pure Python (pip install google-crc32c for ~100x faster reads)"


def crc_implementation() -> str:
    """Which CRC-32C checks the records: ``"google-crc32c (C)"``, ``"crc32c (C)"`` or
    pure Python (tensorboard's, about 4 MB/s)."""
    return _crc32c()[1]


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C that TFRecord framing stores: rotate right by 15, add a constant.

    >>> hex(masked_crc32c(b""))  # CRC-32C of nothing is 0: the mask alone
    '0xa282ead8'
    """
    x = _crc32c()[0](data) & 0xFFFFFFFF
    return ((((x >> 15) | (x << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def open_readable(path: Path) -> IO[bytes]:
    """``open(path, "rb")``, with an OS error turned into a one-line ``GradvitalsError``."""
    try:
        return open(path, "rb")
    except OSError as e:
        raise _os_error(path, e) from e


def _os_error(path: Path, e: OSError) -> GradvitalsError:
    if isinstance(e, PermissionError):
        return GradvitalsError(
            f"cannot read {path}: permission denied; give yourself read access "
            f"(chmod u+r {path}) or run as the user that wrote it"
        )
    if isinstance(e, IsADirectoryError):
        return GradvitalsError(f"{path} is a directory, not an event file; pass its parent")
    return GradvitalsError(f"cannot read {path}: {e.strerror or e}")


def check_event_file(
    path: str | os.PathLike[str], *, on_progress: Callable[[int], None] | None = None
) -> int:
    """Validate the record framing and checksums of an event file.

    Returns:
        The number of records.

    Raises:
        GradvitalsError: the file is unreadable, empty, truncated, or fails a checksum.
    """
    return sum(1 for _ in iter_records(path, on_progress=on_progress))


def iter_records(
    path: str | os.PathLike[str],
    *,
    verify: bool = True,
    allow_truncated: bool = False,
    on_progress: Callable[[int], None] | None = None,
    on_truncated: Callable[[str], None] | None = None,
) -> Iterator[bytes]:
    """The records (serialized ``Event`` protos) of an event file, read in chunks.

    Args:
        path: the event file.
        verify: check both CRC-32Cs of every record (default True). Off, a damaged
            record is caught only if its length runs past the end of the file or its
            bytes do not parse.
        allow_truncated: stop quietly at a final partial record (a run still writing)
            instead of raising; ``on_truncated`` gets a one-line note. An empty file
            then holds no records.
        on_progress: called with the number of bytes read since the last call.
        on_truncated: called with the note when ``allow_truncated`` cut a file short.

    Raises:
        GradvitalsError: the file is unreadable, empty, truncated, or fails a checksum
            (raised when the iteration reaches the damage).
    """
    p = Path(path)
    crc = masked_crc32c if verify else None
    with open_readable(p) as fh:
        buf = b""
        base = pos = n = reported = 0  # base: file offset of buf[0]; pos: index in buf
        eof = False
        while True:
            need = 12
            if len(buf) - pos >= 12:
                length, header_crc = _HEADER.unpack_from(buf, pos)
                if crc is not None and crc(buf[pos : pos + 8]) != header_crc:
                    raise GradvitalsError(
                        f"event file {p} is corrupt: record {n + 1} at byte {base + pos} fails "
                        "its length checksum (not a TensorBoard event file, or damaged); "
                        "delete or replace it"
                    )
                need = 16 + length
                end = pos + need
                if end <= len(buf):
                    body = buf[pos + 12 : end - 4]
                    if crc is not None and crc(body) != _FOOTER.unpack_from(buf, end - 4)[0]:
                        raise GradvitalsError(
                            f"event file {p} is corrupt: record {n + 1} at byte {base + pos} "
                            "fails its data checksum; the file was damaged after writing; "
                            "delete or replace it"
                        )
                    yield body
                    pos = end
                    n += 1
                    if on_progress is not None and base + pos - reported >= (1 << 20):
                        on_progress(base + pos - reported)
                        reported = base + pos
                    continue
            # not enough bytes in the buffer for the next header or record
            if not eof:
                rest = buf[pos:]
                want = max(_CHUNK, need - len(rest))
                if need > _CHUNK and base + pos + need > _file_size(fh):
                    chunk = b""  # a length past the end of the file: truncated or garbage
                else:
                    chunk = _read(fh, p, want)
                eof = len(chunk) < want
                buf, base, pos = rest + chunk, base + pos, 0
                if chunk:
                    continue
            if pos == len(buf):  # a clean end
                if base + pos == 0 and not allow_truncated:
                    raise GradvitalsError(
                        f"event file {p} is empty (0 bytes): its writer never wrote to it; "
                        "delete it and retry"
                    )
                if base + pos == 0 and on_truncated is not None:
                    on_truncated(f"event file {p} is empty (being created?): read no records")
                break
            if not allow_truncated:
                raise _truncated(p, base + pos, n)
            if on_truncated is not None:
                records = "record" if n == 1 else "records"
                on_truncated(
                    f"event file {p} ends in a partial record at byte {base + pos} "
                    f"(being written?): read its first {n} {records}"
                )
            break
    if on_progress is not None and base + pos > reported:
        on_progress(base + pos - reported)


def _read(fh: IO[bytes], p: Path, n: int) -> bytes:
    try:
        return fh.read(n)
    except OSError as e:
        raise _os_error(p, e) from e


def _file_size(fh: IO[bytes]) -> int:
    return os.fstat(fh.fileno()).st_size


def _truncated(p: Path, pos: int, n: int) -> GradvitalsError:
    records = "record" if n == 1 else "records"
    return GradvitalsError(
        f"event file {p} is truncated at byte {pos} (record {n + 1} is cut off after "
        f"{n} complete {records}); {_TRUNC_FIX}"
    )
