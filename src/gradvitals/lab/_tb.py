"""Extra TensorBoard scalars the lab measures itself, next to the monitor's own log.

The monitor logs ``dead_fraction/*`` only where death is meaningful (ReLU, ReLU6). The
dying-relu experiment compares ReLU with its variants on one measure, the fraction of
units never positive in a window, so it writes ``lab/never_positive/<site>`` for every
activation into a second event file of the same run folder (TensorBoard merges them).
Uses the ``tensorboard`` package's protos and record writer only, like
:class:`gradvitals.report.TensorBoardSink` (never TensorFlow).

>>> import tempfile, pathlib
>>> d = tempfile.mkdtemp()
>>> write_scalars(d, {"lab/x": [(0, 0.5), (10, 0.25)]}).name.startswith("events.out.tfevents.")
True
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from gradvitals.report._deps import require

__all__ = ["write_scalars"]


def write_scalars(
    log_dir: str | os.PathLike[str], series: dict[str, list[tuple[int, float]]]
) -> Path:
    """Write ``tag -> [(step, value), ...]`` to a new event file in ``log_dir``."""
    req = {"feature": "TensorBoard logs", "extra": "tensorboard"}
    event_pb2 = require("tensorboard.compat.proto.event_pb2", **req)
    summary_pb2 = require("tensorboard.compat.proto.summary_pb2", **req)
    record_writer = require("tensorboard.summary.writer.record_writer", **req)
    path = Path(log_dir)
    path.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.lab"
    out = path / name
    by_step: dict[int, list[tuple[str, float]]] = {}
    for tag, points in series.items():
        for step, value in points:
            by_step.setdefault(int(step), []).append((tag, float(value)))
    with open(out, "wb") as f:
        writer = record_writer.RecordWriter(f)
        now = time.time()
        writer.write(
            event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString()
        )
        for step in sorted(by_step):
            values = [summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in by_step[step]]
            event = event_pb2.Event(
                wall_time=now, step=step, summary=summary_pb2.Summary(value=values)
            )
            writer.write(event.SerializeToString())
    return out
