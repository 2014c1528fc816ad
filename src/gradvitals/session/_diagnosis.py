"""The cause of a finding: why it broke, decided from evidence, never guessed.

A detector names the symptom (``nonfinite`` in a layer); :func:`diagnose` names the
cause (``nonfinite_input``, ``unstable_op``, ``learning_rate``...) from what the window
and the run's history hold: the batch evidence (``record.batch``: non-finite inputs
or targets, input scale, gradients not zeroed), the provenance replay
(``record.facts["provenance"]``), the loss's ops, the architecture
(``model_facts``: output and recurrent layers) and the earlier findings. Each rule
writes what decided it into ``evidence["cause_evidence"]``; when no rule decides, the
cause is ``unknown`` and the evidence says what was ruled out.

The rules, in order, per symptom:

- ``nonfinite``: a non-finite input batch -> ``nonfinite_input``; a non-finite loss
  target -> ``nonfinite_target``; the replay found a 16-bit overflow ->
  ``low_precision_overflow``; an op made NaN from NaN-free inputs -> ``unstable_op``
  (the finding then names that op's module); the forward stayed finite but the loss
  did not -> ``unstable_loss``; gradients not zeroed -> ``missing_zero_grad``; updates
  or gradients grew before it (an earlier ``exploding_gradient``, a step over 10% of the
  weights) -> ``learning_rate``.
- ``exploding_gradient``: gradients not zeroed -> ``missing_zero_grad``; inputs far
  from unit scale, or an MSE/L1 loss that started above 1000 -> ``unscaled_data``;
  else the step itself -> ``learning_rate``.
- ``dying_relu``: an output activation (no weight layer after it) ->
  ``output_activation``; dead in the first window already -> ``bad_init``; gradients not
  zeroed -> ``missing_zero_grad``; unscaled inputs -> ``unscaled_data``; large steps
  before -> ``learning_rate``.
- ``saturation``: saturated in the first window already -> ``unscaled_data`` when the
  inputs are large, else ``bad_init``; large steps before -> ``learning_rate``.
- ``vanishing_gradient``: sigmoid/tanh hidden activations -> ``saturating_activation``.

>>> from gradvitals.findings import FailureMode, Finding
>>> from gradvitals.stats import BatchStats, WindowRecord
>>> rec = WindowRecord(3, 7, 14, batch=BatchStats(steps=8, n_input_nonfinite=1,
...                                               first_input_nonfinite_step=9))
>>> d = diagnose(Finding(FailureMode.NONFINITE, "fc1", 14, "NaN"), rec, [], {}, [])
>>> d.cause.value, d.evidence
('nonfinite_input', 'the batch of step 9 entering the model already held NaN/Inf')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gradvitals.findings import Cause, FailureMode, Finding
from gradvitals.stats import SATURATING, WindowRecord

__all__ = ["Diagnosis", "diagnose"]

#: update ratio (|dw| / |w| per step) above which a step counts as large: 100x the
#: healthy ~1e-3, a tenth of the exploding detector's "step as large as the weights"
LARGE_STEP = 0.1
#: input RMS or max |x| beyond which data counts as unscaled (He/Xavier init assume ~1)
INPUT_RMS_LIMIT = 100.0
INPUT_ABS_LIMIT = 1e4
#: an MSE/L1 loss whose first window is above this comes from targets far from unit scale
UNSCALED_LOSS = 1e3
#: windows (from the first) in which a failure counts as present at initialisation
INIT_WINDOWS = 2

_MSE_OPS = frozenset(
    {"MseLossBackward0", "L1LossBackward0", "SmoothL1LossBackward0", "HuberLossBackward0"}
)
_LOG_OPS = frozenset({"LogBackward0", "Log2Backward0", "Log10Backward0"})
_PROB_OPS = frozenset({"SoftmaxBackward0", "SigmoidBackward0"})


@dataclass(frozen=True)
class Diagnosis:
    """A cause, what decided it, and (optionally) the remedy to try first."""

    cause: Cause
    evidence: str
    lead_remedy: str | None = None
    layer: str | None = None  # where the failure was born, when that is not the symptom's layer


def _max_update(record: WindowRecord) -> float:
    vals = [lay.update_ratio for lay in record.layers.values() if math.isfinite(lay.update_ratio)]
    return max(vals, default=math.nan)


def _large_steps(history: Sequence[WindowRecord], record: WindowRecord) -> float | None:
    """The largest update ratio of this and the last few windows, if above LARGE_STEP."""
    recent = [*list(history)[-3:], record]
    top = max((_max_update(r) for r in recent if r.layers), default=math.nan)
    return top if math.isfinite(top) and top >= LARGE_STEP else None


def _unscaled(record: WindowRecord, history: Sequence[WindowRecord]) -> str | None:
    b = record.batch
    if b is not None and math.isfinite(b.input_rms) and b.input_rms >= INPUT_RMS_LIMIT:
        return f"the inputs' RMS is {b.input_rms:.3g} (limit {INPUT_RMS_LIMIT:g})"
    if b is not None and math.isfinite(b.input_abs_max) and b.input_abs_max >= INPUT_ABS_LIMIT:
        return f"inputs reach |x| = {b.input_abs_max:.3g} (limit {INPUT_ABS_LIMIT:g})"
    first = next((r for r in [*history, record] if r.loss is not None and r.loss.count), None)
    ops = set(record.facts.get("loss_ops", ()))
    if first is not None and ops & _MSE_OPS and math.isfinite(first.loss.mean):  # type: ignore[union-attr]
        start = first.loss.mean  # type: ignore[union-attr]
        if start >= UNSCALED_LOSS:
            return f"the regression loss started at {start:.3g}: targets far from unit scale"
    return None


def _loss_pattern(ops: Sequence[str]) -> str | None:
    """``log`` applied to a softmax/sigmoid output, read off the loss's autograd ops."""
    names = list(ops)
    for i, name in enumerate(names):
        if name in _LOG_OPS and any(n in _PROB_OPS for n in names[i + 1 : i + 4]):
            prob = next(n for n in names[i + 1 : i + 4] if n in _PROB_OPS)
            return f"log of a {prob.removesuffix('Backward0').lower()} output"
    return None


