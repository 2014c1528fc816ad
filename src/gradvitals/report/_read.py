"""Read a gradvitals TensorBoard log back: scalars, findings, repairs and run info.

Reads what TensorBoard's ``EventAccumulator`` reads: scalar-style summaries
(``simple_value``, as gradvitals and ``SummaryWriter`` write), tensor-style ones
(``tensorboard.summary.Writer``, Keras/TF2), told apart by their plugin name, and
text from the text plugin. It walks the event files itself (:mod:`._records`)
because the accumulator skips a truncated or corrupt record silently and its loader
imports TensorFlow when installed; only ``tensorboard`` protos and ``tensor_util``
are used, and only for what the fast path below does not cover.

Speed: a gradvitals window is one event holding hundreds of ``(tag, simple_value)``
pairs, and every window of a run has the same tags in the same order, so the same
bytes apart from the 4 bytes of each float. The first such summary is parsed and
kept as a template; a later summary of the same length whose other bytes all equal
the template's is read by pulling its floats out with numpy (no proto parsing). Any
other summary goes through the protobuf parser. Points are kept as numpy arrays.

Reading also corrects what the log alone would misstate:

- Activations that were NaN read 100% dead (NaN is never positive) and NaN gradient
  norms are not written. In the window a ``nonfinite`` finding names, and in the
  windows after it with no finite loss or gradient norm, the statistics of the sites
  and layers it names are NaN (:func:`_mark_nonfinite`).
- Windows are counted from what the log holds: a step with a statistic (NaN
  included) or a window's findings. ``TensorBoardSink`` drops NaN statistics
  (``WindowRecord.scalars()``), so a window with nothing finite and no finding
  leaves no trace in the log and cannot be counted.
- Tags may carry a ``gradvitals/`` prefix (``gradvitals/loss/train``); both spellings
  read the same (:func:`~gradvitals.report._tags.canonical_tag`).

Every problem is a :class:`~gradvitals.errors.GradvitalsError` with a one-line message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradvitals.errors import GradvitalsError
from gradvitals.findings import FailureMode, Finding
from gradvitals.report import _tags as T
from gradvitals.report._deps import require
from gradvitals.report._records import iter_records

__all__ = ["RunData", "ScalarPoints", "find_event_files", "read_run"]

_TEXT_SUFFIX = "/text_summary"  # what SummaryWriter.add_text appends
#: Statistics of activations (per site): meaningless when the activations were NaN.
_ACTIVATION_SECTIONS = ("dead_fraction", "zero_fraction", "saturation")
#: Sections whose presence marks a gradvitals log even without run info ("loss" and
#: "grad_norm" are names other tools use too).
_MARKER_SECTIONS = frozenset({"dead_fraction", "zero_fraction", "saturation", "update_ratio"})
#: Model-wide tags written once per window.
_WINDOW_TAGS = frozenset({T.LOSS_TAG, T.TOTAL_GRAD_NORM_TAG})
_MIN_TEMPLATE_VALUES = 8  # smaller summaries are cheaper to parse than to match
_TEMPLATES_PER_LENGTH = 4

Points = tuple[np.ndarray, np.ndarray]  # (steps int64, values float), sorted by step


class ScalarPoints(Mapping[str, list[tuple[int, float]]]):
    """``tag -> [(step, value), ...]``, built per tag on access from the numpy arrays."""

    def __init__(self, arrays: Mapping[str, Points]) -> None:
        self._arrays = arrays

    def __getitem__(self, tag: str) -> list[tuple[int, float]]:
        steps, values = self._arrays[tag]
        return list(zip(steps.tolist(), values.tolist(), strict=True))

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


@dataclass
class RunData:
    """What a gradvitals log holds.

    Attributes:
        log_dir: the directory read (or the event file, if one was given).
        event_files: the event files read, in order.
        arrays: tag -> ``(steps, values)`` numpy arrays sorted by step (a repeated
            step keeps file order), for every scalar tag, gradvitals' and others'.
            Values may be NaN or Inf: a statistic that was not finite. Tags may share
            one steps array: replace arrays, never write into them.
        findings: findings in step order, with their remedies.
        repairs: repair records (dicts) in step order.
        run_info: the ``gradvitals/run_info`` object (empty if absent).
        texts: other text summaries, tag -> ``[(step, text), ...]``.
        coverage: ``{"sites_measured", "sites_total", "not_measured"}`` when the log
            says which activation sites were measured, else None.
        nonfinite_steps: windows whose statistics were taken on NaN/Inf values.
        notes: one-line remarks about the reading (a file cut short by a live writer).
    """

    log_dir: Path
    event_files: list[Path] = field(default_factory=list)
    arrays: dict[str, Points] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    run_info: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    coverage: dict[str, Any] | None = None
    nonfinite_steps: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    window_steps: list[int] = field(default_factory=list)

    @property
    def scalars(self) -> ScalarPoints:
        """tag -> ``[(step, value), ...]`` sorted by step (lists built on access)."""
        return ScalarPoints(self.arrays)

    @property
    def healthy(self) -> bool:
        """True when the run has no findings."""
        return not self.findings

    def layers(self, section: str) -> list[str]:
        """Layer names with a ``<section>/<layer>`` series, in the order first written
        (forward-execution order for gradvitals logs)."""
        out = []
        for tag in self.arrays:
            sec, layer = T.split_tag(tag)
            if sec == section and layer:
                out.append(layer)
        return out

    def array(self, tag: str) -> Points:
        """The ``(steps, values)`` arrays of ``tag``; empty arrays if absent."""
        return self.arrays.get(tag, (np.zeros(0, np.int64), np.zeros(0)))

    def series(self, section: str, layer: str) -> list[tuple[int, float]]:
        """The ``(step, value)`` series of ``<section>/<layer>``; empty if absent."""
        tag = f"{section}/{layer}"
        return self.scalars[tag] if tag in self.arrays else []

    def steps(self) -> list[int]:
        """The sorted steps of the run's windows: every step at which a gradvitals
        statistic (NaN included) or a window's findings were written."""
        return list(self.window_steps)

    def final_values(self, section: str) -> dict[str, float]:
        """Each layer's last value of ``section`` (NaN when it was not finite)."""
        out = {}
        for layer in self.layers(section):
            _, values = self.arrays[f"{section}/{layer}"]
            if len(values):
                out[layer] = float(values[-1])
        return out


