"""Markdown for TensorBoard's Text tab: findings, repairs and the final summary.

Names and messages are HTML-escaped (TensorBoard renders markdown as HTML); code goes
in fenced blocks, which markdown shows verbatim.

>>> from gradvitals.findings import FailureMode, Finding, Remedy
>>> f = Finding(FailureMode.DYING_RELU, "net.<1>", 40, "62% of units dead",
...             remedies=[Remedy("Lower the learning rate", "too big", "lr *= 0.1")])
>>> print(finding_markdown(f))
### dying_relu in `net.&lt;1&gt;` at step 40
62% of units dead.
<BLANKLINE>
1. **Lower the learning rate**: too big
<BLANKLINE>
   ```python
   lr *= 0.1
   ```
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from gradvitals.findings import Finding
from gradvitals.report._summary import cause_text, most_important, repair_outcome, sentence

__all__ = ["finding_markdown", "findings_markdown", "repair_markdown", "summary_markdown"]


def _esc(text: object) -> str:
    return html.escape(str(text), quote=False)


def _code_block(code: str, indent: str = "   ") -> str:
    fence = "````" if "```" in code else "```"
    lines = [f"{fence}python", *code.splitlines(), fence]
    return "\n".join(indent + line for line in lines)


def finding_markdown(f: Finding, *, max_remedies: int = 3) -> str:
    """One finding: a heading, the message, and its first remedies with code."""
    layer = f" in `{_esc(f.layer)}`" if f.layer else ""
    final = " (could not repair)" if f.final else ""
    out = [f"### {f.kind.value}{layer} at step {f.step}{final}"]
    cause = cause_text(f)
    if cause:
        out.append(f"**{_esc(sentence(cause))}**")
    out.append(_esc(sentence(f.message)))
    for c in f.consequences:
        where = f" in `{_esc(c.layer)}`" if c.layer else ""
        out.append(
            f"- which caused {c.kind.value}{where} at step {c.step}: {_esc(sentence(c.message))}"
        )
    for i, r in enumerate(f.remedies[:max_remedies], 1):
        out.append("")
        out.append(f"{i}. **{_esc(r.action)}**: {_esc(r.why)}")
        if r.code:
            out.append("")
            out.append(_code_block(r.code))
    return "\n".join(out)


def findings_markdown(findings: Iterable[Finding]) -> str:
    """Several findings, separated by rules."""
    return "\n\n---\n\n".join(finding_markdown(f) for f in findings)


def repair_markdown(repair: Mapping[str, Any]) -> str:
    """One repair record as a line of markdown.

    >>> repair_markdown({"step": 130, "action": "lower_lr", "kind": "dying_relu",
    ...                  "layer": "net.3", "reason": "dead units", "healthy_after": True})
    '**Repair at step 130**: `lower_lr` for dying_relu in `net.3`: dead units (healthy after).'
    """
    kind = repair.get("kind") or "a failure"
    kind = getattr(kind, "value", kind)
    layer = f" in `{_esc(repair['layer'])}`" if repair.get("layer") else ""
    reason = repair.get("reason") or ""
    reason = f": {_esc(reason)}" if reason else ""
    return (
        f"**Repair at step {repair.get('step', '?')}**: `{_esc(repair.get('action', '?'))}` "
        f"for {_esc(kind)}{layer}{reason} ({repair_outcome(repair)})."
    )


def summary_markdown(findings: list[Finding]) -> str:
    """The end-of-run summary: healthy, or what to do first and every finding."""
    first = most_important(findings)
    if first is None:
        return "**Healthy**: no failures found."
    head = [f"**{len(findings)} failure(s) found.**"]
    if first.remedies:
        r = first.remedies[0]
        head.append(
            f"What to do first ({first.kind.value}{' in `' + _esc(first.layer) + '`' if first.layer else ''}): "
            f"**{_esc(r.action)}**"
        )
        if r.code:
            head.append(_code_block(r.code, indent=""))
    return "\n\n".join([*head, "---", findings_markdown(findings)])
