"""The report's figures, as ``data:image/png;base64`` URIs (matplotlib Agg, no pyplot).

Heat maps are layers (rows, first layer on top) x windows (columns, at their step).
A cell is one of three things, never confused: a finite value (colour scale), a
NaN/Inf value (:data:`NAN_COLOR`, pink), or no value (:data:`MISSING_COLOR`, grey:
not measured). Findings are marked where they were raised. A run with more windows
than :data:`MAX_COLUMNS` is drawn with each column summarising consecutive windows
(the largest fraction, the geometric mean of a norm; NaN if any window was NaN).

Layer labels drop the prefix all names share and, when still long, middle parts of
the name, but keep every block index, so labels stay unique and readable:

>>> short_labels(["transformer.h.3.mlp.act", "transformer.h.11.mlp.act"])
(['h.3.mlp.act', 'h.11.mlp.act'], 'transformer.')
>>> short_labels(["model.encoder.layers.11.self_attention.output.dense"], limit=30)[0]
['…layers.11…output.dense']
>>> short_labels(["net.$x$"])[0]  # no mathtext
['net.\\\\$x\\\\$']
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gradvitals.findings import Finding
from gradvitals.report import _tags as T
from gradvitals.report._deps import require
from gradvitals.report._read import RunData
from gradvitals.stats import SIGNALS

__all__ = [
    "HEATMAPS",
    "MAX_COLUMNS",
    "MISSING_COLOR",
    "NAN_COLOR",
    "grad_norm_plot",
    "heatmap",
    "loss_plot",
    "short_labels",
]

#: section -> (title, colour-bar label, log10?, colour map): the heat-map signals of
#: :data:`~gradvitals.stats.SIGNALS`
HEATMAPS: dict[str, tuple[str, str, bool, str]] = {
    s.name: (s.title, f"log10 {s.label}" if s.log_scale else s.label, s.log_scale, s.cmap)
    for s in SIGNALS
    if s.heatmap
}
NAN_COLOR = "#ff3ea5"  # NaN/Inf cells and markers
MISSING_COLOR = "#d9d9d9"  # not measured
#: Most heat-map columns and line points drawn; longer runs are summarised.
MAX_COLUMNS = 800
MAX_POINTS = 1500

_MAX_LABEL = 40
_MAX_TICKS = 60
_MISSING, _FINITE, _NONFINITE = 0, 1, 2


# -- labels ------------------------------------------------------------------------------


def _protected(parts: list[str]) -> set[int]:
    """Indices of name parts a label keeps: numbers, the part naming a numbered block
    (``h`` in ``h.3``) and the last part."""
    keep = {len(parts) - 1}
    for i, p in enumerate(parts):
        if p.isdigit():
            keep.update((i, i - 1) if i else (i,))
    return keep


def _fit(label: str, limit: int) -> str:
    """Drop unprotected parts of ``label``, leftmost first, until it fits ``limit``."""
    parts = label.split(".")
    if len(label) <= limit or len(parts) < 3:
        return label
    keep = _protected(parts)
    dropped: set[int] = set()
    text = label
    for i in range(len(parts)):
        if len(text) <= limit:
            break
        if i in keep:
            continue
        dropped.add(i)
        text = ""
        for j, p in enumerate(parts):
            if j in dropped:
                if not text.endswith("…"):
                    text += "…"
            else:
                text += p if not text or text.endswith("…") else "." + p
    return text


def short_labels(names: Sequence[str], limit: int = _MAX_LABEL) -> tuple[list[str], str]:
    """Unique, short labels for ``names``, and the prefix removed from all of them.

    The longest run of leading parts shared by every name is removed, except a part
    followed by a number (``transformer.h.3`` -> ``h.3``); a label still longer than
    ``limit`` loses middle parts that are not numbers. Any two names that would share
    a label keep their full names. ``$`` is escaped (matplotlib mathtext).
    """
    split = [n.split(".") for n in names]
    k = 0
    if len(split) > 1:
        shortest = min(len(p) for p in split) - 1  # keep at least the last part
        while k < shortest and all(p[k] == split[0][k] for p in split):
            k += 1
        while k > 0 and any(p[k].isdigit() for p in split):
            k -= 1
    prefix = ".".join(split[0][:k]) + "." if k else ""
    labels = [_fit(".".join(p[k:]), limit) for p in split]
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    labels = [
        label if counts[label] == 1 else ".".join(p[k:])
        for label, p in zip(labels, split, strict=True)
    ]
    return [label.replace("$", r"\$") for label in labels], prefix.replace("$", r"\$")


# -- figures -----------------------------------------------------------------------------


def _figure(width: float, height: float, *, left_chars: int = 8, colorbar: bool = False) -> Any:
    """A figure with fixed margins (constrained layout would double the drawing time).

    ``left_chars``: the longest y tick label, in characters (8 pt: ~0.065 in each).
    """
    mfig = require("matplotlib.figure", feature="reports", extra="report")
    fig = mfig.Figure(figsize=(width, height), dpi=100)
    left = min(0.45, (0.55 + 0.065 * left_chars) / width)
    right = 1 - (1.25 if colorbar else 0.25) / width
    fig.subplots_adjust(left=left, right=right, bottom=0.5 / height + 0.02, top=1 - 0.4 / height)
    return fig


def _to_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _edges(steps: np.ndarray) -> np.ndarray:
    s = np.asarray(steps, float)
    if len(s) == 1:
        return np.array([s[0] - 0.5, s[0] + 0.5])
    mid = (s[1:] + s[:-1]) / 2
    return np.concatenate([[s[0] - (mid[0] - s[0])], mid, [s[-1] + (s[-1] - mid[-1])]])


def _grid(
    run: RunData, section: str, layers: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, state, steps)``: layers x the run's windows, for ``section``.

    ``state`` is 0 where a layer has no value at a step, 1 for a finite value, 2 for
    NaN/Inf; ``values`` is NaN wherever the state is not 1. A repeated step (a
    resumed run) keeps the last value written.
    """
    arrays = [run.array(f"{section}/{layer}") for layer in layers]
    every = [np.asarray(run.steps(), np.int64), *(s for s, _ in arrays)]
    steps = np.unique(np.concatenate(every))  # every window: a gap shows as not measured
    values = np.full((len(layers), len(steps)), np.nan)
    state = np.zeros((len(layers), len(steps)), np.int8)
    for i, (s, v) in enumerate(arrays):
        col = np.searchsorted(steps, s)
        finite = np.isfinite(v)
        values[i, col] = np.where(finite, v, np.nan)
        state[i, col] = np.where(finite, _FINITE, _NONFINITE)
    return values, state, steps


