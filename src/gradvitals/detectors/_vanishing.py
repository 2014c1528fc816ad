"""Vanishing gradients: early layers get orders of magnitude less gradient and barely move.

With layers in forward order and :math:`r_l = \\|g_l\\|_2/\\sqrt{n_l}` the RMS gradient,
a window is *vanishing* when

- :math:`r_{first} / \\max_{l>first} r_l <` ``vanishing_ratio`` (1e-3), and
- the first layer barely moves: its update ratio is below ``vanishing_update_ratio``
  (1e-2) of the largest later layer's (skipped when updates are not measured), and
- the loss has not converged: its window mean is above ``converged_loss_ratio`` of the
  first window's (skipped when no loss is observed), and
- it is not explained by dead ReLU units or saturated units in the same window (those
  detectors own that case: a dead layer also cuts the gradient to the layers below).

It fires after ``vanishing_patience`` consecutive vanishing windows. Only weight layers
(Linear, Conv, recurrent) are compared; normalization and embedding layers are not.

>>> from gradvitals.stats import LayerStats, WindowRecord
>>> def rec(i, g_first):
...     layers = {n: LayerStats(n, grad_norm=g, weight_norm=1.0, update_norm=g, numel=100)
...               for n, g in [("fc1", g_first), ("fc2", 1e-2), ("fc3", 1e-1)]}
...     return WindowRecord(i, i, i, layers=layers)
>>> d = VanishingGradientDetector()
>>> d.update(rec(0, 1e-7)), [f.layer for f in d.update(rec(1, 1e-7))]
([], ['fc1'])
>>> VanishingGradientDetector().update(rec(0, 1e-2)) + VanishingGradientDetector().update(rec(1, 1e-2))
[]
"""

from __future__ import annotations

import math
from typing import Any

from gradvitals.detectors._base import EdgeTrigger
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.findings import FailureMode, Finding
from gradvitals.stats import SATURATING, WindowRecord

__all__ = ["VanishingGradientDetector"]


def _ok(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))


class VanishingGradientDetector:
    kind = FailureMode.VANISHING_GRADIENT

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.t = thresholds or Thresholds()
        self.trigger = EdgeTrigger(
            patience=self.t.vanishing_patience, recover=self.t.recover_windows
        )
        self.first_loss: float | None = None

    def _explained(self, record: WindowRecord) -> bool:
        for s in record.sites.values():
            enough = s.relu_like and s.n_examples >= self.t.min_examples and s.units
            if enough and s.dead_fraction >= self.t.dead_fraction:
                return True
            saturating = s.activation in SATURATING and _ok(s.saturation)
            if saturating and s.saturation >= self.t.saturation:
                return True
        return False

    def measure(self, record: WindowRecord) -> dict[str, Any] | None:
        """The vanishing evidence of one window, or None when it cannot be judged."""
        layers = [
            lay
            for lay in record.layers.values()
            if lay.has_grad and lay.is_weight_layer and lay.numel > 0 and _ok(lay.grad_norm)
        ]
        if len(layers) < 2:
            return None
        first, later = layers[0], layers[1:]
        top = max(later, key=lambda lay: lay.grad_rms)
        if top.grad_rms <= 0:
            return None
        grad_ratio = first.grad_rms / top.grad_rms
        ups = [lay.update_ratio for lay in later if _ok(lay.update_ratio)]
        upd_ratio = float("nan")
        if ups and _ok(first.update_ratio) and max(ups) > 0:
            upd_ratio = first.update_ratio / max(ups)
        below = [lay.name for lay in layers if lay.grad_rms < top.grad_rms * self.t.vanishing_ratio]
        return {
            "first_layer": first.name,
            "top_layer": top.name,
            "grad_rms_first": first.grad_rms,
            "grad_rms_top": top.grad_rms,
            "grad_ratio": grad_ratio,
            "update_ratio_first": first.update_ratio,
            "update_ratio_relative": upd_ratio,
            "layers_below": below,
        }

    def update(self, record: WindowRecord) -> list[Finding]:
        loss = record.loss.mean if record.loss is not None and record.loss.count else float("nan")
        if self.first_loss is None and _ok(loss):
            self.first_loss = loss
        ev = self.measure(record)
        bad = False
        if ev is not None:
            bad = ev["grad_ratio"] < self.t.vanishing_ratio
            if bad and _ok(ev["update_ratio_relative"]):
                bad = ev["update_ratio_relative"] < self.t.vanishing_update_ratio
            if bad and _ok(loss) and self.first_loss:
                bad = loss > self.t.converged_loss_ratio * self.first_loss
            if bad and self._explained(record):
                bad = False
        if ev is None or not self.trigger.observe("model", bad):
            return []
        ev = dict(ev, threshold=self.t.vanishing_ratio, loss=loss, first_loss=self.first_loss)
        n_below = len(ev["layers_below"])
        msg = (
            f"{ev['first_layer']} gets an RMS gradient of {ev['grad_rms_first']:.2e}, "
            f"{ev['grad_ratio']:.1e} of {ev['top_layer']}'s {ev['grad_rms_top']:.2e} "
            f"(threshold {self.t.vanishing_ratio:g}); {n_below} layer(s) are below it"
        )
        if _ok(ev["update_ratio_relative"]):
            msg += f", and its update ratio is {ev['update_ratio_first']:.1e}"
        if _ok(loss) and self.first_loss:
            msg += f"; the loss is still {loss:.3g} (started at {self.first_loss:.3g})"
        return [
            Finding(
                kind=self.kind,
                layer=ev["first_layer"],
                step=record.step,
                message=msg,
                evidence=ev,
            )
        ]

    def rearm(self, forget_history: bool = False) -> None:
        self.trigger.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger.state_dict(), "first_loss": self.first_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state.get("trigger", {}))
        self.first_loss = state.get("first_loss")
