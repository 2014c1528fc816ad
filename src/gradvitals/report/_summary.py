"""What matters most in a run: ranking findings, and small pure formatting helpers.

Shared by the console summary, the TensorBoard markdown and the HTML report, so all
three say the same thing first.

>>> from gradvitals.findings import FailureMode, Finding
>>> a = Finding(FailureMode.SATURATION, "net.1", 10, "90% saturated")
>>> b = Finding(FailureMode.NONFINITE, None, 30, "loss is NaN")
>>> most_important([a, b]).kind.value
'nonfinite'
>>> fmt_value(0.000123456), fmt_value(0.5), fmt_value(float("nan"))
('1.23e-04', '0.5', '-')
>>> where(a), where(b)
(' in net.1', '')
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from gradvitals.findings import Finding
from gradvitals.remedies import urgency

__all__ = [
    "cause_text",
    "fmt_value",
    "most_important",
    "rank_findings",
    "repair_outcome",
    "sentence",
    "to_json",
    "where",
]


def _rank_key(f: Finding) -> tuple[int, int, int]:
    # the mode registry's urgency; a "could not repair" finding outranks one of the same
    # kind that was handled
    return (urgency(f.kind), 0 if f.final else 1, f.step)


def rank_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings most urgent first: by the mode registry's urgency, unrepaired first, then
    earliest."""
    return sorted(findings, key=_rank_key)


def most_important(findings: Iterable[Finding]) -> Finding | None:
    """The finding to act on first, or None for a healthy run."""
    ranked = rank_findings(findings)
    return ranked[0] if ranked else None


def cause_text(f: Finding, *, limit: int = 160) -> str:
    """``"cause: <cause> (<what decided it>)"``, or ``""`` when the cause is unknown.

    >>> from gradvitals.findings import Cause, FailureMode, Finding
    >>> f = Finding(FailureMode.NONFINITE, "fc1", 3, "NaN", cause=Cause.NONFINITE_INPUT,
    ...             evidence={"cause_evidence": "the batch of step 3 held NaN"})
    >>> cause_text(f)
    'cause: nonfinite_input (the batch of step 3 held NaN)'
    """
    value = getattr(f.cause, "value", str(f.cause))
    if value == "unknown":
        return ""
    why = str(f.evidence.get("cause_evidence") or "").strip()
    if len(why) > limit:
        why = why[: limit - 1].rstrip() + "…"
    return f"cause: {value}" + (f" ({why})" if why else "")


def where(f: Finding) -> str:
    """``" in <layer>"``, or ``""`` for a model-wide finding."""
    return f" in {f.layer}" if f.layer else ""


def sentence(text: str) -> str:
    """``text`` ending with exactly one full stop (unless it ends in ``!``/``?``)."""
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


def fmt_value(x: float | None) -> str:
    """A statistic with 3 significant digits; ``-`` when missing or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    x = float(x)
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4):
        return f"{x:.2e}"
    return f"{x:.3g}"


def repair_outcome(repair: Mapping[str, Any]) -> str:
    """``"healthy after"``, ``"still failing after"`` or ``"outcome unknown"``."""
    ok = repair.get("healthy_after")
    if ok is None:
        return "outcome unknown"
    return "healthy after" if ok else "still failing after"


def _default(obj: Any) -> Any:
    """JSON fallback for numpy scalars/arrays, enums and paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "value"):
        return obj.value
    return str(obj)


def to_json(obj: Any) -> str:
    """JSON that accepts numpy values (NaN stays ``NaN``, which Python reads back).

    >>> to_json({"x": __import__("numpy").float32(0.5), "n": float("nan")})
    '{"x": 0.5, "n": NaN}'
    """
    return json.dumps(obj, default=_default)
