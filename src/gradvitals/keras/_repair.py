"""In-flight repair for Keras: roll back to the last healthy state and apply the next fix.

The same design as the PyTorch repairer (``gradvitals/torch/_repair.py``) and the same
:class:`~gradvitals.RepairPolicy`: when a failure mode fires, the weights and the
optimizer's slots are restored from the last *clean* window's snapshot and the next
action of that mode's list is applied; at most ``max_attempts`` per mode, then a final
"could not repair" finding.

What Keras lets a callback change mid-fit (``frameworks.md`` section 3), per action:

- ``lower_lr``: ``model.optimizer.learning_rate = lr * lr_factor`` assigns the
  optimizer's variable, read by the compiled step: it takes effect at the next step
  (a ``LearningRateSchedule`` cannot be set, so the action does not apply);
- ``clip_grad_norm``: ``optimizer.global_clipnorm`` (or a lower ``clipnorm`` when the
  user set one); a second use halves it;
- ``leaky_variant``: hidden ReLU sites become Leaky ReLU: ``layer.activation =
  keras.activations.leaky_relu`` (Keras' own slope 0.2, so the model still saves and
  loads without gradvitals), or ``negative_slope = leaky_slope`` on a ``ReLU`` layer;
- ``relu_he``: hidden sigmoid/tanh sites become Leaky ReLU (or ReLU, ``swap_to``), and
  the Dense/Conv layers feeding them are He-initialised;
- ``reinit_dead``: He-initialise the incoming kernel columns (and zero the biases) of
  the dead units;
- ``xavier_init``: Glorot-initialise the layers feeding saturated units;
- ``add_norm`` does not apply: a compiled Keras model cannot gain layers mid-fit.

Clipping and activation swaps are baked into the traced step, so each is followed by
``model.make_train_function(force=True)`` (and the test/predict functions), and the
callback re-traces its probe. Re-initialised weights keep their optimizer slots
(Keras exposes no public per-variable slot lookup); the slots decay within a few
dozen steps.

Snapshots are ``model.get_weights()`` plus the optimizer's variables except its step
counter and learning rate, taken at the start of training and after every *clean*
window (no finding, and none on its way: see :func:`suspect`); one host copy each.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from gradvitals.errors import UsageError
from gradvitals.findings import FailureMode, Finding
from gradvitals.remedies import RepairPolicy
from gradvitals.remedies import _ledger as ledger
from gradvitals.stats import SATURATING, WindowRecord

if TYPE_CHECKING:
    from gradvitals.keras._callback import VitalsCallback
    from gradvitals.keras._layout import Site

__all__ = ["KerasRepairer", "suspect"]

log = logging.getLogger("gradvitals")

_RELU_KINDS = ("relu", "relu6")
_STRUCTURAL = frozenset({"leaky_variant", "relu_he"})
_REINIT = frozenset({"reinit_dead", "relu_he", "xavier_init", "leaky_variant"})


def suspect(cb: VitalsCallback, record: WindowRecord, norms: list[float]) -> str | None:
    """Why a window without findings is not clean enough to snapshot, or None.

    The same rule as the PyTorch repairer's: ``gradvitals.remedies._ledger.unclean_reason``.
    """
    return ledger.unclean_reason(record, cb.thresholds, cb.suite, norms)


class KerasRepairer:
    """Keeps the last healthy snapshot and applies a :class:`~gradvitals.RepairPolicy`.

    Args:
        cb: the callback (it owns the model, detectors, findings and ``repairs``).
        policy: a :class:`~gradvitals.RepairPolicy`, a dict of its fields, or None.
    """

    def __init__(self, cb: VitalsCallback, policy: RepairPolicy | dict[str, Any] | None) -> None:
        if policy is None:
            policy = RepairPolicy()
        elif isinstance(policy, dict):
            policy = RepairPolicy(**policy)
        if not isinstance(policy, RepairPolicy):
            raise UsageError(
                "policy must be a gradvitals.RepairPolicy (or a dict of its fields), got "
                f"{type(policy).__name__}; e.g. policy=gradvitals.RepairPolicy(max_attempts=2)"
            )
        self.cb = cb
        self.policy = policy
        self.snapshot: tuple[int, list[np.ndarray], list[np.ndarray]] | None = None
        self.clipped = False
        self._rng = np.random.default_rng(policy.seed)
        self._healthy_windows = 0
        self._pending: list[dict[str, Any]] = []
        self._norms: list[float] = []

    # -- model access ------------------------------------------------------------------
    @property
    def model(self) -> Any:
        return self.cb.model

    def _slots(self) -> list[Any]:
        """Optimizer variables to restore: all but the step counter and the lr."""
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            return []
        it = getattr(opt, "iterations", None)
        return [v for v in opt.variables if v is not it and "learning_rate" not in v.path]

    def capture(self, step: int) -> bool:
        """Keep the current weights and optimizer slots; never a state with a NaN/Inf."""
        weights = [np.asarray(w) for w in self.model.get_weights()]
        slots = [np.asarray(v.numpy()) for v in self._slots()]
        for a in (*weights, *slots):
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                return False
        self.snapshot = (step, weights, slots)
        return True

    def _restore(self) -> int | None:
        if self.snapshot is None:
            return None
        step, weights, slots = self.snapshot
        try:
            self.model.set_weights(weights)
            for v, value in zip(self._slots(), slots, strict=False):
                if tuple(v.shape) == value.shape:
                    v.assign(value)
        except Exception as e:
            log.warning("gradvitals repair: could not roll back (%s: %s)", type(e).__name__, e)
            return None
        return step

    # -- callback hooks ----------------------------------------------------------------
    def on_healthy(self, record: WindowRecord) -> None:
        """A window without findings: settle pending outcomes, maybe snapshot."""
        recent = list(self._norms)
        g = record.total_grad_norm
        if math.isfinite(g):
            self._norms = (self._norms + [g])[-8:]
        if suspect(self.cb, record, recent) is not None:
            return
        self._settle(True)
        self._healthy_windows += 1
        if self._healthy_windows % self.policy.snapshot_every == 0:
            self.capture(record.step_end + 1)

    def on_findings(self, findings: list[Finding], record: WindowRecord) -> list[Finding]:
        """Roll back and apply the next action per mode; returns final findings."""
        self._settle(False)
        by_kind: dict[FailureMode, list[Finding]] = {}
        for f in findings:
            if not f.final and self.policy.actions_for(f.kind):
                by_kind.setdefault(f.kind, []).append(f)
        finals: list[Finding] = []
        plans: list[tuple[FailureMode, list[Finding], list[str]]] = []
        for kind, fs in by_kind.items():
            if self._gave_up(kind, finals):
                continue
            done = self._attempts(kind)
            candidates = self._candidates(kind, fs)
            if done >= self.policy.max_attempts or not candidates:
                why = (
                    f"{done} repair{'s' if done != 1 else ''} did not hold"
                    if done >= self.policy.max_attempts
                    else "no action left in the policy applies to this Keras model"
                )
                finals.append(self._give_up(kind, fs, record, why))
                continue
            plans.append((kind, fs, candidates))
        if not plans:
            return finals
        rollback = self._restore()
        structural = reinit = False
        applied: dict[str, str] = {}
        for kind, fs, candidates in plans:
            for name in candidates:  # the first one that does something
                if name in applied and name not in ("reinit_dead", "xavier_init"):
                    detail: str | None = f"{applied[name]} (shared)"
                else:
                    detail = self._try(name, fs)
                    if detail is not None:
                        applied[name] = detail
                        structural |= name in _STRUCTURAL or name == "clip_grad_norm"
                if detail is not None:
                    reinit |= name in _REINIT
                    self._log(kind, fs, record, name, detail, rollback)
                    break
            else:
                finals.append(
                    self._give_up(kind, fs, record, "no action left in the policy could be applied")
                )
        if structural:
            self._retrace()
        self.cb.suite.rearm(forget_history=reinit)
        if reinit or self.snapshot is None:
            self.capture(record.step_end + 1)  # the restored state, with the fix applied
        return finals

    def close(self) -> None:
        """Write the repairs whose outcome is still unknown to the TensorBoard log."""
        for r in self._pending:
            self._write(r)
        self._pending = []

    # -- decisions ---------------------------------------------------------------------
    def _attempts(self, kind: FailureMode) -> int:
        return len(ledger.kind_records(self.cb.repairs, kind))

    def _gave_up(self, kind: FailureMode, finals: list[Finding]) -> bool:
        return any(f.final and f.kind is kind for f in [*self.cb.findings, *finals])

    def _candidates(self, kind: FailureMode, findings: list[Finding]) -> list[str]:
        """The policy's next actions for ``kind`` that apply to this Keras model."""
        names = ledger.next_actions(self.policy, self.cb.repairs, kind)
        return [n for n in names if self._applicable(n, findings)]

    def _applicable(self, name: str, findings: list[Finding]) -> bool:
        if name == "lower_lr":
            return self._lr_variable() is not None
        if name == "clip_grad_norm":
            return True
        sites = self._hidden_sites()
        if name == "leaky_variant":
            return any(s.activation in _RELU_KINDS for s in sites)
        if name == "relu_he":
            return any(s.activation in SATURATING for s in sites)
        if name in ("reinit_dead", "xavier_init"):
            return any(self._incoming(f.layer) is not None for f in findings)
        return False  # add_norm: a compiled Keras model cannot gain layers mid-fit

    def _hidden_sites(self) -> list[Site]:
        return list(self.cb._sites)  # output layers are never sites

    def _incoming(self, site_name: str | None) -> Any:
        """The Dense/Conv layer whose kernel feeds a site: itself, or the nearest
        weight layer before an ``Activation``/``ReLU`` layer."""
        layers = list(getattr(self.model, "layers", []))
        idx = next((i for i, lay in enumerate(layers) if lay.name == site_name), None)
        if idx is None:
            return None
        for lay in reversed(layers[: idx + 1]):
            if getattr(lay, "kernel", None) is not None:
                return lay
            if lay is not layers[idx] and getattr(lay, "trainable_weights", None):
                return None  # a normalization or other weight layer in between
        return None

    # -- actions -----------------------------------------------------------------------
    def _try(self, name: str, findings: list[Finding]) -> str | None:
        try:
            return self._apply(name, findings)
        except Exception as e:  # a failed action must not stop training
            log.warning("gradvitals repair: %s failed (%s: %s)", name, type(e).__name__, e)
            return None

    def _apply(self, name: str, findings: list[Finding]) -> str | None:
        if name == "lower_lr":
            return self._lower_lr()
        if name == "clip_grad_norm":
            return self._clip()
        if name == "leaky_variant":
            return self._swap(_RELU_KINDS, "leaky_relu", he=False)
        if name == "relu_he":
            return self._swap(tuple(SATURATING), self.policy.swap_to, he=True)
        if name == "reinit_dead":
            return self._reinit_dead(findings)
        if name == "xavier_init":
            return self._xavier(findings)
        return None

    def _lr_variable(self) -> Any:
        opt = getattr(self.model, "optimizer", None)
        lr = getattr(opt, "learning_rate", None)
        return lr if hasattr(lr, "assign") else None

    def _lower_lr(self) -> str | None:
        opt = self.model.optimizer
        if self._lr_variable() is None:
            return None  # a LearningRateSchedule: not settable
        old = float(opt.learning_rate)
        new = old * self.policy.lr_factor
        opt.learning_rate = new
        return f"learning rate {old:.3g} -> {new:.3g}"

    def _clip(self) -> str:
        opt = self.model.optimizer
        if self.clipped:
            attr = "clipnorm" if getattr(opt, "clipnorm", None) else "global_clipnorm"
            setattr(opt, attr, float(getattr(opt, attr)) / 2.0)
            return f"tightened gradient-norm clipping ({attr}) to {getattr(opt, attr):.3g}"
        value = self.policy.clip_norm
        source = "from the policy"
        if value is None:
            value = self.cb.suite.clip_norm
            source = "2x the median healthy gradient norm"
        if value is None:
            value, source = 1.0, "a default: no healthy gradient norms were seen"
        self.clipped = True
        if getattr(opt, "clipnorm", None):
            opt.clipnorm = min(float(opt.clipnorm), value)
            return f"per-variable clipnorm {opt.clipnorm:.3g} ({source})"
        old = getattr(opt, "global_clipnorm", None)
        opt.global_clipnorm = min(float(old), value) if old else value
        return f"clipping the global gradient norm at {opt.global_clipnorm:.3g} ({source})"

    def _swap(self, kinds: tuple[str, ...], to: str, *, he: bool) -> str | None:
        import keras

        swapped, reinit = [], []
        for site in self._hidden_sites():
            if site.activation not in kinds:
                continue
            layer = site.layer
            if hasattr(layer, "negative_slope") and not hasattr(layer, "activation"):
                layer.negative_slope = self.policy.leaky_slope if to == "leaky_relu" else 0.0
            elif hasattr(layer, "activation"):
                layer.activation = getattr(keras.activations, to)
            else:
                continue
            site.activation = to
            swapped.append(site.name)
            inc = self._incoming(site.name) if he else None
            if inc is not None:
                self._init_columns(inc, None, "he")
                reinit.append(inc.name)
        if not swapped:
            return None
        what = f"swapped {len(swapped)} activation(s) for {to}: {', '.join(swapped)}"
        if reinit:
            what += f"; He-initialised {', '.join(reinit)}"
        return what

    def _init_columns(
        self, layer: Any, cols: list[int] | None, how: str, gain: float = 1.0
    ) -> None:
        """Re-initialise a kernel's output columns (all when ``cols`` is None)."""
        kernel = np.asarray(layer.kernel.numpy())
        fan_in = int(np.prod(kernel.shape[:-1]))
        fan_out = int(kernel.shape[-1])
        if how == "he":
            fresh = self._rng.normal(0.0, math.sqrt(2.0 / fan_in), kernel.shape)
        else:  # Glorot uniform with a gain
            lim = gain * math.sqrt(6.0 / (fan_in + fan_out))
            fresh = self._rng.uniform(-lim, lim, kernel.shape)
        idx = slice(None) if cols is None else cols
        kernel[..., idx] = fresh[..., idx].astype(kernel.dtype)
        layer.kernel.assign(kernel)
        bias = getattr(layer, "bias", None)
        if bias is not None:
            b = np.asarray(bias.numpy())
            b[idx] = 0.0
            bias.assign(b)

    def _reinit_dead(self, findings: list[Finding]) -> str | None:
        parts = []
        for f in findings:
            layer = self._incoming(f.layer)
            cols = [int(i) for i in f.evidence.get("dead_unit_indices") or []]
            if layer is None or not cols:
                continue
            self._init_columns(layer, cols, "he")
            parts.append(f"{len(cols)} unit(s) of {layer.name}")
        if not parts:
            return None
        return "He-initialised the incoming weights of " + ", ".join(parts)

    def _xavier(self, findings: list[Finding]) -> str | None:
        parts, seen = [], set()
        for f in findings:
            layer = self._incoming(f.layer)
            if layer is None or layer.name in seen:
                continue
            seen.add(layer.name)
            kind = str(f.evidence.get("activation", "tanh"))
            gain = 5.0 / 3.0 if kind in ("tanh", "hardtanh") else 1.0
            self._init_columns(layer, None, "glorot", gain)
            parts.append(f"{layer.name} (gain {gain:.3g})")
        return "Xavier-initialised " + ", ".join(parts) if parts else None

    def _retrace(self) -> None:
        m = self.model
        m.make_train_function(force=True)
        m.make_test_function(force=True)
        m.make_predict_function(force=True)
        self.cb._rebuild_probe()

    # -- bookkeeping -------------------------------------------------------------------
    def _log(
        self,
        kind: FailureMode,
        findings: list[Finding],
        record: WindowRecord,
        action: str,
        detail: str,
        rollback: int | None,
    ) -> None:
        attempt = self._attempts(kind) + 1
        rec = ledger.repair_record(kind, findings, record, action, detail, rollback, attempt)
        self.cb.repairs.append(rec)
        self._pending.append(rec)
        line = ledger.repair_line(rec, self.policy.max_attempts)
        (log.warning if self.cb.console else log.info)(line)

    def _settle(self, healthy: bool) -> None:
        for r in self._pending:
            r["healthy_after"] = healthy
            self._write(r)
        self._pending = []

    def _write(self, r: dict[str, Any]) -> None:
        sink = self.cb._sink
        if sink is not None and not sink.closed:
            sink.write_repair(r)

    def _give_up(
        self, kind: FailureMode, findings: list[Finding], record: WindowRecord, why: str
    ) -> Finding:
        return ledger.give_up_finding(
            kind, findings, record, why, self.cb.repairs, self.cb.suite.clip_norm
        )