def _nonfinite(
    f: Finding,
    record: WindowRecord,
    history: Sequence[WindowRecord],
    facts: dict[str, Any],
    earlier: Sequence[Finding],
) -> Diagnosis:
    b = record.batch
    if b is not None and b.n_input_nonfinite:
        at = (
            f" of step {b.first_input_nonfinite_step}"
            if b.first_input_nonfinite_step is not None
            else ""
        )
        return Diagnosis(
            Cause.NONFINITE_INPUT, f"the batch{at} entering the model already held NaN/Inf"
        )
    prov = record.facts.get("provenance") or {}
    if prov.get("kind") == "input":
        return Diagnosis(Cause.NONFINITE_INPUT, "the replayed batch holds NaN/Inf")
    if b is not None and b.target_nonfinite:
        return Diagnosis(Cause.NONFINITE_TARGET, "the loss's target tensor held NaN/Inf")
    if prov.get("kind") == "overflow":
        return Diagnosis(
            Cause.LOW_PRECISION_OVERFLOW, prov["detail"], layer=prov.get("module") or None
        )
    if b is not None and b.stale_grad:
        return Diagnosis(Cause.MISSING_ZERO_GRAD, "gradients were not zeroed between steps")
    # growth before the NaN explains it better than the op that finally overflowed
    exploded = [e for e in earlier if e.kind is FailureMode.EXPLODING_GRADIENT]
    step = _large_steps(history, record)
    if exploded or step is not None:
        why = (
            f"the gradients exploded first (step {exploded[-1].step})"
            if exploded
            else f"a step moved a layer by {step:.2g}x its weights before the NaN"
        )
        return Diagnosis(Cause.LEARNING_RATE, why)
    if prov.get("kind") == "nan_from_finite":
        return Diagnosis(
            Cause.UNSTABLE_OP, prov["detail"], "guard_op", layer=prov.get("module") or None
        )
    loss = record.loss
    sites_finite = not any(s.n_nonfinite for s in record.sites.values())
    forward_clean = prov.get("kind") == "forward_finite" or bool(sites_finite and record.sites)
    weights = [lay for lay in record.layers.values() if lay.is_weight_layer and lay.n_samples]
    out_bad = bool(weights) and weights[-1].n_grad_nonfinite > 0
    loss_bad = loss is not None and loss.n_nonfinite > 0
    if forward_clean and (loss_bad or out_bad):
        # the outputs were finite, and the loss (or its gradient at the output) was not
        pattern = _loss_pattern(record.facts.get("loss_ops", ()))
        if pattern:
            return Diagnosis(
                Cause.UNSTABLE_LOSS,
                f"the model's outputs were finite; the loss takes the {pattern}",
                "stable_loss",
            )
        return Diagnosis(
            Cause.UNSTABLE_LOSS,
            "the model's outputs were finite and the loss (or its gradient at the output) "
            "was not: the loss computation made the NaN/Inf (a log of 0, a division by a "
            "zero count...)",
            "guard_op",
        )
    if prov.get("kind") == "forward_finite":
        bad = [lay.name for lay in weights if lay.n_grad_nonfinite]
        where = f" (the last layer with non-finite gradients is {bad[-1]})" if bad else ""
        return Diagnosis(
            Cause.UNSTABLE_OP,
            "the forward pass stayed finite on replay and the output's gradient was finite: "
            f"an op's backward made the NaN/Inf{where} (sqrt or norm at 0, pow of 0...)",
            "guard_op",
            layer=bad[-1] if bad else None,
        )
    return Diagnosis(
        Cause.UNKNOWN,
        "ruled out: non-finite inputs and targets, large steps before it; "
        "no replay was possible (the failing step was not sampled)",
    )


