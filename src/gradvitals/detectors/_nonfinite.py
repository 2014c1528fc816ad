"""Non-finite values: the first step, and the first layer in forward order, with a NaN/Inf.

Looks at the loss (every observed step), the activations and the gradients (sampled
steps). Fires once per episode; re-arms after healthy windows. Steps that an AMP
``GradScaler`` skipped for inf gradients are not the model's fault and never reach
the record (the adapter drops them).

>>> from gradvitals.stats import LossStats, SiteStats, WindowRecord
>>> bad = WindowRecord(3, 30, 39, sites={"fc1.act": SiteStats("fc1.act", "relu", 4),
...                    "fc2.act": SiteStats("fc2.act", "relu", 4, n_nonfinite=4)},
...                    loss=LossStats(sum=1.0, count=10, n_nonfinite=3, first_nonfinite_step=37))
>>> [(f.layer, f.evidence["first_step"]) for f in NonfiniteDetector().update(bad)]
[('fc2.act', 37)]
"""

from __future__ import annotations

from typing import Any

from gradvitals.detectors._base import EdgeTrigger
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.findings import FailureMode, Finding
from gradvitals.stats import WindowRecord

__all__ = ["NonfiniteDetector", "has_nonfinite"]


def has_nonfinite(record: WindowRecord) -> bool:
    """True when any loss, activation or gradient in the window was NaN/Inf."""
    if record.loss is not None and record.loss.n_nonfinite:
        return True
    if any(s.n_nonfinite for s in record.sites.values()):
        return True
    return any(lay.n_grad_nonfinite for lay in record.layers.values())


class NonfiniteDetector:
    kind = FailureMode.NONFINITE

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.t = thresholds or Thresholds()
        self.trigger = EdgeTrigger(patience=1, recover=self.t.recover_windows)
        self.healthy_norms: list[float] = []

    def update(self, record: WindowRecord) -> list[Finding]:
        bad = has_nonfinite(record)
        if not bad:
            g = record.total_grad_norm
            if g == g:
                self.healthy_norms = (self.healthy_norms + [g])[-8:]
        if not self.trigger.observe("model", bad):
            return []
        act = [n for n, s in record.sites.items() if s.n_nonfinite]
        grads = [n for n, lay in record.layers.items() if lay.n_grad_nonfinite]
        layer = act[0] if act else (grads[0] if grads else None)
        where = []
        if record.loss is not None and record.loss.n_nonfinite:
            where.append(f"the loss ({record.loss.n_nonfinite} of {record.loss.count} steps)")
        if act:
            where.append(f"activations of {len(act)} layer(s), first {act[0]}")
        if grads:
            where.append(f"gradients of {len(grads)} layer(s), first {grads[0]}")
        first = None
        if record.loss is not None and record.loss.first_nonfinite_step is not None:
            first = record.loss.first_nonfinite_step
        first_step = first if first is not None else record.step
        msg = f"NaN/Inf in {', '.join(where)}; first seen at step {first_step}"
        return [
            Finding(
                kind=self.kind,
                layer=layer,
                step=record.step,
                message=msg,
                evidence={
                    "first_step": first_step,
                    "activation_layers": act,
                    "gradient_layers": grads,
                    "loss_nonfinite": 0 if record.loss is None else record.loss.n_nonfinite,
                },
            )
        ]

    def rearm(self, forget_history: bool = False) -> None:
        self.trigger.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger.state_dict(), "healthy_norms": list(self.healthy_norms)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state.get("trigger", {}))
        self.healthy_norms = list(state.get("healthy_norms", []))