def find_event_files(log_dir: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """The run directory to read and its event files.

    A directory without event files but with exactly one sub-directory holding some
    (``logs/`` containing ``logs/run1/``) is accepted as that sub-directory.
    """
    p = Path(log_dir)
    try:
        return _find_event_files(p)
    except PermissionError as e:
        where = Path(e.filename) if e.filename else p
        raise GradvitalsError(
            f"cannot read {where}: permission denied; give yourself access "
            f"(chmod u+rx {where}) or run as the user that wrote the log"
        ) from e
    except OSError as e:
        raise GradvitalsError(f"cannot read {p}: {e.strerror or e}") from e


def _event_files_in(d: Path) -> list[Path]:
    return sorted(f for f in d.iterdir() if "tfevents" in f.name and f.is_file())


def _find_event_files(p: Path) -> tuple[Path, list[Path]]:
    if not p.exists():
        raise GradvitalsError(
            f"log dir {p} does not exist; pass the directory given to "
            "gradvitals.watch(..., log_dir=...)"
        )
    if p.is_file():
        if "tfevents" not in p.name:
            raise GradvitalsError(
                f"{p} is not a TensorBoard event file (events.out.tfevents.*); pass its directory"
            )
        return p, [p]
    files = _event_files_in(p)
    if files:
        return p, files
    nested = sorted({f.parent for f in p.rglob("*tfevents*") if f.is_file()})
    if len(nested) == 1:
        return nested[0], _event_files_in(nested[0])
    if nested:
        shown = ", ".join(str(d) for d in nested[:4]) + (", ..." if len(nested) > 4 else "")
        raise GradvitalsError(f"{p} holds {len(nested)} runs, not one; pass one of them: {shown}")
    raise GradvitalsError(
        f"no TensorBoard event files (events.out.tfevents.*) in {p}; pass the directory "
        "given to gradvitals.watch(..., log_dir=...)"
    )


def read_run(
    log_dir: str | os.PathLike[str],
    *,
    verify: bool = True,
    allow_truncated: bool = False,
    on_progress: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> RunData:
    """Read a gradvitals log directory (or one event file).

    Args:
        log_dir: the ``log_dir`` given to ``gradvitals.watch`` (or the Keras callback).
        verify: check every record's CRC-32C checksums (default True).
        allow_truncated: read a file that ends in a partial record (a run still
            writing) up to its last complete record; the cut is noted in ``notes``.
        on_progress: called with byte counts as event files are read.
        on_note: called with each one-line note as it is made.

    Returns:
        A :class:`RunData`.

    Raises:
        GradvitalsError: the path is missing or unreadable, holds no event files, an
            event file is empty, truncated or corrupt, a JSON text is malformed, or
            nothing in it came from gradvitals.
    """
    path, files = find_event_files(log_dir)
    run = RunData(log_dir=path, event_files=files)

    def note(text: str) -> None:
        run.notes.append(text)
        if on_note is not None:
            on_note(text)

    collector = _Collector()
    for f in files:
        records = iter_records(
            f,
            verify=verify,
            allow_truncated=allow_truncated,
            on_progress=on_progress,
            on_truncated=note,
        )
        for raw in records:
            try:
                collector.add(raw)
            except (ValueError, IndexError) as e:  # a well-framed record that is not an Event
                raise GradvitalsError(
                    f"event file {f} holds a record that is not an Event ({e}); the file is "
                    "damaged or not a TensorBoard log: delete or replace it"
                ) from e
    run.arrays = collector.arrays()
    run.texts = collector.texts
    for texts in run.texts.values():
        texts.sort(key=lambda p: p[0])

    run.run_info = _parse_run_info(run.texts.pop(T.RUN_INFO_TAG, []), path)
    per_window = run.texts.pop(T.FINDINGS_JSON_TAG, [])
    findings = _parse_json_lists(per_window, T.FINDINGS_JSON_TAG, path)
    final, summary = _parse_final(run.texts.pop(T.FINAL_JSON_TAG, []), path)
    run.findings = _to_findings(findings + final, path)
    run.repairs = sorted(
        _parse_json_lists(run.texts.pop(T.REPAIRS_JSON_TAG, []), T.REPAIRS_JSON_TAG, path),
        key=lambda r: _int(r.get("step")),
    )
    run.coverage = _coverage(run.run_info.get("coverage")) or _coverage(summary.get("coverage"))

    ours = any(T.split_tag(t)[0] in _MARKER_SECTIONS for t in run.arrays)
    if not ours and not run.run_info and not run.findings:
        other = sorted(run.arrays) + sorted(run.texts)
        more = ", ..." if len(other) > 3 else ""
        seen = f" (its tags are not gradvitals': {', '.join(other[:3])}{more})" if other else ""
        raise GradvitalsError(
            f"no gradvitals statistics found in {path}: not a gradvitals log{seen}; was it "
            "written by gradvitals.watch(..., log_dir=...)?"
        )
    window_steps = collector.steps_with(_is_window_tag) | {s for s, _ in per_window}
    run.window_steps = sorted(window_steps)
    run.nonfinite_steps = _mark_nonfinite(run)
    return run


def _is_window_tag(tag: str) -> bool:
    """A statistic written once per window (not a user's own tag in the same log)."""
    return T.split_tag(tag)[0] in T.LAYER_SECTIONS or tag in _WINDOW_TAGS


# -- decoding events -------------------------------------------------------------------


def _varint(b: bytes, i: int) -> tuple[int, int]:
    """The base-128 varint at ``b[i]`` and the index after it."""
    x = b[i]
    if x < 0x80:
        return x, i + 1
    out, shift = x & 0x7F, 7
    while True:
        i += 1
        x = b[i]
        out |= (x & 0x7F) << shift
        if x < 0x80:
            return out, i + 1
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _event_fields(raw: bytes) -> tuple[int, bytes | None]:
    """``(step, serialized Summary or None)`` of a serialized ``Event``.

    Event fields: 1 wall_time (double), 2 step (int64), 5 summary; the rest (file
    version, graph, session log...) is skipped.
    """
    step, summary, i, n = 0, None, 0, len(raw)
    while i < n:
        key, i = _varint(raw, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(raw, i)
            if number == 2:
                step = v - (1 << 64) if v >= (1 << 63) else v
        elif wire == 1:
            i += 8
        elif wire == 2:
            length, i = _varint(raw, i)
            if number == 5:
                summary = raw[i : i + length]
            i += length
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
    if i != n:
        raise ValueError("the last field runs past the end of the record")
    return step, summary


@dataclass
class _Template:
    """The layout of a summary made only of ``(tag, simple_value)`` pairs."""

    tags: list[str]
    data: np.ndarray  # the summary's bytes
    structure: np.ndarray  # True where a byte is not part of a float
    float_index: np.ndarray  # byte indices of the floats, 4 per value, in order
    seqs: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def build(cls, summary: bytes) -> _Template | None:
        """The template of ``summary``, or None unless every value is exactly a tag
        (field 1) followed by a ``simple_value`` (field 2, fixed32)."""
        tags: list[str] = []
        starts: list[int] = []
        i, n = 0, len(summary)
        try:
            while i < n:
                if summary[i] != 0x0A:  # Summary.value, length-delimited
                    return None
                length, j = _varint(summary, i + 1)
                end = j + length
                # Value.tag (1, at least 1 byte) then Value.simple_value (2, fixed32)
                if end > n or length < 7 or summary[j] != 0x0A:
                    return None
                tag_len, k = _varint(summary, j + 1)
                k += tag_len
                if k + 5 != end or summary[k] != 0x15:
                    return None
                tags.append(summary[k - tag_len : k].decode("utf-8"))
                starts.append(k + 1)
                i = end
        except (IndexError, ValueError):  # malformed: let the protobuf parser say so
            return None
        if len(tags) < _MIN_TEMPLATE_VALUES:
            return None
        float_index = (np.asarray(starts)[:, None] + np.arange(4)).reshape(-1)
        data = np.frombuffer(summary, np.uint8)
        structure = np.ones(len(data), bool)
        structure[float_index] = False
        return cls(tags, data, structure, float_index)

    def add(self, buf: np.ndarray, seq: int, step: int) -> bool:
        """Record ``buf`` if it has this layout (all bytes but the floats equal)."""
        if np.any((buf != self.data) & self.structure):
            return False
        self.rows.append(buf[self.float_index])
        self.seqs.append(seq)
        self.steps.append(step)
        return True


class _Collector:
    """Accumulates the scalars and texts of a run's events, in file order."""

    def __init__(self) -> None:
        req = {"feature": "reports", "extra": "report"}
        self._summary_pb2 = require("tensorboard.compat.proto.summary_pb2", **req)
        self._tensor_util: Any = None
        self._seq = 0
        self._templates: dict[int, list[_Template]] = {}
        self._order: dict[str, None] = {}  # scalar tags, first seen first
        self._points: dict[str, tuple[list[int], list[int], list[float]]] = {}
        self._plugins: dict[str, str] = {}  # tag -> plugin name, from the first metadata
        self.texts: dict[str, list[tuple[int, str]]] = {}

    def add(self, raw: bytes) -> None:
        step, summary = _event_fields(raw)
        if not summary:
            return
        seq = self._seq
        self._seq += 1
        candidates = self._templates.get(len(summary))
        if candidates:
            buf = np.frombuffer(summary, np.uint8)
            for t in candidates:
                if t.add(buf, seq, step):
                    return
        template = _Template.build(summary)
        if template is not None:
            self._order.update(dict.fromkeys(template.tags))
            kept = self._templates.setdefault(len(summary), [])
            kept.insert(0, template)
            del kept[_TEMPLATES_PER_LENGTH:]
            template.add(template.data, seq, step)
            return
        self._parse(summary, seq, step)

    def _parse(self, summary: bytes, seq: int, step: int) -> None:
        """Any summary, through the protobuf parser."""
        try:
            parsed = self._summary_pb2.Summary.FromString(summary)
        except Exception as e:  # protobuf's DecodeError
            raise ValueError(f"a summary does not parse: {e}") from e
        for value in parsed.value:
            tag = value.tag
            if value.HasField("metadata") and tag not in self._plugins:
                self._plugins[tag] = value.metadata.plugin_data.plugin_name
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                self._point(tag, seq, step, float(value.simple_value))
            elif kind == "tensor":
                self._tensor(tag, seq, step, value.tensor)

    def _point(self, tag: str, seq: int, step: int, x: float) -> None:
        if tag not in self._points:
            self._points[tag] = ([], [], [])
            self._order[tag] = None
        seqs, steps, values = self._points[tag]
        seqs.append(seq)
        steps.append(step)
        values.append(x)

    def _tensor(self, tag: str, seq: int, step: int, tensor: Any) -> None:
        """A tensor-style value: text, or a one-element numeric scalar."""
        plugin = self._plugins.get(tag, "")
        if plugin not in ("text", "scalars", ""):
            return  # histograms, images, custom-scalars layout, hparams...
        if self._tensor_util is None:
            self._tensor_util = require(
                "tensorboard.util.tensor_util", feature="reports", extra="report"
            )
        try:
            arr = self._tensor_util.make_ndarray(tensor)
        except Exception:  # an exotic dtype: not ours to read
            return
        if plugin == "text" or arr.dtype.kind in "SUO":
            name = tag[: -len(_TEXT_SUFFIX)] if tag.endswith(_TEXT_SUFFIX) else tag
            self.texts.setdefault(T.canonical_tag(name), []).append((step, _decode_text(arr)))
        elif arr.size == 1 and arr.dtype.kind in "fiub":
            self._point(tag, seq, step, float(arr.reshape(())))

    def steps_with(self, wanted: Callable[[str], bool]) -> set[int]:
        """The steps of the events holding a scalar whose canonical tag is ``wanted``."""
        out: set[int] = set()
        for kept in self._templates.values():
            for t in kept:
                if any(wanted(T.canonical_tag(tag)) for tag in t.tags):
                    out.update(t.steps)
        for tag, (_, steps, _) in self._points.items():
            if wanted(T.canonical_tag(tag)):
                out.update(steps)
        return out

    def arrays(self) -> dict[str, Points]:
        """Every scalar tag's points, sorted by step (then file order), canonical tags."""
        chunks: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for kept in self._templates.values():
            for t in kept:
                if not t.rows:
                    continue
                t_seqs, t_steps = np.asarray(t.seqs), np.asarray(t.steps, np.int64)
                matrix = np.stack(t.rows).view("<f4")  # one row per event
                for j, tag in enumerate(t.tags):
                    chunks.setdefault(tag, []).append((t_seqs, t_steps, matrix[:, j]))
        for tag, (p_seqs, p_steps, p_values) in self._points.items():
            chunks.setdefault(tag, []).append(
                (
                    np.asarray(p_seqs),
                    np.asarray(p_steps, np.int64),
                    np.asarray(p_values, np.float64),
                )
            )
        merged: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for tag in self._order:
            merged.setdefault(T.canonical_tag(tag), []).extend(chunks.get(tag, []))
        out: dict[str, Points] = {}
        for tag, parts in merged.items():
            if not parts:
                continue
            if len(parts) == 1 and not np.any(np.diff(parts[0][1]) < 0):
                # the common case: one layout all run long; tags share its steps array
                out[tag] = (parts[0][1], np.ascontiguousarray(parts[0][2]))
                continue
            seqs = np.concatenate([p[0] for p in parts])
            steps = np.concatenate([p[1] for p in parts])
            values = np.concatenate([p[2] for p in parts])
            order = np.lexsort((seqs, steps))
            out[tag] = (steps[order], values[order])
        return out


def _decode_text(arr: Any) -> str:
    items = arr.reshape(-1).tolist()
    return "\n".join(
        x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in items
    )


# -- text tags -------------------------------------------------------------------------


def _int(x: Any) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return -1


def _json(text: str, what: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise GradvitalsError(
            f"{path}: {what} is not valid JSON ({e}); the log is damaged: delete its event "
            "file, or re-run with a matching gradvitals"
        ) from e


def _parse_run_info(texts: list[tuple[int, str]], path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for _, text in texts:  # a resumed run writes one per event file; later ones win
        obj = _json(text, T.RUN_INFO_TAG, path)
        if isinstance(obj, dict):
            info.update(obj)
    return info


def _parse_json_lists(texts: list[tuple[int, str]], tag: str, path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for step, text in texts:
        obj = _json(text, f"{tag} at step {step}", path)
        items = obj if isinstance(obj, list) else [obj]
        out.extend(x for x in items if isinstance(x, dict))
    return out


def _parse_final(
    texts: list[tuple[int, str]], path: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The end-of-run findings, and the summary object that may come with them: the
    JSON is a list of findings, possibly with ``{"coverage": ..., "findings": [...]}``."""
    findings: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for d in _parse_json_lists(texts, T.FINAL_JSON_TAG, path):
        if "kind" in d:
            findings.append(d)
            continue
        summary.update(d)
        nested = d.get("findings")
        if isinstance(nested, list):
            findings.extend(x for x in nested if isinstance(x, dict))
    return findings, summary


def _coverage(obj: Any) -> dict[str, Any] | None:
    """``{"sites_measured": int, "sites_total": int, "not_measured": {layer: reason}}``,
    or None if ``obj`` does not say how many sites were measured."""
    if not isinstance(obj, dict):
        return None
    try:
        measured, total = int(obj["sites_measured"]), int(obj["sites_total"])
    except (KeyError, TypeError, ValueError):
        return None
    missing = obj.get("not_measured") or {}
    if isinstance(missing, list):
        missing = dict.fromkeys(map(str, missing), "")
    if not isinstance(missing, dict):
        missing = {}
    return {
        "sites_measured": measured,
        "sites_total": total,
        "not_measured": {str(k): str(v) if v is not None else "" for k, v in missing.items()},
    }


def _to_findings(dicts: list[dict[str, Any]], path: Path) -> list[Finding]:
    findings: list[Finding] = []
    seen: set[tuple[Any, ...]] = set()
    for d in dicts:
        try:
            f = Finding.from_dict(d)
        except Exception as e:  # a missing kind, an unknown cause, a malformed remedy...
            raise GradvitalsError(
                f"{path}: cannot read a finding ({e!r}); was the log written by a newer "
                "gradvitals? upgrade with pip install -U gradvitals"
            ) from e
        key = (f.kind, f.layer, f.step, f.message)
        if key in seen:
            # the end-of-run list repeats per-window findings; keep the "final" flag and
            # the consequences nested under the root since it was first written
            for g in findings:
                if (g.kind, g.layer, g.step, g.message) == key:
                    g.final = g.final or f.final
                    if len(f.consequences) > len(g.consequences):
                        g.consequences = f.consequences
            continue
        seen.add(key)
        findings.append(f)
    return sorted(findings, key=lambda f: f.step)


# -- NaN windows -----------------------------------------------------------------------


def _finite_steps(run: RunData, tag: str) -> set[int]:
    steps, values = run.array(tag)
    return set(steps[np.isfinite(values)].tolist())


def _mark_nonfinite(run: RunData) -> list[int]:
    """Show as NaN what was measured on NaN/Inf values; returns the steps of those windows.

    A NaN is never positive, so a site fed NaNs reads "100% dead"; and a NaN gradient
    norm is not written at all. The windows affected: the one where a ``nonfinite``
    finding was raised, and each later window with neither a finite loss nor a
    finite global gradient norm, until one has. There, the activation statistics of
    the sites in the finding's ``activation_layers`` (and, in the later windows, of
    any site at exactly 100% dead) become NaN, and the layers in its
    ``gradient_layers`` get a NaN gradient norm and update ratio where none was written.
    """
    started: dict[int, tuple[set[str], set[str]]] = {}
    for f in run.findings:
        if f.kind is FailureMode.NONFINITE:
            sites, grads = started.setdefault(f.step, (set(), set()))
            sites.update(str(s) for s in f.evidence.get("activation_layers") or [])
            grads.update(str(s) for s in f.evidence.get("gradient_layers") or [])
    if not started:
        return []
    logs_health = T.LOSS_TAG in run.arrays or T.TOTAL_GRAD_NORM_TAG in run.arrays
    finite = _finite_steps(run, T.LOSS_TAG) | _finite_steps(run, T.TOTAL_GRAD_NORM_TAG)
    by_site: dict[str, list[int]] = {}
    by_layer: dict[str, list[int]] = {}
    after: list[int] = []  # later windows with nothing finite
    episode: tuple[set[str], set[str]] | None = None
    for step in run.window_steps:
        if step in started:
            episode = started[step]
        elif episode is not None and logs_health and step not in finite:
            after.append(step)
        else:
            episode = None
            continue
        for site in episode[0]:
            by_site.setdefault(site, []).append(step)
        for layer in episode[1]:
            by_layer.setdefault(layer, []).append(step)

    for site, steps in by_site.items():
        for section in _ACTIVATION_SECTIONS:
            _blank(run, f"{section}/{site}", steps)
    for site in run.layers("dead_fraction") if after else []:
        dead_steps, dead = run.arrays[f"dead_fraction/{site}"]
        all_dead = dead_steps[np.isin(dead_steps, after) & (dead == 1.0)]
        for section in _ACTIVATION_SECTIONS:
            _blank(run, f"{section}/{site}", all_dead)
    for layer, layer_steps in by_layer.items():
        for section in ("grad_norm", "update_ratio"):
            _fill_nan(run, f"{section}/{layer}", layer_steps)
    return sorted(set(started) | set(after))


def _blank(run: RunData, tag: str, at: Any) -> None:
    """Set the points of ``tag`` at steps ``at`` to NaN."""
    if tag not in run.arrays or not len(at):
        return
    steps, values = run.arrays[tag]
    where = np.isin(steps, at)
    if where.any():
        values = values.astype(np.float64)  # a float32 column becomes its own copy
        values[where] = np.nan
        run.arrays[tag] = (steps, values)


def _fill_nan(run: RunData, tag: str, at: list[int]) -> None:
    """Add a NaN point to ``tag`` (a series the log has) at each step of ``at`` it lacks."""
    if tag not in run.arrays:
        return
    steps, values = run.arrays[tag]
    missing = np.setdiff1d(np.asarray(at, np.int64), steps)
    if len(missing):
        steps = np.concatenate([steps, missing])
        values = np.concatenate([values.astype(np.float64), np.full(len(missing), np.nan)])
        order = np.argsort(steps, kind="stable")
        run.arrays[tag] = (steps[order], values[order])