def diagnose(
    f: Finding,
    record: WindowRecord,
    history: Sequence[WindowRecord],
    model_facts: dict[str, Any],
    earlier: Sequence[Finding],
) -> Diagnosis:
    """The cause of finding ``f``, decided in ``record`` (its window) given the run's
    earlier ``history``, the collector's ``model_facts`` and the ``earlier`` findings."""
    kind = f.kind
    b = record.batch
    if kind is FailureMode.NONFINITE:
        return _nonfinite(f, record, history, model_facts, earlier)
    early = record.index < INIT_WINDOWS + (1 if kind is FailureMode.DYING_RELU else 0)
    if kind is FailureMode.EXPLODING_GRADIENT:
        if b is not None and b.stale_grad:
            return Diagnosis(
                Cause.MISSING_ZERO_GRAD,
                "the first backward of a step began on the previous step's gradients: they "
                "accumulate across steps (optimizer.zero_grad() is not called)",
            )
        why = _unscaled(record, history)
        if why:
            return Diagnosis(Cause.UNSCALED_DATA, why)
        top = _max_update(record)
        what = f"the largest step was {top:.2g}x its layer's weights" if math.isfinite(top) else ""
        return Diagnosis(Cause.LEARNING_RATE, what or "norms grew past their history with the loss")
    if kind is FailureMode.DYING_RELU:
        site = str(f.evidence.get("site", f.layer or "")).split("#")[0]
        if site in set(model_facts.get("output_sites", ())):
            return Diagnosis(
                Cause.OUTPUT_ACTIVATION,
                f"{site} is applied after the last weight layer: it clamps the outputs the "
                "loss reads",
            )
        if f.evidence.get("dead_at_start", early):
            return Diagnosis(
                Cause.BAD_INIT,
                "the units were already dead in the first window, before any update could "
                "kill them",
            )
        if b is not None and b.stale_grad:
            return Diagnosis(Cause.MISSING_ZERO_GRAD, "gradients were not zeroed between steps")
        why = _unscaled(record, history)
        if why:
            return Diagnosis(Cause.UNSCALED_DATA, why)
        step = _large_steps(history, record)
        if step is not None or any(e.kind is FailureMode.EXPLODING_GRADIENT for e in earlier):
            return Diagnosis(
                Cause.LEARNING_RATE,
                f"steps of up to {step:.2g}x the weights pushed the units negative"
                if step
                else "the units died after the gradients exploded",
            )
        return Diagnosis(Cause.UNKNOWN, "not at init, no large steps, inputs at unit scale")
    if kind is FailureMode.SATURATION:
        if f.evidence.get("saturated_at_start", early):
            why = _unscaled(record, history)
            if why:
                return Diagnosis(Cause.UNSCALED_DATA, why)
            return Diagnosis(
                Cause.BAD_INIT,
                "saturated from the first windows: the initial weights are too large for the activation",
            )
        step = _large_steps(history, record)
        if step is not None or any(e.kind is FailureMode.EXPLODING_GRADIENT for e in earlier):
            return Diagnosis(
                Cause.LEARNING_RATE,
                f"saturated mid-training after steps of up to {step:.2g}x the weights"
                if step
                else "saturated after the gradients exploded",
            )
        return Diagnosis(Cause.UNKNOWN, "saturated mid-training without large steps")
    if kind is FailureMode.VANISHING_GRADIENT:
        acts = set(model_facts.get("activations", {}).values())
        sat = sorted(acts & SATURATING)
        if sat:
            return Diagnosis(
                Cause.SATURATING_ACTIVATION,
                f"the hidden activations are {', '.join(sat)}: their derivatives shrink the "
                "gradient layer by layer",
            )
        return Diagnosis(Cause.UNKNOWN, "no saturating activation in the model")
    return Diagnosis(Cause.UNKNOWN, "")
