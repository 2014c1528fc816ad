"""The result of one lab experiment, and its markdown summary.

>>> r = LabResult(name="demo", claim="1 + 1 = 2", table=[{"a": 1, "b": 0.123456}],
...               figures=[], verdict="holds: 1 + 1 = 2.000", holds=True, numbers={"sum": 2.0})
>>> print(markdown_table(r.table))
| a | b |
|---|---|
| 1 | 0.123 |
>>> "**Verdict.** holds: 1 + 1 = 2.000" in r.to_markdown()
True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LabResult", "fmt", "markdown_table"]


def fmt(x: Any) -> str:
    """A table cell: floats to 3 significant figures (``%g`` style), None/NaN as a dash.

    >>> fmt(0.5), fmt(1234.5), fmt(2.5e-7), fmt(float("nan")), fmt(None), fmt(True)
    ('0.5', '1.23e+03', '2.5e-07', '–', '–', 'yes')
    """
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.3g}"
    return str(x).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]] | str) -> str:
    """Rows of dicts (same keys, in order) as a markdown table; a string is returned as is."""
    if isinstance(rows, str):
        return rows
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, bool | int | float | str) or x is None:
        return x
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


@dataclass
class LabResult:
    """What one experiment measured.

    Attributes:
        name: the experiment (``"vanishing"``).
        claim: the claim under test, one sentence, with its source.
        table: the measurements, as rows (dicts with the same keys) or markdown.
        figures: paths of the PNG figures written.
        verdict: one line on the claim, with the numbers.
        holds: True/False when the claim is reproduced or not, None when mixed.
        numbers: the headline numbers by name (what the tests and docs quote).
        literature: the published numbers the measurement is compared with.
        size: ``"smoke"``, ``"default"`` or ``"full"``.
        seed: the base seed.
        seconds: wall time of the experiment.
        cpu_seconds: CPU time of the process (all threads) during the experiment.
        config: the configuration it ran with.
        out_dir: where the summary, figures and TensorBoard logs were written.
    """

    name: str
    claim: str
    table: list[dict[str, Any]] | str
    figures: list[Path]
    verdict: str
    holds: bool | None
    numbers: dict[str, Any] = field(default_factory=dict)
    literature: str = ""
    size: str = "default"
    seed: int = 0
    seconds: float = float("nan")
    cpu_seconds: float = float("nan")
    config: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    def to_markdown(self) -> str:
        """The summary page: claim, verdict, table, figures, numbers and configuration."""
        out = [
            f"# gradvitals lab: {self.name}",
            "",
            f"**Claim.** {self.claim}",
            "",
            f"**Verdict.** {self.verdict}",
            "",
        ]
        if self.literature:
            out += [f"**Literature.** {self.literature}", ""]
        out += [markdown_table(self.table), ""]
        for p in self.figures:
            rel = p.name if self.out_dir and p.parent == self.out_dir else str(p)
            out += [f"![{p.stem}]({rel})", ""]
        out += [
            f"Size `{self.size}`, seed {self.seed}, {self.seconds:.1f} s wall, "
            f"{self.cpu_seconds:.1f} s CPU. "
            "TensorBoard logs: `tensorboard --logdir tb` in this folder.",
            "",
            "## Numbers",
            "",
            "```json",
            json.dumps(_jsonable(self.numbers), indent=1, sort_keys=True),
            "```",
            "",
            "## Configuration",
            "",
            "```json",
            json.dumps(_jsonable(self.config), indent=1, sort_keys=True),
            "```",
            "",
        ]
        return "\n".join(out)

    def write(self, path: Path) -> Path:
        """Write :meth:`to_markdown` to ``path`` and return it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_markdown(), encoding="utf-8")
        return path
