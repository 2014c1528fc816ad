"""Exploding gradients: norms, steps or the loss grow far beyond their own history.

A window is *exploding* when any of these holds (after ``explode_history`` earlier
healthy windows, except the update-ratio rule):

- the global gradient norm is at least ``explode_factor`` (10) x the median of the
  earlier healthy windows' norms, *and* the run is getting worse: the loss rose more
  than ``explode_loss_rise`` (10%) above the median of the earlier healthy windows' and
  has not converged
  (or, when no loss is observed, some layer's update ratio is
  at least a quarter of ``explode_update_ratio``). Healthy nets leaving their initial
  plateau grow their gradient norm 10-20x while the loss falls: that is not exploding;
- the ratio of first- to last-layer RMS gradient (growth toward the input) is at least
  ``explode_factor`` x its own median, and above 1, with the same corroboration;
- the mean loss is at least ``explode_factor`` x its median *and* above the first
  window's loss (the run is diverging, not spiking on a tiny loss);
- the mean loss is at least ``explode_factor`` x the first window's (BatchNorm can keep
  gradient norms level while the loss blows up);
- some layer's step is at least ``explode_update_ratio`` (1.0) of its weights.

It fires once per episode, before NaNs appear when the growth is visible in a window.
The layer named is the one whose gradient grew most against its own history.

>>> from gradvitals.stats import LayerStats, WindowRecord
>>> from gradvitals.stats import LossStats
>>> def rec(i, g, loss):
...     return WindowRecord(i, i, i, layers={"fc1": LayerStats("fc1", grad_norm=g,
...                         weight_norm=10.0, update_norm=0.01, numel=4)},
...                         loss=LossStats(sum=loss, count=1))
>>> d = ExplodingGradientDetector()
>>> [len(d.update(rec(i, g, l))) for i, (g, l) in enumerate([(1, 2.3), (1.2, 2.2), (0.9, 2.1), (50, 2.9)])]
[0, 0, 0, 1]
>>> d = ExplodingGradientDetector()  # the same growth while the loss falls: healthy
>>> [len(d.update(rec(i, g, l))) for i, (g, l) in enumerate([(1, 2.3), (1.2, 2.2), (0.9, 2.1), (50, 1.5)])]
[0, 0, 0, 0]
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from gradvitals.detectors._base import EdgeTrigger
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.findings import FailureMode, Finding
from gradvitals.stats import WindowRecord

__all__ = ["ExplodingGradientDetector", "suggest_clip_norm"]

_HISTORY = 8  # windows of healthy history kept


def _ok(x: float | None) -> bool:
    return x is not None and not (math.isnan(x) or math.isinf(x))


def suggest_clip_norm(healthy_norms: list[float]) -> float | None:
    """A clipping threshold from healthy global gradient norms: 2 x their median.

    >>> suggest_clip_norm([1.0, 2.0, 3.0])
    4.0
    """
    vals = [v for v in healthy_norms if _ok(v) and v > 0]
    return 2.0 * median(vals) if vals else None


class ExplodingGradientDetector:
    kind = FailureMode.EXPLODING_GRADIENT

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.t = thresholds or Thresholds()
        self.trigger = EdgeTrigger(patience=1, recover=self.t.recover_windows)
        self.norms: list[float] = []
        self.layer_norms: dict[str, list[float]] = {}
        self.depth_ratios: list[float] = []
        self.losses: list[float] = []
        self.first_loss: float | None = None
        self.windows = 0

    @property
    def clip_norm(self) -> float | None:
        return suggest_clip_norm(self.norms)

    def _depth_ratio(self, record: WindowRecord) -> float:
        layers = [
            lay
            for lay in record.layers.values()
            if lay.has_grad and lay.is_weight_layer and lay.numel and _ok(lay.grad_norm)
        ]
        if len(layers) < 2 or layers[-1].grad_rms <= 0:
            return float("nan")
        return layers[0].grad_rms / layers[-1].grad_rms

    def update(self, record: WindowRecord) -> list[Finding]:
        f = self.t.explode_factor
        enough = len(self.norms) >= self.t.explode_history
        reasons: list[str] = []
        ev: dict[str, Any] = {"factor": f}
        g = record.total_grad_norm
        loss = record.loss.mean if record.loss is not None and record.loss.count else float("nan")
        max_update = max(
            (lay.update_ratio for lay in record.layers.values() if _ok(lay.update_ratio)),
            default=0.0,
        )
        converged = (
            _ok(loss)
            and self.first_loss is not None
            and loss <= self.t.converged_loss_ratio * self.first_loss
        )
        if _ok(loss) and self.losses:
            # a real rise, not a 1% wobble; and a converged net's one hard batch is not a blow-up
            # against the median of healthy history, not the previous window: a window
            # already inside the episode must not become the reference
            worse = loss > (1.0 + self.t.explode_loss_rise) * median(self.losses) and not converged
        else:
            worse = max_update >= 0.25 * self.t.explode_update_ratio
        ev["loss_rising"] = bool(worse)
        ref_norm = median(self.norms) if self.norms else 0.0
        if enough and worse and _ok(g) and ref_norm > 0 and g >= f * ref_norm:
            ref = ref_norm
            reasons.append(
                f"the gradient norm reached {g:.3g}, {g / ref:.0f}x its median {ref:.3g}"
            )
            ev.update(grad_norm=g, grad_norm_median=ref)
        dr = self._depth_ratio(record)
        if enough and worse and _ok(dr) and self.depth_ratios and dr > 1:
            ref = median(self.depth_ratios)
            if ref > 0 and dr >= f * ref:
                reasons.append(
                    f"gradients grow toward the input: first/last RMS {dr:.3g} (median {ref:.3g})"
                )
                ev.update(depth_ratio=dr, depth_ratio_median=ref)
        if self.first_loss is None and _ok(loss):
            self.first_loss = loss
        if enough and _ok(loss) and len(self.losses) >= self.t.explode_history:
            ref = median(self.losses)
            if (
                ref > 0
                and loss >= f * ref
                and self.first_loss is not None
                and loss > self.first_loss
            ):
                reasons.append(
                    f"the loss rose to {loss:.3g}, {loss / ref:.0f}x its median {ref:.3g}"
                )
                ev.update(loss=loss, loss_median=ref)
        if (
            _ok(loss)
            and self.first_loss is not None
            and self.first_loss > 0
            and loss >= f * self.first_loss
            and not any("the loss rose" in r for r in reasons)
        ):
            # diverged: BatchNorm can keep gradient norms level while the loss blows up
            reasons.append(f"the loss reached {loss:.3g}, {loss / self.first_loss:.0f}x its start")
            ev.update(loss=loss, first_loss=self.first_loss)
        big_steps = {
            n: lay.update_ratio
            for n, lay in record.layers.items()
            if _ok(lay.update_ratio) and lay.update_ratio >= self.t.explode_update_ratio
        }
        if big_steps and self.windows > 0:
            n, u = max(big_steps.items(), key=lambda kv: kv[1])
            reasons.append(f"{n}'s step was {u:.2g}x its weights")
            ev.update(update_ratio=u, update_ratio_layer=n)

        # attribute to the layer that grew most against its own history
        growth: dict[str, float] = {}
        for n, lay in record.layers.items():
            hist = self.layer_norms.get(n)
            if hist and _ok(lay.grad_norm) and median(hist) > 0:
                growth[n] = lay.grad_norm / median(hist)
        layer = max(growth, key=lambda n: growth[n]) if growth else ev.get("update_ratio_layer")

        bad = bool(reasons)
        self.windows += 1
        if not bad:
            if _ok(g):
                self.norms = (self.norms + [g])[-_HISTORY:]
            if _ok(dr):
                self.depth_ratios = (self.depth_ratios + [dr])[-_HISTORY:]
            if _ok(loss):
                self.losses = (self.losses + [loss])[-_HISTORY:]
            for n, lay in record.layers.items():
                if _ok(lay.grad_norm):
                    self.layer_norms[n] = (self.layer_norms.get(n, []) + [lay.grad_norm])[
                        -_HISTORY:
                    ]
        if not self.trigger.observe("model", bad):
            return []
        if layer is not None and layer in growth:
            ev["layer_growth"] = growth[layer]
        ev["reasons"] = reasons
        return [
            Finding(
                kind=self.kind,
                layer=layer,
                step=record.step,
                message="; ".join(reasons),
                evidence=ev,
            )
        ]

    def rearm(self, forget_history: bool = False) -> None:
        self.trigger.reset()
        if forget_history:
            self.norms, self.layer_norms, self.depth_ratios, self.losses = [], {}, [], []

    def state_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger.state_dict(),
            "norms": list(self.norms),
            "layer_norms": {k: list(v) for k, v in self.layer_norms.items()},
            "depth_ratios": list(self.depth_ratios),
            "losses": list(self.losses),
            "first_loss": self.first_loss,
            "windows": self.windows,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state.get("trigger", {}))
        self.norms = list(state.get("norms", []))
        self.layer_norms = {k: list(v) for k, v in state.get("layer_norms", {}).items()}
        self.depth_ratios = list(state.get("depth_ratios", []))
        self.losses = list(state.get("losses", []))
        self.first_loss = state.get("first_loss")
        self.windows = int(state.get("windows", 0))
