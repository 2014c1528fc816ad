"""Read a gradvitals TensorBoard log back: scalars, findings, repairs and run info.

Reads what TensorBoard's ``EventAccumulator`` reads, the same way: scalar-style
summaries (``simple_value``, as gradvitals and ``SummaryWriter`` write) and
tensor-style ones (``tensorboard.summary.Writer``, Keras/TF2; TensorBoard lists them
under ``Tags()["tensors"]``), told apart by their plugin name; text from the text
plugin. It parses the event protos itself rather than through the accumulator
because (1) the accumulator skips a truncated or corrupt record silently, and
(2) its file loader imports TensorFlow when TensorFlow is installed (seconds, and
log noise on stderr). Only ``tensorboard`` protos and ``tensor_util`` are used.

Every problem is a :class:`~gradvitals.errors.GradvitalsError` with a one-line message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradvitals.errors import GradvitalsError
from gradvitals.findings import Finding
from gradvitals.report import _tags as T
from gradvitals.report._deps import require
from gradvitals.report._records import iter_records

__all__ = ["RunData", "find_event_files", "read_run"]

_TEXT_SUFFIX = "/text_summary"  # what SummaryWriter.add_text appends


@dataclass
class RunData:
    """What a gradvitals log holds.

    Attributes:
        log_dir: the directory read (or the event file, if one was given).
        event_files: the event files read, in order.
        scalars: tag -> ``[(step, value), ...]`` sorted by step, for every scalar tag
            (scalar- and tensor-style alike, gradvitals' and others').
        findings: findings in step order, with their remedies.
        repairs: repair records (dicts) in step order.
        run_info: the ``gradvitals/run_info`` object (empty if absent).
        texts: other text summaries, tag -> ``[(step, text), ...]``.
    """

    log_dir: Path
    event_files: list[Path] = field(default_factory=list)
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    run_info: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """True when the run has no findings."""
        return not self.findings

    def layers(self, section: str) -> list[str]:
        """Layer names with a ``<section>/<layer>`` series, in the order first written
        (forward-execution order for gradvitals logs)."""
        out = []
        for tag in self.scalars:
            sec, layer = T.split_tag(tag)
            if sec == section and layer:
                out.append(layer)
        return out

    def series(self, section: str, layer: str) -> list[tuple[int, float]]:
        """The ``(step, value)`` series of ``<section>/<layer>``; empty if absent."""
        return self.scalars.get(f"{section}/{layer}", [])

    def steps(self) -> list[int]:
        """Sorted steps at which any gradvitals statistic was written."""
        steps: set[int] = set()
        for tag, points in self.scalars.items():
            if T.split_tag(tag)[0] in T.GRADVITALS_SECTIONS:
                steps.update(s for s, _ in points)
        return sorted(steps)

    def final_values(self, section: str) -> dict[str, float]:
        """Each layer's last value of ``section``."""
        return {
            layer: pts[-1][1]
            for layer in self.layers(section)
            if (pts := self.series(section, layer))
        }


