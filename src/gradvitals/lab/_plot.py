"""Figures with matplotlib's object API and the Agg canvas: no pyplot, no global backend.

matplotlib is imported on first use; without it a ``MissingDependency`` names the extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradvitals.report._deps import require

__all__ = ["DPI", "figure", "save"]

#: Figures are small: about 80 dpi keeps each PNG well under 200 KB.
DPI = 80


def figure(width: float, height: float) -> Any:
    """A new ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches."""
    mfig = require("matplotlib.figure", feature="lab figures", extra="lab")
    return mfig.Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI` and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
