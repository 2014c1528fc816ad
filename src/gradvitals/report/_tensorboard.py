"""Write gradvitals' vital signs to a TensorBoard event file, with no ML framework.

:class:`TensorBoardSink` writes ``record.scalars()`` once per sync window, under the
``gradvitals/`` namespace (``gradvitals/loss/train``, ``gradvitals/grad_norm/<layer>``,
see :mod:`gradvitals.report._tags`), findings and repairs as text (markdown for people, JSON for :func:`~gradvitals.report.read_run`),
a ``gradvitals/run_info`` marker and a custom-scalars layout. It uses only the
``tensorboard`` package: protos from ``tensorboard.compat.proto``, framed as TFRecords
here (with the C CRC-32C when one is installed, see ``_records.py``). It does not use
``EventFileWriter``, whose ``tf.io.gfile`` would import TensorFlow when installed.

Writes happen off the training thread: ``write_window``, ``write_repair`` and
``write_final`` queue their (host-side) arguments and return in microseconds; building
the protos, serialising, the CRC-32C framing and the file write run on a daemon thread
(:class:`~gradvitals.report._writer.BackgroundWriter`), which flushes after every window.
At most 64 writes wait; one more blocks until the thread catches up (nothing is dropped).
:meth:`TensorBoardSink.close` (also run at interpreter exit for an unclosed sink) drains
the queue first. A write error (disk full, permissions) is shown once as a warning and
stops the log; training is never interrupted. :meth:`TensorBoardSink.flush` waits until
everything queued is on disk. A record must not be changed after it was written.

>>> import tempfile
>>> from gradvitals.stats import LayerStats, WindowRecord
>>> rec = WindowRecord(index=0, step_start=1, step_end=10,
...                    layers={"fc1": LayerStats("fc1", grad_norm=0.5, weight_norm=2.0, update_norm=0.002)})
>>> with TensorBoardSink(tempfile.mkdtemp(), run_info={"model": "mlp"}) as sink:
...     sink.write_window(rec, [])
>>> sorted(rec.scalars())  # written as gradvitals/grad_norm/fc1...
['grad_norm/fc1', 'grad_norm_total/model', 'update_ratio/fc1']
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import re
import socket
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Concatenate, ParamSpec

from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.report import _tags as T
from gradvitals.report._deps import require
from gradvitals.report._markdown import findings_markdown, repair_markdown, summary_markdown
from gradvitals.report._summary import to_json
from gradvitals.report._writer import MAX_PENDING, BackgroundWriter
from gradvitals.stats import SIGNALS, WindowRecord

__all__ = ["TensorBoardSink", "scalars_layout"]

_uid = itertools.count()


def _rx(section: str) -> str:
    """The regex of one statistic's tags: ``^gradvitals/<section>/``."""
    return "^" + re.escape(T.namespaced(section + "/"))


#: The custom-scalars dashboard: category -> [(chart title, [tag regexes])].
def _layout() -> tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...]:
    """One dashboard section per signal group (the loss first), one chart per signal."""
    groups: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for sig in sorted(SIGNALS, key=lambda s: s.scope != "model" or s.name != "loss"):
        groups.setdefault(sig.group, []).append((sig.caption, (_rx(sig.name),)))
    return tuple((title, tuple(charts)) for title, charts in groups.items())


#: The custom-scalars dashboard: category -> [(chart title, [tag regexes])].
LAYOUT: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = _layout()


def scalars_layout() -> Any:
    """The custom-scalars ``Layout`` proto: Loss, Dead units, Saturation, Gradient norms,
    Update ratios (charts select tags by regex)."""
    layout_pb2 = require(
        "tensorboard.plugins.custom_scalar.layout_pb2",
        feature="TensorBoard logs",
        extra="tensorboard",
    )
    categories = [
        layout_pb2.Category(
            title=title,
            chart=[
                layout_pb2.Chart(title=chart, multiline=layout_pb2.MultilineChartContent(tag=tags))
                for chart, tags in charts
            ],
        )
        for title, charts in LAYOUT
    ]
    return layout_pb2.Layout(category=categories)


