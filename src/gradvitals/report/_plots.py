"""The report's figures, as ``data:image/png;base64`` URIs (matplotlib Agg, no pyplot).

Heat maps are layers (rows, first layer on top) x steps (columns); a cell is grey
where a layer was not measured. Findings are marked where they were raised.

>>> _label("net.$x$")
'net.\\\\$x\\\\$'
>>> _label("a" * 60)[:5], len(_label("a" * 60))
('aaaaa', 40)
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

__all__ = ["HEATMAPS", "grad_norm_plot", "heatmap", "loss_plot"]

#: section -> (title, colour-bar label, log10?, colour map)
HEATMAPS: dict[str, tuple[str, str, bool, str]] = {
    "dead_fraction": ("Dead units", "dead fraction", False, "magma"),
    "saturation": ("Saturation", "saturated fraction", False, "magma"),
    "grad_norm": ("Gradient norm", "log10 grad norm", True, "viridis"),
    "update_ratio": ("Update ratio", "log10 update ratio", True, "RdBu_r"),
}

_MAX_LABEL = 40
_MAX_TICKS = 60


def _label(name: str) -> str:
    """A layer name safe for a matplotlib label: no mathtext, at most 40 characters."""
    if len(name) > _MAX_LABEL:
        half = (_MAX_LABEL - 1) // 2
        name = name[:half] + "…" + name[-(_MAX_LABEL - 1 - half) :]
    return name.replace("$", r"\$")


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


def _edges(steps: Sequence[int]) -> np.ndarray:
    s = np.asarray(steps, float)
    if len(s) == 1:
        return np.array([s[0] - 0.5, s[0] + 0.5])
    mid = (s[1:] + s[:-1]) / 2
    return np.concatenate([[s[0] - (mid[0] - s[0])], mid, [s[-1] + (s[-1] - mid[-1])]])


def _matrix(run: RunData, section: str, layers: list[str]) -> tuple[np.ndarray, list[int]]:
    steps = sorted({s for layer in layers for s, _ in run.series(section, layer)})
    col = {s: j for j, s in enumerate(steps)}
    m = np.full((len(layers), len(steps)), np.nan)
    for i, layer in enumerate(layers):
        for s, v in run.series(section, layer):
            m[i, col[s]] = v  # a repeated step (resumed run): the last value wins
    return m, steps


def heatmap(run: RunData, section: str, findings: Sequence[Finding] = ()) -> str | None:
    """A layers x steps heat map of ``section`` as a data URI; None if nothing to show."""
    layers = run.layers(section)
    if not layers:
        return None
    title, cbar_label, log, cmap_name = HEATMAPS[section]
    m, steps = _matrix(run, section, layers)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(m > 0, np.log10(np.where(m > 0, m, 1.0)), np.nan)
    m[~np.isfinite(m)] = np.nan
    if np.isnan(m).all():
        return None
    mpl = require("matplotlib", feature="reports", extra="report")
    colors = require("matplotlib.colors", feature="reports", extra="report")
    cmap = mpl.colormaps[cmap_name].with_extremes(bad="#d9d9d9")
    lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
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
    labels = [_label(layers[t]) for t in ticks]
    height = min(16.0, max(2.6, 1.4 + 0.24 * n))
    fig = _figure(11, height, left_chars=max(len(x) for x in labels), colorbar=True)
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(
        _edges(steps), np.arange(n + 1), np.ma.masked_invalid(m), cmap=cmap, norm=norm
    )
    ax.set_yticks([t + 0.5 for t in ticks], labels, fontsize=8)
    ax.set_ylim(n, 0)  # first layer on top
    ax.set_xlabel("step")
    ax.set_title(f"{title} per layer")
    cax = fig.add_axes((1 - 1.05 / 11, ax.get_position().y0, 0.15 / 11, ax.get_position().height))
    fig.colorbar(mesh, cax=cax, label=cbar_label)
    row = {layer: i for i, layer in enumerate(layers)}
    for f in findings:
        if f.layer in row:
            ax.plot(
                [f.step],
                [row[f.layer] + 0.5],
                marker="X",
                markersize=10,
                color="#00e5ff",
                markeredgecolor="black",
                linestyle="none",
            )
        elif f.layer is None:
            ax.axvline(f.step, color="#00e5ff", linestyle="--", linewidth=1)
    return _to_uri(fig)


def grad_norm_plot(run: RunData, findings: Sequence[Finding] = ()) -> str | None:
    """Per-layer gradient norms on a log scale (plus the global norm), or None."""
    layers = [
        la for la in run.layers("grad_norm") if any(v > 0 for _, v in run.series("grad_norm", la))
    ]
    total = [
        (s, v) for s, v in run.scalars.get(T.TOTAL_GRAD_NORM_TAG, []) if v > 0 and math.isfinite(v)
    ]
    if not layers and not total:
        return None
    mpl = require("matplotlib", feature="reports", extra="report")
    cmap = mpl.colormaps["viridis"]
    fig = _figure(11, 4.6)
    ax = fig.add_subplot()
    for i, layer in enumerate(layers):
        pts = [(s, v) for s, v in run.series("grad_norm", layer) if v > 0 and math.isfinite(v)]
        color = cmap(i / max(1, len(layers) - 1) * 0.9)
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color=color,
            linewidth=1.2,
            label=_label(layer),
        )
    if total:
        ax.plot(
            [p[0] for p in total],
            [p[1] for p in total],
            color="black",
            linestyle="--",
            linewidth=1.5,
            label="global norm",
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm")
    ax.set_title("Gradient norm per layer (dark: first layers, light: last layers)")
    for f in findings:
        ax.axvline(f.step, color="#d62728", linestyle=":", linewidth=1)
    if len(layers) <= 12:
        ax.legend(fontsize=8, loc="best")
    return _to_uri(fig)


def loss_plot(run: RunData) -> str | None:
    """The training loss, or None if not logged."""
    pts = [(s, v) for s, v in run.scalars.get(T.LOSS_TAG, []) if math.isfinite(v)]
    if not pts:
        return None
    fig = _figure(11, 3.2)
    ax = fig.add_subplot()
    ax.plot(
        [p[0] for p in pts],
        [p[1] for p in pts],
        color="#1f77b4",
        marker="." if len(pts) < 60 else None,
    )
    vals = [v for _, v in pts]
    if min(vals) > 0 and max(vals) / min(vals) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean loss in window")
    ax.set_title("Training loss")
    return _to_uri(fig)
