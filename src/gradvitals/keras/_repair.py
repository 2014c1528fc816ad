"""In-flight repair for Keras: roll back to the last healthy state and apply the next fix.

The framework-free :class:`~gradvitals.session.RepairController` decides (the same one
the PyTorch adapter uses, with the same :class:`~gradvitals.RepairPolicy`); this module
is the Keras :class:`~gradvitals.session.RepairHost`: snapshots of the weights and the
optimizer's slots, and the actions, registered by name in :data:`KERAS_ACTIONS`.

What Keras lets a callback change mid-fit (measured with Keras 3 on TensorFlow), per action:

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
- ``skip_batch``: the optimizer instance's ``apply`` (which ``apply_gradients`` and
  Keras' ``train_step`` call) is replaced by a guarded one: inside the compiled step,
  ``keras.ops.cond`` runs the optimizer's own update when every gradient is finite and
  otherwise only counts the step (:class:`~gradvitals.keras._skip.StepGuard`): weights,
  slots and ``iterations`` stay as they were, and finite steps are bitwise unchanged.
  The count is read once per window. Not for a ``LossScaleOptimizer`` (it skips such
  steps itself) nor a multi-replica distribution strategy;
- ``add_norm`` does not apply: a compiled Keras model cannot gain layers mid-fit;
- ``zero_grad`` does not apply: Keras computes fresh gradients every step.

Clipping and activation swaps are baked into the traced step, so each is followed by
``model.make_train_function(force=True)`` (and the test/predict functions), and the
callback re-traces its probe; ``skip_batch`` re-traces the train function only.
Re-initialised weights keep their optimizer slots (Keras exposes no public
per-variable slot lookup); the slots decay within a few dozen steps.

Snapshots are ``model.get_weights()`` plus the optimizer's variables except its step
counter and learning rate, taken at the start of training (the optimizer is built
then, so that its slots are in it) and after every *clean* window (no finding, and
none on its way: see :func:`~gradvitals.remedies._ledger.unclean_reason`); one host
copy each.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gradvitals.keras._skip import StepGuard, guard_refusal
from gradvitals.remedies import ACTION_SPECS, ActionContext, ActionRegistry, RepairPolicy
from gradvitals.stats import SATURATING

if TYPE_CHECKING:
    from gradvitals.keras._layout import Site

__all__ = ["KERAS_ACTIONS", "KerasRepairHost"]

log = logging.getLogger("gradvitals")

_RELU_KINDS = ("relu", "relu6")

#: the causes whose NaN the probe examples (drawn from the training data) may hold
_POISONED = frozenset({"nonfinite_input", "nonfinite_target"})

#: fewer steps than this since the last look are too few to say that every batch is
#: poisoned (a 1% rate of poisoned rows makes a third of 32-example batches poisoned)
JUDGE_AFTER = 8

#: Keras implementations of the repair actions, by name (``add_norm`` has none: a
#: compiled Keras model cannot gain layers mid-fit).
KERAS_ACTIONS = ActionRegistry("keras")


class KerasRepairHost:
    """The Keras side of repair: snapshots and the model/optimizer changes.

    It talks to the callback only through ``model``, ``sites`` and ``rebuild_probe()``.

    Args:
        cb: the :class:`~gradvitals.keras.VitalsCallback`.
        policy: the :class:`~gradvitals.RepairPolicy`.
    """

    actions = KERAS_ACTIONS

    def __init__(self, cb: Any, policy: RepairPolicy) -> None:
        self.cb = cb
        self.policy = policy
        self.snapshot: tuple[int, list[np.ndarray], list[np.ndarray]] | None = None
        self.clipped = False
        self.rng = np.random.default_rng(policy.seed)
        self.guard: StepGuard | None = None
        self._skipped_seen = 0
        self._steps_seen = 0
        self._installed_at = 0

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

    def _build_optimizer(self) -> None:
        """Create the optimizer's slots now, so that the first snapshot holds them.

        Without a distribution strategy Keras builds the optimizer inside the first
        traced step, after ``on_train_begin``: a snapshot taken before it would restore
        the weights but leave the slots of the steps since (NaN ones too). Built as
        Keras' own symbolic build does (``optimizer.build(model.trainable_variables)``),
        and only for Keras' own ``train_step``: a custom one may hand the optimizer
        other variables.
        """
        import keras

        m = self.model
        opt = getattr(m, "optimizer", None)
        if opt is None or getattr(opt, "built", True) or not hasattr(opt, "build"):
            return
        if getattr(type(m), "train_step", None) is not keras.Model.train_step:
            return
        opt.build(m.trainable_variables)

    def capture(self, step: int) -> bool:
        """Keep the current weights and optimizer slots; never a state with a NaN/Inf."""
        if self.model is None or not getattr(self.model, "built", False):
            return False
        self._build_optimizer()
        weights = [np.asarray(w) for w in self.model.get_weights()]
        slots = [np.asarray(v.numpy()) for v in self._slots()]
        for a in (*weights, *slots):
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                return False
        self.snapshot = (step, weights, slots)
        return True

    def restore(self) -> int | None:
        if self.snapshot is None:
            return None
        step, weights, slots = self.snapshot
        self.model.set_weights(weights)
        for v, value in zip(self._slots(), slots, strict=False):
            if tuple(v.shape) == value.shape:
                v.assign(value)
        return step

    def after_repair(self, applied: Sequence[str]) -> None:
        # clipping and activation swaps are baked into the traced step
        if any(ACTION_SPECS[n].structural or n == "clip_grad_norm" for n in applied):
            m = self.model
            m.make_train_function(force=True)
            m.make_test_function(force=True)
            m.make_predict_function(force=True)
            self.cb.rebuild_probe()
        elif "skip_batch" in applied:  # the guard runs inside the traced train step
            self.model.make_train_function(force=True)

    def check(self) -> list[str]:
        """How many steps ``skip_batch`` skipped so far (one read of its counter), and
        whether it skipped every step since it went in (over :data:`JUDGE_AFTER` steps
        or more): then nothing trains, every batch holds a NaN/Inf."""
        skipped = self.guard.skipped if self.guard is not None else 0
        if not skipped:
            return []
        lines = [f"skip_batch: skipped {skipped} optimizer step(s) whose gradients were not finite"]
        step = int(self.cb.step_count)
        since = step - self._installed_at
        if skipped >= since >= JUDGE_AFTER:
            lines.append(
                f"skip_batch skipped every step: all {since} optimizer steps from step "
                f"{self._installed_at} to {step - 1} had non-finite gradients, so the model "
                "does not train; every batch holds NaN/Inf: clean the data"
            )
        return lines

    def handled(self, kind: Any, cause: Any) -> str | None:
        """``skip_batch`` is in place and kept the weights finite: no new action.

        The guard's count and the step count are compared with the last call's:

        - None (act on it) when the weights or the optimizer's slots are not finite
          (the NaN got in another way, a normalization's moving statistics, say), or
          when every step was skipped, over at least :data:`JUDGE_AFTER` steps, in this
          window or since the guard went in: then nothing trains;
        - a line when steps were skipped since the last call, or when the finding's
          cause is a poisoned input or target: the probe examples, drawn from the
          training data, hold the NaN themselves and show it every window.
        """
        guard = self.guard
        if guard is None or str(getattr(kind, "value", kind)) != "nonfinite":
            return None
        skipped, step = guard.skipped, int(self.cb.step_count)
        n, steps = skipped - self._skipped_seen, step - self._steps_seen
        self._skipped_seen, self._steps_seen = skipped, step
        since = step - self._installed_at
        if (n >= steps >= JUDGE_AFTER) or (skipped >= since >= JUDGE_AFTER):
            return None  # every step skipped: the guard is not a repair
        if not self.state_finite():
            return None
        if n > 0:
            return f"skip_batch skipped {n} more step(s) whose gradients were not finite"
        if str(getattr(cause, "value", cause)) in _POISONED:
            return (
                "skip_batch is in place and the weights are finite; the probe examples "
                "hold the NaN/Inf in their own inputs or targets"
            )
        return None

    def state_finite(self) -> bool:
        """Every model weight and optimizer slot is finite (one scalar read)."""
        from keras import ops

        flags = [
            ops.all(ops.isfinite(v.value))
            for v in (*self.model.weights, *self._slots())
            if "float" in str(v.dtype)
        ]
        return bool(ops.convert_to_numpy(ops.all(ops.stack(flags)))) if flags else True

    # -- helpers -----------------------------------------------------------------------
    def hidden_sites(self) -> list[Site]:
        return self.cb.sites  # type: ignore[no-any-return]  # output layers are never sites

    def incoming(self, site_name: str | None) -> Any:
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

    def lr_variable(self) -> Any:
        opt = getattr(self.model, "optimizer", None)
        lr = getattr(opt, "learning_rate", None)
        return lr if hasattr(lr, "assign") else None

    def init_columns(self, layer: Any, cols: list[int] | None, how: str, gain: float = 1.0) -> None:
        """Re-initialise a kernel's output columns (all when ``cols`` is None)."""
        kernel = np.asarray(layer.kernel.numpy())
        fan_in = int(np.prod(kernel.shape[:-1]))
        fan_out = int(kernel.shape[-1])
        if how == "he":
            fresh = self.rng.normal(0.0, math.sqrt(2.0 / fan_in), kernel.shape)
        else:  # Glorot uniform with a gain
            lim = gain * math.sqrt(6.0 / (fan_in + fan_out))
            fresh = self.rng.uniform(-lim, lim, kernel.shape)
        idx = slice(None) if cols is None else cols
        kernel[..., idx] = fresh[..., idx].astype(kernel.dtype)
        layer.kernel.assign(kernel)
        bias = getattr(layer, "bias", None)
        if bias is not None:
            b = np.asarray(bias.numpy())
            b[idx] = 0.0
            bias.assign(b)

    def swap(self, kinds: tuple[str, ...], to: str, *, he: bool) -> str | None:
        import keras

        swapped, reinit = [], []
        for site in self.hidden_sites():
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
            inc = self.incoming(site.name) if he else None
            if inc is not None:
                self.init_columns(inc, None, "he")
                reinit.append(inc.name)
        if not swapped:
            return None
        what = f"swapped {len(swapped)} activation(s) for {to}: {', '.join(swapped)}"
        if reinit:
            what += f"; He-initialised {', '.join(reinit)}"
        return what


def _sites_of(host: KerasRepairHost, kinds: Sequence[str] | frozenset[str]) -> bool:
    return any(s.activation in kinds for s in host.hidden_sites())


def _has_incoming(host: KerasRepairHost, ctx: ActionContext) -> bool:
    return any(host.incoming(f.layer) is not None for f in ctx.findings)


# -- the actions ---------------------------------------------------------------------------
@KERAS_ACTIONS.register("lower_lr", applicable=lambda host, ctx: host.lr_variable() is not None)
def _lower_lr(host: KerasRepairHost, ctx: ActionContext) -> str | None:
    opt = host.model.optimizer
    if host.lr_variable() is None:
        return None  # a LearningRateSchedule: not settable
    old = float(opt.learning_rate)
    new = old * host.policy.lr_factor
    opt.learning_rate = new
    return f"learning rate {old:.3g} -> {new:.3g}"


@KERAS_ACTIONS.register("clip_grad_norm")
def _clip(host: KerasRepairHost, ctx: ActionContext) -> str | None:
    opt = host.model.optimizer
    if host.clipped:
        attr = "clipnorm" if getattr(opt, "clipnorm", None) else "global_clipnorm"
        setattr(opt, attr, float(getattr(opt, attr)) / 2.0)
        return f"tightened gradient-norm clipping ({attr}) to {getattr(opt, attr):.3g}"
    value = host.policy.clip_norm
    source = "from the policy"
    if value is None:
        value, source = ctx.clip_norm, "2x the median healthy gradient norm"
    if value is None:
        value, source = 1.0, "a default: no healthy gradient norms were seen"
    host.clipped = True
    if getattr(opt, "clipnorm", None):
        opt.clipnorm = min(float(opt.clipnorm), value)
        return f"per-variable clipnorm {opt.clipnorm:.3g} ({source})"
    old = getattr(opt, "global_clipnorm", None)
    opt.global_clipnorm = min(float(old), value) if old else value
    return f"clipping the global gradient norm at {opt.global_clipnorm:.3g} ({source})"


@KERAS_ACTIONS.register(
    "skip_batch", applicable=lambda host, ctx: guard_refusal(host.model) is None
)
def _skip_batch(host: KerasRepairHost, ctx: ActionContext) -> str | None:
    if host.guard is not None:
        return None  # already skipping: nothing more this action can do
    why = guard_refusal(host.model)
    if why is not None:
        log.info("gradvitals repair: skip_batch does not apply: %s", why)
        return None
    guard = StepGuard()
    guard.install(host.model.optimizer)
    host.guard = guard
    host._skipped_seen = 0
    host._steps_seen = host._installed_at = int(host.cb.step_count)
    return (
        "skipping every optimizer step whose gradients are not finite (checked inside the "
        "compiled step; the count is read once per window), instead of cutting the "
        "learning rate"
    )


@KERAS_ACTIONS.register("leaky_variant", applicable=lambda host, ctx: _sites_of(host, _RELU_KINDS))
def _leaky_variant(host: KerasRepairHost, ctx: ActionContext) -> str | None:
    return host.swap(_RELU_KINDS, "leaky_relu", he=False)


@KERAS_ACTIONS.register("relu_he", applicable=lambda host, ctx: _sites_of(host, SATURATING))
def _relu_he(host: KerasRepairHost, ctx: ActionContext) -> str | None:
    return host.swap(tuple(SATURATING), host.policy.swap_to, he=True)


@KERAS_ACTIONS.register("reinit_dead", applicable=_has_incoming)
def _reinit_dead(host: KerasRepairHost, ctx: ActionContext) -> str | None:
    parts = []
    for f in ctx.findings:
        layer = host.incoming(f.layer)
        cols = [int(i) for i in f.evidence.get("dead_unit_indices") or []]
        if layer is None or not cols:
            continue
        host.init_columns(layer, cols, "he")
        parts.append(f"{len(cols)} unit(s) of {layer.name}")
    if not parts:
        return None
    return "He-initialised the incoming weights of " + ", ".join(parts)


@KERAS_ACTIONS.register("xavier_init", applicable=_has_incoming)
def _xavier(host: KerasRepairHost, ctx: ActionContext) -> str | None:
    parts, seen = [], set()
    for f in ctx.findings:
        layer = host.incoming(f.layer)
        if layer is None or layer.name in seen:
            continue
        seen.add(layer.name)
        kind = str(f.evidence.get("activation", "tanh"))
        gain = 5.0 / 3.0 if kind in ("tanh", "hardtanh") else 1.0
        host.init_columns(layer, None, "glorot", gain)
        parts.append(f"{layer.name} (gain {gain:.3g})")
    return "Xavier-initialised " + ", ".join(parts) if parts else None