_P = ParamSpec("_P")


def _open_event_file(path: Path) -> IO[bytes]:
    """Open a new event file for writing (the one place a sink opens a file)."""
    return open(path, "wb")


def _snapshot(x: Any) -> Any:
    """What the writer thread may read later: a record as is (host-side, not changed
    after it is written), anything else (findings, a repair dict) deep-copied."""
    return x if isinstance(x, WindowRecord) else copy.deepcopy(x)


def _queued(
    method: Callable[Concatenate[TensorBoardSink, _P], None],
) -> Callable[Concatenate[TensorBoardSink, _P], None]:
    """Run ``method`` on the sink's writer thread: the caller queues its arguments
    and returns (it blocks only while the queue is full)."""

    @functools.wraps(method)
    def enqueue(self: TensorBoardSink, *args: _P.args, **kwargs: _P.kwargs) -> None:
        if self.closed:
            raise UsageError(
                f"this TensorBoardSink ({self.path}) is closed; create a new one to log more"
            )
        a = [_snapshot(x) for x in args]
        kw = {k: _snapshot(v) for k, v in kwargs.items()}
        self._writer.submit(lambda: method(self, *a, **kw))

    return enqueue


def _coverage_markdown(c: dict[str, Any]) -> str:
    """One markdown line: what was measured, and what not."""
    text = (
        f"**Watched**: activation sites {c.get('sites_measured')} of {c.get('sites_total')}, "
        f"layers {c.get('layers_measured')} of {c.get('layers_total')}"
    )
    missing = c.get("not_measured") or {}
    if missing:
        items = [f"`{k}` ({v})" if v else f"`{k}`" for k, v in list(missing.items())[:8]]
        text += "; not measured: " + ", ".join(items)
    return text + "."


def _int(x: Any) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return 0


class _Protos:
    """The tensorboard protos, imported once on first use."""

    def __init__(self) -> None:
        req = {"feature": "TensorBoard logs", "extra": "tensorboard"}
        self.event_pb2 = require("tensorboard.compat.proto.event_pb2", **req)
        self.summary_pb2 = require("tensorboard.compat.proto.summary_pb2", **req)
        self.tensor_pb2 = require("tensorboard.compat.proto.tensor_pb2", **req)
        self.shape_pb2 = require("tensorboard.compat.proto.tensor_shape_pb2", **req)
        self.types_pb2 = require("tensorboard.compat.proto.types_pb2", **req)
        text_data = require("tensorboard.plugins.text.plugin_data_pb2", **req)
        S = self.summary_pb2.SummaryMetadata
        self.text_meta = S(
            plugin_data=S.PluginData(
                plugin_name="text", content=text_data.TextPluginData(version=0).SerializeToString()
            )
        )
        self.layout_meta = S(plugin_data=S.PluginData(plugin_name="custom_scalars"))

    def string_value(self, tag: str, payload: bytes, meta: Any) -> Any:
        tensor = self.tensor_pb2.TensorProto(
            dtype=self.types_pb2.DT_STRING,
            string_val=[payload],
            tensor_shape=self.shape_pb2.TensorShapeProto(),
        )
        return self.summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)

    def text(self, tag: str, text: str) -> Any:
        return self.string_value(tag, text.encode("utf-8"), self.text_meta)