def find_event_files(log_dir: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """The run directory to read and its event files.

    A directory without event files but with exactly one sub-directory holding some
    (``logs/`` containing ``logs/run1/``) is accepted as that sub-directory.
    """
    p = Path(log_dir)
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
    files = sorted(f for f in p.iterdir() if f.is_file() and "tfevents" in f.name)
    if files:
        return p, files
    nested = sorted({f.parent for f in p.rglob("*tfevents*") if f.is_file()})
    if len(nested) == 1:
        return nested[0], sorted(
            f for f in nested[0].iterdir() if f.is_file() and "tfevents" in f.name
        )
    if nested:
        shown = ", ".join(str(d) for d in nested[:4]) + (", ..." if len(nested) > 4 else "")
        raise GradvitalsError(f"{p} holds {len(nested)} runs, not one; pass one of them: {shown}")
    raise GradvitalsError(
        f"no TensorBoard event files (events.out.tfevents.*) in {p}; pass the directory "
        "given to gradvitals.watch(..., log_dir=...)"
    )


def read_run(
    log_dir: str | os.PathLike[str], *, on_progress: Callable[[int], None] | None = None
) -> RunData:
    """Read a gradvitals log directory (or one event file).

    Args:
        log_dir: the ``log_dir`` given to ``gradvitals.watch`` (or the Keras callback).
        on_progress: called with byte counts as event files are checked.

    Returns:
        A :class:`RunData`.

    Raises:
        GradvitalsError: the directory is missing, holds no event files, an event
            file is empty, truncated or corrupt, or nothing in it came from gradvitals.
    """
    path, files = find_event_files(log_dir)
    req = {"feature": "reports", "extra": "report"}
    event_pb2 = require("tensorboard.compat.proto.event_pb2", **req)
    tensor_util = require("tensorboard.util.tensor_util", **req)

    run = RunData(log_dir=path, event_files=files)
    scalars: dict[str, list[tuple[int, float]]] = {}
    plugins: dict[str, str] = {}  # tag -> plugin name, from the first value with metadata
    for f in files:
        for raw in iter_records(f, on_progress=on_progress):
            try:
                event = event_pb2.Event.FromString(raw)
            except Exception as e:  # a well-framed record that is not an Event
                raise GradvitalsError(
                    f"event file {f} holds a record that is not an Event ({e})"
                ) from e
            if not event.HasField("summary"):
                continue
            step = int(event.step)
            for value in event.summary.value:
                tag = value.tag
                if value.HasField("metadata") and tag not in plugins:
                    plugins[tag] = value.metadata.plugin_data.plugin_name
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    scalars.setdefault(tag, []).append((step, float(value.simple_value)))
                elif kind == "tensor":
                    _add_tensor(
                        run, scalars, tag, plugins.get(tag, ""), step, value.tensor, tensor_util
                    )
    run.scalars = {tag: sorted(pts, key=lambda p: p[0]) for tag, pts in scalars.items()}
    for texts in run.texts.values():
        texts.sort(key=lambda p: p[0])

    run.run_info = _parse_run_info(run.texts.pop(T.RUN_INFO_TAG, []), path)
    findings = _parse_json_lists(run.texts.pop(T.FINDINGS_JSON_TAG, []), T.FINDINGS_JSON_TAG, path)
    final = _parse_json_lists(run.texts.pop(T.FINAL_JSON_TAG, []), T.FINAL_JSON_TAG, path)
    run.findings = _to_findings(findings + final, path)
    run.repairs = sorted(
        _parse_json_lists(run.texts.pop(T.REPAIRS_JSON_TAG, []), T.REPAIRS_JSON_TAG, path),
        key=lambda r: _int(r.get("step")),
    )

    ours = any(T.split_tag(t)[0] in T.GRADVITALS_SECTIONS for t in run.scalars)
    if not ours and not run.run_info and not run.findings:
        other = sorted(run.scalars) + sorted(run.texts)
        seen = f" (it has {len(other)} other tags, e.g. {', '.join(other[:3])})" if other else ""
        raise GradvitalsError(
            f"no gradvitals statistics found in {path}{seen}; was it written by "
            "gradvitals.watch(..., log_dir=...)?"
        )
    return run


def _add_tensor(
    run: RunData,
    scalars: dict[str, list[tuple[int, float]]],
    tag: str,
    plugin: str,
    step: int,
    tensor: Any,
    tensor_util: Any,
) -> None:
    """File a tensor-style value: text, or a one-element numeric scalar."""
    if plugin not in ("text", "scalars", ""):
        return  # histograms, images, custom-scalars layout, hparams...
    try:
        arr = tensor_util.make_ndarray(tensor)
    except Exception:  # an exotic dtype: not ours to read
        return
    if plugin == "text" or arr.dtype.kind in "SUO":
        name = tag[: -len(_TEXT_SUFFIX)] if tag.endswith(_TEXT_SUFFIX) else tag
        run.texts.setdefault(name, []).append((step, _decode_text(arr)))
    elif arr.size == 1 and arr.dtype.kind in "fiub":
        scalars.setdefault(tag, []).append((step, float(arr.reshape(()))))


def _int(x: Any) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return -1


def _decode_text(arr: Any) -> str:
    items = arr.reshape(-1).tolist()
    return "\n".join(
        x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in items
    )


def _parse_run_info(texts: list[tuple[int, str]], path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for _, text in texts:  # a resumed run writes one per event file; later ones win
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise GradvitalsError(f"{path}: {T.RUN_INFO_TAG} is not valid JSON ({e})") from e
        if isinstance(obj, dict):
            info.update(obj)
    return info


def _parse_json_lists(texts: list[tuple[int, str]], tag: str, path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for step, text in texts:
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise GradvitalsError(f"{path}: {tag} at step {step} is not valid JSON ({e})") from e
        items = obj if isinstance(obj, list) else [obj]
        out.extend(x for x in items if isinstance(x, dict))
    return out


def _to_findings(dicts: list[dict[str, Any]], path: Path) -> list[Finding]:
    findings: list[Finding] = []
    seen: set[tuple[Any, ...]] = set()
    for d in dicts:
        try:
            f = Finding.from_dict(d)
        except (KeyError, TypeError, ValueError) as e:
            raise GradvitalsError(
                f"{path}: cannot read a finding ({e!r}); was the log written by a newer "
                "gradvitals? upgrade with pip install -U gradvitals"
            ) from e
        key = (f.kind, f.layer, f.step, f.message)
        if key in seen:
            # the end-of-run list repeats per-window findings; keep the "final" flag
            if f.final:
                for g in findings:
                    if (g.kind, g.layer, g.step, g.message) == key:
                        g.final = True
            continue
        seen.add(key)
        findings.append(f)
    return sorted(findings, key=lambda f: f.step)