def _bins(n: int, most: int) -> np.ndarray:
    """Start indices of at most ``most`` runs of consecutive columns out of ``n``."""
    return np.linspace(0, n, min(n, most), endpoint=False).astype(int)


def _summarise(
    values: np.ndarray, state: np.ndarray, steps: np.ndarray, *, log: bool, most: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge consecutive columns so at most ``most`` remain: the largest value (or the
    mean of log values), NaN if any merged cell was NaN. Returns the column edges."""
    if len(steps) <= most:
        return values, state, _edges(steps)
    starts = _bins(len(steps), most)
    merged_state = np.maximum.reduceat(state, starts, axis=1)
    finite = state == _FINITE
    if log:
        total = np.add.reduceat(np.where(finite, values, 0.0), starts, axis=1)
        count = np.add.reduceat(finite, starts, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            merged = total / count
    else:
        merged = np.fmax.reduceat(values, starts, axis=1)
    merged = np.where(merged_state == _FINITE, merged, np.nan)
    edges = _edges(steps)
    return merged, merged_state, np.append(edges[starts], edges[-1])


def heatmap(run: RunData, section: str, findings: Sequence[Finding] = ()) -> str | None:
    """A layers x windows heat map of ``section`` as a data URI; None if nothing to show."""
    layers = run.layers(section)
    if not layers:
        return None
    title, cbar_label, log, cmap_name = HEATMAPS[section]
    values, state, steps = _grid(run, section, layers)
    if not state.any():
        return None
    if log:  # a norm of exactly 0 is finite: drawn below the colour scale
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), -np.inf)
        values[state != _FINITE] = np.nan
    values, state, x_edges = _summarise(values, state, steps, log=log, most=MAX_COLUMNS)
    merged = len(x_edges) - 1 < len(steps)

    mpl = require("matplotlib", feature="reports", extra="report")
    colors = require("matplotlib.colors", feature="reports", extra="report")
    cmap = mpl.colormaps[cmap_name].with_extremes(bad=MISSING_COLOR)
    shown = values[np.isfinite(values)]
    lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    if not log:
        norm = colors.Normalize(0.0, 1.0)
    elif section == "update_ratio":  # white at the healthy 1e-3, at least 1e-5..1e-1
        norm = colors.TwoSlopeNorm(vcenter=-3.0, vmin=min(lo, -5.0), vmax=max(hi, -1.0))
    else:  # span at least two decades, so healthy jitter does not look like a failure
        mid = (lo + hi) / 2
        norm = colors.Normalize(min(lo, mid - 1.0), max(hi, mid + 1.0))

    n = len(layers)
    every = max(1, math.ceil(n / _MAX_TICKS))
    ticks = list(range(0, n, every))
    labels, prefix = short_labels(layers)
    tick_labels = [labels[t] for t in ticks]
    height = min(16.0, max(2.6, 1.4 + 0.24 * n))
    fig = _figure(11, height, left_chars=max(len(x) for x in tick_labels), colorbar=True)
    ax = fig.add_subplot()
    y_edges = np.arange(n + 1)
    shade = np.where(state == _FINITE, values, np.nan)
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(shade), cmap=cmap, norm=norm)
    legend = ["grey: not measured"] if (state == _MISSING).any() else []
    if (state == _NONFINITE).any():
        nan_map = colors.ListedColormap([NAN_COLOR])
        nan_cells = np.ma.masked_where(state != _NONFINITE, np.ones(state.shape))
        ax.pcolormesh(x_edges, y_edges, nan_cells, cmap=nan_map, vmin=0, vmax=1)
        legend.insert(0, "pink: NaN/Inf")
    ax.set_yticks([t + 0.5 for t in ticks], tick_labels, fontsize=8)
    if prefix:
        ax.set_ylabel(f"{prefix}…", fontsize=8)
    ax.set_ylim(n, 0)  # first layer on top
    ax.set_xlabel(
        "step" + (f" ({len(x_edges) - 1} columns of {len(steps)} windows)" if merged else "")
    )
    ax.set_title(f"{title} per layer" + (f" ({', '.join(legend)})" if legend else ""))
    cax = fig.add_axes((1 - 1.05 / 11, ax.get_position().y0, 0.15 / 11, ax.get_position().height))
    fig.colorbar(mesh, cax=cax, label=cbar_label)
    row = {layer: i for i, layer in enumerate(layers)}
    marked = [f for f in findings if f.layer in row]
    if marked:
        ax.plot(
            [f.step for f in marked],
            [row[str(f.layer)] + 0.5 for f in marked],
            marker="X",
            markersize=10,
            color="#00e5ff",
            markeredgecolor="black",
            linestyle="none",
        )
    for f in findings:
        if f.layer is None:
            ax.axvline(f.step, color="#00e5ff", linestyle="--", linewidth=1)
    return _to_uri(fig)


def _line(steps: np.ndarray, values: np.ndarray, *, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """The finite (and, on a log scale, positive) points, at most :data:`MAX_POINTS`:
    a longer series is cut into runs drawn at their mean (geometric mean on a log scale)."""
    ok = np.isfinite(values) & ((values > 0) if log else True)
    s, v = steps[ok].astype(float), values[ok].astype(float)
    if len(s) <= MAX_POINTS:
        return s, v
    starts = _bins(len(s), MAX_POINTS)
    count = np.diff(np.append(starts, len(s)))
    x = np.add.reduceat(s, starts) / count
    y = np.log10(v) if log else v
    y = np.add.reduceat(y, starts) / count
    return x, (10.0**y if log else y)


def _mark_nonfinite(ax: Any, steps: np.ndarray) -> None:
    """Pink ticks along the top of ``ax`` at the steps that had a NaN/Inf value."""
    if len(steps):
        ax.plot(
            steps,
            np.full(len(steps), 0.98),
            transform=ax.get_xaxis_transform(),
            marker="v",
            color=NAN_COLOR,
            linestyle="none",
            label="NaN/Inf",
        )


def grad_norm_plot(run: RunData, findings: Sequence[Finding] = ()) -> str | None:
    """Per-layer gradient norms on a log scale (plus the global norm), or None."""
    series = {la: run.array(f"grad_norm/{la}") for la in run.layers("grad_norm")}
    total = run.array(T.TOTAL_GRAD_NORM_TAG)
    lines = {la: _line(s, v, log=True) for la, (s, v) in series.items()}
    lines = {la: xy for la, xy in lines.items() if len(xy[0])}
    total_line = _line(*total, log=True)
    nonfinite = np.unique(
        np.concatenate(
            [s[~np.isfinite(v)] for s, v in [*series.values(), total]] or [np.zeros(0, int)]
        )
    )
    if not lines and not len(total_line[0]) and not len(nonfinite):
        return None
    mpl = require("matplotlib", feature="reports", extra="report")
    cmap = mpl.colormaps["viridis"]
    fig = _figure(11, 4.6)
    ax = fig.add_subplot()
    labels, _ = short_labels(list(lines))
    for i, ((x, y), label) in enumerate(zip(lines.values(), labels, strict=True)):
        color = cmap(i / max(1, len(lines) - 1) * 0.9)
        ax.plot(x, y, color=color, linewidth=1.2, label=label)
    if len(total_line[0]):
        ax.plot(*total_line, color="black", linestyle="--", linewidth=1.5, label="global norm")
    _mark_nonfinite(ax, nonfinite)
    if lines or len(total_line[0]):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm")
    ax.set_title("Gradient norm per layer (dark: first layers, light: last layers)")
    for step in sorted({f.step for f in findings}):
        ax.axvline(step, color="#d62728", linestyle=":", linewidth=1)
    if len(lines) <= 12:
        ax.legend(fontsize=8, loc="best")
    return _to_uri(fig)


def loss_plot(run: RunData) -> str | None:
    """The training loss (pink ticks: windows whose loss was NaN/Inf), or None."""
    steps, values = run.array(T.LOSS_TAG)
    x, y = _line(steps, values, log=False)
    nonfinite = steps[~np.isfinite(values)]
    if not len(x) and not len(nonfinite):
        return None
    fig = _figure(11, 3.2)
    ax = fig.add_subplot()
    if len(x):
        ax.plot(x, y, color="#1f77b4", marker="." if len(x) < 60 else None)
        if y.min() > 0 and y.max() / y.min() > 100:
            ax.set_yscale("log")
    _mark_nonfinite(ax, nonfinite)
    ax.set_xlabel("step")
    ax.set_ylabel("mean loss in window")
    ax.set_title("Training loss" + (" (pink: NaN/Inf)" if len(nonfinite) else ""))
    return _to_uri(fig)