class TensorBoardSink:
    """Writes vital signs, findings and repairs to one event file in ``log_dir``.

    Args:
        log_dir: the run directory (created if missing). Point ``tensorboard --logdir``
            or ``gradvitals report`` at it.
        run_info: extra JSON-serialisable facts about the run (model name, sync
            interval...), stored under ``gradvitals/run_info`` with the gradvitals version.

    Call :meth:`close` (or use ``with``) when done; an unclosed sink is closed at exit.
    Writes run on a background thread; at most ``max_pending`` (default 64) wait before
    a ``write_*`` call blocks, and :meth:`flush` waits for them.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        run_info: dict[str, Any] | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._pb = _Protos()
        self.log_dir = Path(log_dir)
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(
                f"cannot create the TensorBoard log dir {self.log_dir}: {e.strerror or e}"
            ) from e
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_uid)}"
        self.path = self.log_dir / name
        self._writer = BackgroundWriter(
            _open_event_file(self.path),
            label=f"the TensorBoard log {self.path}",
            max_pending=max_pending,
        )
        # drains and closes at close(), when collected, or at interpreter exit
        self._finalizer = weakref.finalize(self, self._writer.close)
        self._last_step = 0
        self._emit(self._pb.event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

        from gradvitals._version import __version__

        info = {"gradvitals": __version__, "format": T.FORMAT_VERSION, **(run_info or {})}
        layout = self._pb.string_value(
            "custom_scalars__config__", scalars_layout().SerializeToString(), self._pb.layout_meta
        )
        self._write_values(0, [self._pb.text(T.RUN_INFO_TAG, to_json(info)), layout])

    # -- writing -------------------------------------------------------------------
    def _emit(self, event: Any) -> None:
        # on the writer thread (or in __init__, before it starts)
        self._writer.write_record(event.SerializeToString())

    def _write_values(self, step: int, values: list[Any]) -> None:
        if not values:
            return
        summary = self._pb.summary_pb2.Summary(value=values)
        self._emit(self._pb.event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    @_queued
    def write_window(self, record: WindowRecord, findings: list[Finding]) -> None:
        """Log one window: ``record.scalars()`` at ``record.step``, and its findings as text."""
        S = self._pb.summary_pb2.Summary
        values = [
            S.Value(tag=tag, simple_value=v)
            for tag, v in T.namespaced_scalars(record.scalars()).items()
        ]
        values += self._findings_values(findings, T.FINDINGS_TAG, T.FINDINGS_JSON_TAG)
        self._last_step = max(self._last_step, int(record.step))
        self._write_values(record.step, values)

    def _findings_values(self, findings: list[Finding], md_tag: str, json_tag: str) -> list[Any]:
        if not findings:
            return []
        return [
            self._pb.text(T.namespaced(md_tag), findings_markdown(findings)),
            self._pb.text(json_tag, to_json([f.to_dict() for f in findings])),
        ]

    @_queued
    def write_repair(self, repair: Mapping[str, Any]) -> None:
        """Log a repair record ``{"step", "action", "reason", "kind", "layer", "healthy_after"}``.

        A repair is often settled windows after it was applied; the event goes at the
        latest step written (TensorBoard drops data it sees going back in steps), and
        the record keeps its own ``step``.
        """
        step = max(self._last_step, _int(repair.get("step")))
        self._last_step = step
        values = [
            self._pb.text(T.namespaced(T.REPAIRS_TAG), repair_markdown(repair)),
            self._pb.text(T.REPAIRS_JSON_TAG, to_json([dict(repair)])),
        ]
        self._write_values(step, values)

    @_queued
    def write_final(self, findings: list[Finding], summary: dict[str, Any] | None = None) -> None:
        """Log the end-of-run summary (``summary``) at the last step seen.

        ``findings`` may repeat per-window ones (the reader de-duplicates) or hold only
        the final "could not repair" ones. ``summary`` (the session's: coverage, windows,
        notes) goes into the final JSON beside them, so the report shows what was watched.
        """
        text = summary_markdown(findings)
        coverage = (summary or {}).get("coverage")
        if coverage:
            text = _coverage_markdown(coverage) + "\n\n" + text
        values = [self._pb.text(T.namespaced(T.SUMMARY_TAG), text)]
        items: list[Any] = [dict(summary)] if summary else []
        items += [f.to_dict() for f in findings]
        values.append(self._pb.text(T.FINAL_JSON_TAG, to_json(items)))
        self._write_values(self._last_step, values)

    def flush(self) -> None:
        """Wait until every queued write is in the file and flushed to the OS."""
        if not self.closed:
            self._writer.flush()

    def close(self) -> None:
        """Write everything queued, then close the event file; later writes raise
        ``UsageError``. Idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def __enter__(self) -> TensorBoardSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorBoardSink({str(self.log_dir)!r})"
