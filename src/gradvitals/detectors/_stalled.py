"""Stalled: the loss stays where it started while nothing moves anywhere.

A layer is *still* in a window when

- its gradient is exactly 0 (whatever weight decay does to it), or it received none
  and its measured step is 0 (a step without a gradient means the hooks missed it;
  with neither measured nothing is known and the layer does not count as still), or
- its step is measured and at most ``stall_update_ratio`` (1e-6) of its weights,
  :math:`\\|\\Delta w\\|_2 \\le 10^{-6}\\,\\|w\\|_2`, or
- its step is not measured and its gradient is at most ``stall_update_ratio`` of its
  weights (it cannot move them more than that at a learning rate up to 1).

A window is *stalled* when every layer is still and the loss has not fallen by more
than ``1 - stall_loss_ratio`` (half) of the first window's magnitude,
:math:`L \\ge L_0 - (1 - 0.5)|L_0|` (a run whose gradients vanished because it
converged is not stalled); without an observed loss the layers decide alone. It fires once per episode after ``stall_patience`` (3) stalled windows in a
row. Unlike ``vanishing_gradient`` (the first layers starve while the last ones
learn), nothing flows anywhere: a constant output (a one-unit softmax), a graph cut
before the loss (``.item()``, ``torch.no_grad()``, a NumPy round trip), every
parameter frozen, a learning rate of about 0.

The cause (``evidence["cause_evidence"]`` says what decided it):

- ``Cause.NO_GRADIENT`` when no layer got a gradient above ``stall_update_ratio`` of
  its weights;
- ``Cause.LEARNING_RATE`` when gradients arrive but every step is about 0;
- a constant output (``Cause.OUTPUT_ACTIVATION``) looks like ``NO_GRADIENT`` here:
  records cannot tell it from a cut graph, the pre-flight lint can.

>>> from gradvitals.stats import LayerStats, LossStats, WindowRecord
>>> def rec(i, grad, update):
...     lay = LayerStats("fc", grad_norm=grad, weight_norm=2.0, update_norm=update, numel=8)
...     return WindowRecord(i, i, i, layers={"fc": lay}, loss=LossStats(sum=2.3, count=1))
>>> d = StalledDetector()
>>> [len(d.update(rec(i, 0.5, 0.0))) for i in range(4)]  # gradients arrive, no step
[0, 0, 1, 0]
>>> d = StalledDetector()
>>> [f.cause.value for i in range(3) for f in d.update(rec(i, 0.0, 0.0))]
['no_gradient']
>>> d = StalledDetector()  # a healthy step: 1e-3 of the weights
>>> [len(d.update(rec(i, 0.5, 2e-3))) for i in range(4)]
[0, 0, 0, 0]
"""

from __future__ import annotations

import math
from typing import Any

from gradvitals.detectors._base import EdgeTrigger
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.findings import Cause, FailureMode, Finding
from gradvitals.stats import LayerStats, WindowRecord

__all__ = ["StalledDetector", "layer_motion"]


def _finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))


def layer_motion(lay: LayerStats, ratio: float) -> tuple[bool, bool]:
    """``(no_gradient, still)`` of one layer in one window, at threshold ``ratio``.

    ``no_gradient``: no gradient, or one of at most ``ratio`` of the weight norm.
    ``still``: a gradient of exactly 0 (whatever weight decay does); or no gradient
    and a measured step of at most ``ratio`` of the weights (with neither measured
    nothing is known: not still); or a gradient and a measured step of at most
    ``ratio``; or, the step not measured, a gradient of at most ``ratio``.

    >>> layer_motion(LayerStats("fc", grad_norm=0.0, weight_norm=1.0, update_norm=3e-4), 1e-6)
    (True, True)
    >>> layer_motion(LayerStats("fc", grad_norm=0.3, weight_norm=1.0, update_norm=0.0), 1e-6)
    (False, True)
    >>> layer_motion(LayerStats("fc", grad_norm=0.3, weight_norm=1.0), 1e-6)  # no step measured
    (False, False)
    >>> layer_motion(LayerStats("fc", weight_norm=1.0, has_grad=False), 1e-6)  # nothing measured
    (True, False)
    """
    w = lay.weight_norm if _finite(lay.weight_norm) else 0.0
    g, u = lay.grad_norm, lay.update_norm
    if lay.has_grad and g == 0.0:
        # measured zero: a weight-decay step (AdamW shrinks every weight) is no learning
        return True, True
    if not lay.has_grad:
        # no gradient seen: only a measured step tells a cut graph (no step) from hooks
        # that missed the gradient (the weights move)
        return True, _finite(u) and u <= ratio * w
    no_gradient = _finite(g) and g <= ratio * w
    if _finite(u):
        return no_gradient, u <= ratio * w
    return no_gradient, no_gradient


