"""Read the records of an event file, checking their TFRecord framing and checksums.

TensorBoard's ``EventAccumulator`` stops silently at a truncated or corrupt record,
so a half-written log would give a report with data quietly missing. This module
walks the framing itself: each record is an 8-byte little-endian length, the masked
CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the data. Any damage
is a :class:`~gradvitals.errors.GradvitalsError` naming the file and the byte.

>>> import struct, tempfile, os
>>> from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
>>> def frame(data):
...     n = struct.pack("<Q", len(data))
...     return n + struct.pack("<I", masked_crc32c(n)) + data + struct.pack("<I", masked_crc32c(data))
>>> path = os.path.join(tempfile.mkdtemp(), "events.out.tfevents.1")
>>> _ = open(path, "wb").write(frame(b"abc") + frame(b"defg"))
>>> check_event_file(path)
2
>>> _ = open(path, "wb").write(frame(b"abc") + frame(b"defg")[:-3])
>>> check_event_file(path)
Traceback (most recent call last):
...
gradvitals.errors.GradvitalsError: event file .../events.out.tfevents.1 is truncated at byte 19 (record 2 is cut off after 1 complete record); ...
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from gradvitals.errors import GradvitalsError
from gradvitals.report._deps import require

__all__ = ["check_event_file", "iter_records"]

_TRUNC_FIX = (
    "the writer was killed mid-write or is still writing; wait for the run to end, "
    "or re-run the report on a copy cut at that byte"
)


def check_event_file(
    path: str | os.PathLike[str], *, on_progress: Callable[[int], None] | None = None
) -> int:
    """Validate the record framing and checksums of an event file.

    Returns:
        The number of records.

    Raises:
        GradvitalsError: the file is empty, truncated, or fails a checksum.
    """
    return sum(1 for _ in iter_records(path, on_progress=on_progress))


def iter_records(
    path: str | os.PathLike[str], *, on_progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """The records (serialized ``Event`` protos) of an event file, each one checked.

    Args:
        path: the event file.
        on_progress: called with the number of bytes read since the last call.

    Raises:
        GradvitalsError: the file is empty, truncated, or fails a checksum (raised
            when the iteration reaches the damage).
    """
    crc = require(
        "tensorboard.compat.tensorflow_stub.pywrap_tensorflow", feature="reports", extra="report"
    ).masked_crc32c
    p = Path(path)
    data = p.read_bytes()
    size = len(data)
    if size == 0:
        raise GradvitalsError(
            f"event file {p} is empty (0 bytes): its writer never wrote to it; delete it and retry"
        )
    view = memoryview(data)
    pos = n = reported = 0
    while pos < size:
        if size - pos < 12:
            raise _truncated(p, pos, n)
        header = bytes(view[pos : pos + 8])
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", view[pos + 8 : pos + 12])
        if crc(header) != header_crc:
            raise GradvitalsError(
                f"event file {p} is corrupt: record {n + 1} at byte {pos} fails its length "
                "checksum (not a TensorBoard event file, or damaged); delete or replace it"
            )
        end = pos + 12 + length + 4
        if end > size:
            raise _truncated(p, pos, n)
        body = bytes(view[pos + 12 : pos + 12 + length])
        (body_crc,) = struct.unpack("<I", view[end - 4 : end])
        if crc(body) != body_crc:
            raise GradvitalsError(
                f"event file {p} is corrupt: record {n + 1} at byte {pos} fails its data "
                "checksum; the file was damaged after writing; delete or replace it"
            )
        yield body
        pos = end
        n += 1
        if on_progress is not None and pos - reported > (1 << 20):
            on_progress(pos - reported)
            reported = pos
    if on_progress is not None:
        on_progress(pos - reported)


def _truncated(p: Path, pos: int, n: int) -> GradvitalsError:
    records = "record" if n == 1 else "records"
    return GradvitalsError(
        f"event file {p} is truncated at byte {pos} (record {n + 1} is cut off after "
        f"{n} complete {records}); {_TRUNC_FIX}"
    )
