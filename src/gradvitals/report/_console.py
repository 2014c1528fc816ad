"""Plain-text findings for the console: one line per finding, and an end-of-run summary.

Pure functions over :class:`~gradvitals.findings.Finding`; ``monitor.report()`` prints them.

>>> from gradvitals.findings import FailureMode, Finding, Remedy
>>> f = Finding(FailureMode.DYING_RELU, "net.3", 120, "62% of units dead for 3 windows",
...             remedies=[Remedy("Lower the learning rate (try 10x lower)", "too big",
...                              "for g in optimizer.param_groups: g['lr'] *= 0.1")])
>>> format_finding(f)
'gradvitals: step 120 dying_relu in net.3: 62% of units dead for 3 windows. Try: Lower the learning rate (try 10x lower)'
>>> print(summary_text([], history_len=12))
gradvitals: healthy, no failures found in 12 windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gradvitals.findings import Finding
from gradvitals.report._summary import cause_text, most_important, repair_outcome, sentence, where

__all__ = ["format_finding", "summary_text"]


def format_finding(f: Finding) -> str:
    """One line: step, kind, layer, the cause (when known), message, the first remedy."""
    cause = cause_text(f)
    lead = f"{sentence(cause)} " if cause else ""
    when = f"step {f.step}" if f.step >= 0 else "pre-flight"
    line = f"gradvitals: {when} {f.kind.value}{where(f)}: {lead}{sentence(f.message)}"
    if f.final:
        line += " Could not repair."
    if f.remedies:
        line += f" Try: {f.remedies[0].action}"
    return line


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _repair_line(r: Mapping[str, Any]) -> str:
    kind = r.get("kind") or "a failure"
    kind = getattr(kind, "value", kind)
    layer = f" in {r['layer']}" if r.get("layer") else ""
    reason = f": {r['reason']}" if r.get("reason") else ""
    return f"  step {r.get('step', '?')} {r.get('action', '?')} for {kind}{layer}{reason} ({repair_outcome(r)})"


def summary_text(
    findings: Sequence[Finding],
    history_len: int,
    repairs: Iterable[Mapping[str, Any]] = (),
    *,
    max_remedies: int = 3,
) -> str:
    """A multi-line summary of a run: healthy or not, what to try first, every finding
    with its top remedies and code, and the repairs made.

    Args:
        findings: the run's findings, any order.
        history_len: the number of windows observed.
        repairs: repair records (``{"step", "action", "reason", "kind", "layer",
            "healthy_after"}``).
        max_remedies: remedies listed per finding.
    """
    repairs = list(repairs)
    windows = _plural(history_len, "window")
    first = most_important(findings)
    if first is None:
        line = f"gradvitals: healthy, no failures found in {windows}."
        if repairs:
            line = line[:-1] + f" ({_plural(len(repairs), 'repair')} made)."
            return "\n".join([line, "Repairs:", *(_repair_line(r) for r in repairs)])
        return line
    out = [f"gradvitals: {_plural(len(findings), 'failure')} found in {windows}."]
    if first.remedies:
        r = first.remedies[0]
        out.append(f"Do this first ({first.kind.value}{where(first)}): {r.action}")
        if r.code:
            out.extend("    " + line for line in r.code.splitlines())
    out.append("")
    for i, f in enumerate(sorted(findings, key=lambda f: f.step), 1):
        final = " [could not repair]" if f.final else ""
        cause = cause_text(f)
        lead = f"{sentence(cause)} " if cause else ""
        when = f"step {f.step}" if f.step >= 0 else "before training (lint)"
        out.append(f"{i}. {when} {f.kind.value}{where(f)}{final}: {lead}{sentence(f.message)}")
        for c in f.consequences:
            out.append(
                f"   which caused: step {c.step} {c.kind.value}{where(c)}: {sentence(c.message)}"
            )
        for j, rem in enumerate(f.remedies[:max_remedies]):
            out.append(f"   {'Try' if j == 0 else 'Or'}: {rem.action}")
            if rem.code:
                out.extend("       " + line for line in rem.code.splitlines())
    if repairs:
        out.append("")
        out.append("Repairs:")
        out.extend(_repair_line(r) for r in repairs)
    return "\n".join(out)