class StalledDetector:
    kind = FailureMode.STALLED

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.t = thresholds or Thresholds()
        self.trigger = EdgeTrigger(patience=self.t.stall_patience, recover=self.t.recover_windows)
        self.first_loss: float | None = None

    def measure(self, record: WindowRecord) -> dict[str, Any] | None:
        """The window's motion: which layers got no gradient, which did not move.

        None when the window has no layer to judge.
        """
        if not record.layers:
            return None
        r = self.t.stall_update_ratio
        no_grad, moving = [], []
        grad_ratio = update_ratio = 0.0
        for name, lay in record.layers.items():
            none, still = layer_motion(lay, r)
            if none:
                no_grad.append(name)
            if not still:
                moving.append(name)
            w = lay.weight_norm
            if lay.has_grad and _finite(lay.grad_norm) and _finite(w) and w > 0:
                grad_ratio = max(grad_ratio, lay.grad_norm / w)
            if _finite(lay.update_ratio):
                update_ratio = max(update_ratio, lay.update_ratio)
        return {
            "layers": len(record.layers),
            "layers_without_gradient": len(no_grad),
            "moving_layers": moving[:8],
            "max_grad_ratio": grad_ratio,
            "max_update_ratio": update_ratio,
            "no_gradient": len(no_grad) == len(record.layers),
            "still": not moving,
        }

    def update(self, record: WindowRecord) -> list[Finding]:
        loss = record.loss.mean if record.loss is not None and record.loss.count else math.nan
        if self.first_loss is None and _finite(loss):
            self.first_loss = loss
        ev = self.measure(record)
        if ev is None:
            return []
        first = self.first_loss
        at_start = (
            not _finite(loss)
            or first is None
            or loss >= first - (1.0 - self.t.stall_loss_ratio) * abs(first)
        )
        bad = bool(ev["still"]) and at_start
        if not self.trigger.observe("model", bad):
            return []
        r = self.t.stall_update_ratio
        if ev["no_gradient"]:
            cause = Cause.NO_GRADIENT
            why = (
                f"no layer received a gradient: {ev['layers_without_gradient']} of "
                f"{ev['layers']} got none or at most {r:g} of their weight norm "
                f"(largest |g|/|w| {ev['max_grad_ratio']:.2g})"
            )
        else:
            cause = Cause.LEARNING_RATE
            why = (
                f"gradients arrive (largest |g|/|w| {ev['max_grad_ratio']:.2g}) but no layer "
                f"moves: the largest step is {ev['max_update_ratio']:.2g} of its weights "
                f"(threshold {r:g})"
            )
        where = (
            f"the loss is still {loss:.4g} (first window {first:.4g})"
            if _finite(loss) and first is not None
            else "no loss was observed"
        )
        msg = f"nothing trains for {self.t.stall_patience} windows: {why}; {where}"
        ev = dict(
            ev,
            loss=loss,
            first_loss=first,
            threshold=r,
            patience=self.t.stall_patience,
            cause_evidence=why,
        )
        return [
            Finding(
                kind=self.kind, layer=None, step=record.step, message=msg, evidence=ev, cause=cause
            )
        ]

    def rearm(self, forget_history: bool = False) -> None:
        self.trigger.reset()
        if forget_history:
            self.first_loss = None

    def state_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger.state_dict(), "first_loss": self.first_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state.get("trigger", {}))
        self.first_loss = state.get("first_loss")
