"""Framework-free repair bookkeeping shared by the PyTorch and Keras repairers.

The adapters apply actions to their framework's model; *which* action comes next,
whether a window is clean enough to snapshot, and what a repair record and a
"could not repair" finding say are decided here, once.

>>> from gradvitals.remedies._policy import RepairPolicy
>>> from gradvitals.findings import FailureMode
>>> done = [{"kind": "dying_relu", "action": "lower_lr"}]
>>> next_actions(RepairPolicy(), done, FailureMode.DYING_RELU)
['leaky_variant', 'reinit_dead']
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from enum import Enum
from typing import Any

from gradvitals.detectors import Thresholds, has_nonfinite
from gradvitals.findings import FailureMode, Finding
from gradvitals.remedies._modes import remedies_for
from gradvitals.remedies._policy import RepairPolicy
from gradvitals.stats import WindowRecord

__all__ = [
    "give_up_finding",
    "kind_records",
    "next_actions",
    "repair_line",
    "repair_record",
    "unclean_reason",
]


def unclean_reason(
    record: WindowRecord,
    t: Thresholds,
    pending: str | None,
    recent_norms: Sequence[float],
) -> str | None:
    """Why a window without findings is not clean enough to snapshot, or None.

    Besides findings, a window is suspect when it is on its way to one: a NaN/Inf, a
    gradient norm ``explode_factor`` x its recent median, a step of a quarter of a
    layer's weights (the exploding detector's own corroboration level), a layer over
    the dead or saturated threshold, or a detector counting bad windows (``pending``
    names its mode).
    """
    if has_nonfinite(record):
        return "non-finite values"
    g = record.total_grad_norm
    if (
        recent_norms
        and math.isfinite(g)
        and g >= t.explode_factor * statistics.median(recent_norms)
    ):
        return f"the gradient norm jumped to {g:.3g}"
    for lay in record.layers.values():
        u = lay.update_ratio
        if math.isfinite(u) and u >= 0.25 * t.explode_update_ratio:
            return f"{lay.name}'s step was {u:.2g}x its weights"
    for name, s in record.sites.items():
        if (
            s.relu_like
            and s.units
            and s.n_examples >= t.min_examples
            and s.dead_fraction >= t.dead_fraction
        ):
            return f"{name}: {s.dead_fraction:.0%} dead units"
        if s.saturating and s.n_elements and s.saturation >= t.saturation:
            return f"{name}: {s.saturation:.0%} saturated"
    if pending is not None:
        return f"{pending} pending"
    return None


def kind_records(repairs: Sequence[dict[str, Any]], kind: Enum) -> list[dict[str, Any]]:
    """The repair records of one failure mode, oldest first."""
    return [r for r in repairs if r.get("kind") == kind.value]


def next_actions(
    policy: RepairPolicy, repairs: Sequence[dict[str, Any]], kind: Enum, cause: Any = None
) -> list[str]:
    """The policy's actions for ``kind`` (and ``cause``) after those already used.

    The earlier repairs of the mode are replayed against this cause's list: each one
    moves past its action where the list has it, and is skipped where it does not (a
    poisoned batch skipped earlier does not use up the learning-rate actions of a later
    divergence). Replayed from the records, so it resumes after ``load_state_dict`` too.
    """
    names = policy.actions_for(kind, cause)
    start = 0
    for r in kind_records(repairs, kind):
        hit = next((i for i in range(start, len(names)) if names[i] == r["action"]), None)
        if hit is not None:
            start = hit + 1
    return list(names[start:])


def repair_record(
    kind: FailureMode,
    findings: Sequence[Finding],
    record: WindowRecord,
    action: str,
    detail: str,
    rollback: int | None,
    attempt: int,
    cause: Any = None,
) -> dict[str, Any]:
    """One repair, as kept in ``repairs`` and written to TensorBoard."""
    back = (
        f"rolled back to the healthy state of step {rollback}"
        if rollback is not None
        else "no healthy state to roll back to"
    )
    layers = [f.layer for f in findings if f.layer]
    return {
        "step": record.step,
        "kind": kind.value,
        "layer": layers[0] if layers else None,
        "action": action,
        "reason": f"{back}; {detail}"
        + (f"; the findings also named {', '.join(layers[1:])}" if len(layers) > 1 else ""),
        "healthy_after": None,
        "attempt": attempt,
        "rollback_step": rollback,
        "cause": str(getattr(cause, "value", cause or "unknown")),
    }


def repair_line(rec: dict[str, Any], max_attempts: int) -> str:
    """The console line of one repair record."""
    return (
        f"gradvitals: step {rec['step']} repair {rec['attempt']}/{max_attempts} for "
        f"{rec['kind']}{' in ' + rec['layer'] if rec['layer'] else ''}: "
        f"{rec['action']}: {rec['reason']}"
    )


def give_up_finding(
    kind: FailureMode,
    findings: Sequence[Finding],
    record: WindowRecord,
    why: str,
    repairs: Sequence[dict[str, Any]],
    clip_norm: float | None,
    *,
    framework: str = "torch",
) -> Finding:
    """The final "could not repair" finding for a mode out of actions or attempts."""
    tried = [r["action"] for r in kind_records(repairs, kind)]
    layer = next((f.layer for f in findings if f.layer), None)
    return Finding(
        kind=kind,
        layer=layer,
        step=record.step,
        message=(
            f"could not repair: {kind.value} came back at step {record.step}; {why}"
            + (f" (tried: {', '.join(tried)})" if tried else "")
            + ". Training goes on unrepaired for this failure mode"
        ),
        evidence={"attempts": len(tried), "actions": tried, "last": findings[0].message},
        remedies=remedies_for(kind, findings[0].cause, clip_norm=clip_norm, framework=framework),
        final=True,
    )
