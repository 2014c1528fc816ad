"""Diverged plateau: the loss jumped far above its best and stays there, without a NaN.

With :math:`L_t` the window's mean loss, :math:`L_0` the first window's and
:math:`B_t = \\min_{s<t} L_s` the best window loss so far, the *scale* of progress is
:math:`S_t = \\max(|B_t|, L_0 - B_t)` (what was gained, or the loss itself while
little was gained). Then:

- **jump**: an episode opens when :math:`L_t - B_t \\ge` ``plateau_jump`` (0.4)
  :math:`\\times S_t`: 40% of the progress made is lost in one window, or the loss
  rose 40% above its best while little progress had been made; and the rise is
  not batch noise: it came with the learning-rate evidence below (large steps or a
  gradient-norm spike), or it is at least twice that (:math:`0.8\\,S`). A net that
  cannot learn (every ReLU dead) has window losses that wander by 40% with their
  batches and no large step behind them. Its reference is the best before the
  jump, :math:`B` and :math:`S`;
- **stays**: the episode goes on while :math:`L_t \\ge B + rS` or
  :math:`L_t \\ge L_0 - rS`, with :math:`r =` ``plateau_recover`` (0.1): the loss is
  neither back near its best nor clearly below where the run started (all progress
  lost, or none made since). A spike that recovers falls under both and closes the
  episode; a run that jumped before making progress must get clearly below its
  start;
- it fires once, after ``plateau_patience`` (4) windows of the episode, the jump's
  included. ``exploding_gradient`` owns rises beyond ``explode_factor`` x; this one
  owns the run that neither recovers nor produces a NaN.

Calibration (``benchmarks/detection.py``'s 240 runs of 300 steps, every=20, and the
zoo's GPT-2, BERT, ViT, LSTM, GRU, nanoGPT and ResNet-18 runs, every=5): on healthy
runs the largest one-window jump reached 3.8 S (a first SGD step on a tiny MLP) but
always closed within two windows, while GPT-2 at 100x its learning rate jumps by
0.47-0.76 S (seeds 0-4) and never gets below 0.9 of its start in the 13 windows
after. 0.4/0.1/4 fired on none of the 116 + 56 healthy runs (zoo: 35 of 67 steps,
21 of 200) and on 32 of 35 lr-100x zoo runs (the misses: nanoGPT, whose warm-up and
clipping keep it learning); 0.5 missed a GPT-2 seed; recover 0.05 or patience 3
fired on a 200-step BERT that spikes once after converging and recovers to a tenth
of its start.

Cause: ``Cause.LEARNING_RATE`` when the jump came with large steps (the median
layer's update ratio at least ``plateau_update_ratio`` (0.1) of its weights, in the
jump window or the one before) or with a gradient-norm spike (``explode_factor`` x the
median of the windows before); else ``Cause.UNKNOWN``. ``evidence["cause_evidence"]``
says which.

>>> from gradvitals.stats import LayerStats, LossStats, WindowRecord
>>> def rec(i, loss, step=1e-3):
...     lay = LayerStats("fc", grad_norm=1.0, weight_norm=1.0, update_norm=step, numel=4)
...     return WindowRecord(i, i, i, layers={"fc": lay}, loss=LossStats(sum=loss, count=1))
>>> d = DivergedPlateauDetector()  # 100x learning rate: a big step, a jump, no way back
>>> losses = [4.1, 7.1, 5.9, 4.6, 4.4, 4.3]
>>> [[f.cause.value for f in d.update(rec(i, x, 1.0 if i == 0 else 1e-2))]
...  for i, x in enumerate(losses)]
[[], [], [], [], ['learning_rate'], []]
>>> d = DivergedPlateauDetector()  # a spike that recovers
>>> [len(d.update(rec(i, x))) for i, x in enumerate([2.3, 1.5, 1.0, 2.0, 1.1, 0.9, 0.8])]
[0, 0, 0, 0, 0, 0, 0]
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from gradvitals.detectors._base import EdgeTrigger
from gradvitals.detectors._thresholds import Thresholds
from gradvitals.findings import Cause, FailureMode, Finding
from gradvitals.stats import WindowRecord

__all__ = ["DivergedPlateauDetector"]

_HISTORY = 8  # windows of gradient-norm history kept


def _finite(x: float | None) -> bool:
    return x is not None and not (math.isnan(x) or math.isinf(x))


def _median_update_ratio(record: WindowRecord) -> float:
    ups = [lay.update_ratio for lay in record.layers.values() if _finite(lay.update_ratio)]
    return median(ups) if ups else math.nan


class DivergedPlateauDetector:
    kind = FailureMode.DIVERGED_PLATEAU

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.t = thresholds or Thresholds()
        self.trigger = EdgeTrigger(patience=self.t.plateau_patience, recover=self.t.recover_windows)
        self.first_loss: float | None = None
        self.best: float | None = None
        self.norms: list[float] = []  # global gradient norms of windows outside episodes
        self.prev_update: float = math.nan  # median update ratio of the previous window
        self.episode: dict[str, Any] | None = None

    def scale(self, best: float) -> float:
        """:math:`S = \\max(|B|, L_0 - B)`, the loss scale a rise is measured in."""
        first = self.first_loss if self.first_loss is not None else best
        return max(abs(best), first - best)

    def stays(self, loss: float, best: float, scale: float) -> bool:
        """The episode goes on: :math:`L \\ge B + rS` or :math:`L \\ge L_0 - rS`."""
        r = self.t.plateau_recover * scale
        first = self.first_loss if self.first_loss is not None else best
        return loss >= best + r or loss >= first - r

    def clear(self, rise: float, scale: float, cause: Cause) -> bool:
        """A rise past ``plateau_jump`` x S is a jump, not batch noise, when it came
        with large steps or a gradient spike, or is twice the threshold."""
        return cause is Cause.LEARNING_RATE or rise >= 2 * self.t.plateau_jump * scale

    def _cause(self, record: WindowRecord, up: float) -> tuple[Cause, str]:
        r = self.t.plateau_update_ratio
        steps = [u for u in (self.prev_update, up) if _finite(u)]
        g = record.total_grad_norm
        ref = median(self.norms) if self.norms else math.nan
        if steps and max(steps) >= r:
            return Cause.LEARNING_RATE, (
                f"the median layer's step was {max(steps):.2g} of its weights around the "
                f"jump (threshold {r:g}; healthy steps are about 1e-3)"
            )
        if _finite(g) and _finite(ref) and ref > 0 and g >= self.t.explode_factor * ref:
            return Cause.LEARNING_RATE, (
                f"the gradient norm spiked to {g:.3g}, {g / ref:.0f}x its median {ref:.3g}, "
                "at the jump"
            )
        shown = f"{max(steps):.2g}" if steps else "not measured"
        return Cause.UNKNOWN, (
            f"no large step (median update ratio {shown}) and no gradient-norm spike at the jump"
        )

    def update(self, record: WindowRecord) -> list[Finding]:
        loss = record.loss.mean if record.loss is not None and record.loss.count else math.nan
        if not _finite(loss):
            return []  # nothing to judge (non-finite windows belong to the nonfinite detector)
        up = _median_update_ratio(record)
        if self.first_loss is None or self.best is None:
            self.first_loss = self.best = loss
        ep = self.episode
        if ep is None:
            s = self.scale(self.best)
            rise = loss - self.best
            cause, why = self._cause(record, up)
            if s > 0 and rise >= self.t.plateau_jump * s and self.clear(rise, s, cause):
                ep = self.episode = {
                    "jump_step": record.step,
                    "jump_loss": loss,
                    "best": self.best,
                    "scale": s,
                    "peak": loss,
                    "windows": 0,
                    "cause": cause.value,
                    "cause_evidence": why,
                }
        elif not self.stays(loss, ep["best"], ep["scale"]):
            ep = self.episode = None  # back near its best: a spike that recovered
        if ep is not None:
            ep["windows"] += 1
            ep["peak"] = max(ep["peak"], loss)
        else:
            g = record.total_grad_norm
            if _finite(g):
                self.norms = (self.norms + [g])[-_HISTORY:]
        self.best = min(self.best, loss)
        self.prev_update = up
        if not self.trigger.observe("model", ep is not None):
            return []
        assert ep is not None
        b, s, first = ep["best"], ep["scale"], self.first_loss
        msg = (
            f"the loss jumped to {ep['jump_loss']:.4g} at step {ep['jump_step']} (best before "
            f"{b:.4g}, first window {first:.4g}) and is still {loss:.4g} after "
            f"{ep['windows']} windows, with no NaN"
        )
        ev = {
            "loss": loss,
            "best_loss": b,
            "loss_before": b,
            "first_loss": first,
            "jump_step": ep["jump_step"],
            "jump_loss": ep["jump_loss"],
            "peak_loss": ep["peak"],
            "lost_progress": (loss - b) / s if s else math.nan,
            "scale": s,
            "windows": ep["windows"],
            "threshold_jump": self.t.plateau_jump,
            "threshold_recover": self.t.plateau_recover,
            "cause_evidence": ep["cause_evidence"],
        }
        return [
            Finding(
                kind=self.kind,
                layer=None,
                step=record.step,
                message=msg,
                evidence=ev,
                cause=Cause(ep["cause"]),
            )
        ]

    def rearm(self, forget_history: bool = False) -> None:
        self.trigger.reset()
        self.episode = None
        if forget_history:
            self.first_loss = self.best = None
            self.norms = []
            self.prev_update = math.nan

    def state_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger.state_dict(),
            "first_loss": self.first_loss,
            "best": self.best,
            "norms": list(self.norms),
            "prev_update": self.prev_update,
            "episode": None if self.episode is None else dict(self.episode),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state.get("trigger", {}))
        self.first_loss = state.get("first_loss")
        self.best = state.get("best")
        self.norms = list(state.get("norms", []))
        self.prev_update = float(state.get("prev_update", math.nan))
        ep = state.get("episode")
        self.episode = None if ep is None else dict(ep)
