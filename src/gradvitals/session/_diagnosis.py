"""The cause of a finding: why it broke, decided from evidence, never guessed.

A detector names the symptom (``nonfinite`` in a layer); :func:`diagnose` names the
cause (``nonfinite_input``, ``unstable_op``, ``learning_rate``...) from what the window
and the run's history hold: the batch evidence (``record.batch``: non-finite inputs
or targets, input scale, gradients not zeroed), the provenance replay
(``record.facts["provenance"]``), the loss's own ops (``record.facts["loss_graph"]``,
from the loss back to the model's last weight layer), the architecture and the data
the collector knows (``model_facts``: output and recurrent layers, activations, the
Keras probe batches, the weights' format and the optimizer's epsilon) and the earlier
findings. Each rule writes what decided it into ``evidence["cause_evidence"]``; when
no rule decides, the cause is ``unknown`` and the evidence says what was ruled out. A
cause the detector set itself stands unless a rule below refines it (a float16
optimizer behind a "learning-rate" divergence).

The rules, in order, per symptom:

- ``nonfinite``: a non-finite input batch (or Keras probe batch) -> ``nonfinite_input``;
  a non-finite loss target -> ``nonfinite_target``; a 16-bit overflow on replay, or
  16-bit weights an optimizer step already turned NaN/Inf, or float16 weights under an
  Adam-type epsilon below float16's smallest square root -> ``low_precision_overflow``;
  gradients not zeroed -> ``missing_zero_grad``; an earlier ``exploding_gradient`` ->
  ``learning_rate``; an op that made NaN from NaN- and Inf-free inputs ->
  ``unstable_op`` (the finding names its module); a finite forward and a non-finite
  loss computed with ops that can make NaN (log, div, sqrt, pow...) or by a
  user-written Keras loss -> ``unstable_loss``; a step over 10% of the weights ->
  ``learning_rate``; an op that made NaN from a ``-inf`` mask -> ``unstable_op``; a
  finite forward and a non-finite loss whose own ops cannot make NaN from finite values
  (``mse_loss``, ``cross_entropy``...) -> ``nonfinite_target``, by elimination; a
  finite forward and loss with non-finite gradients -> ``unstable_op`` (an op's
  derivative is infinite: ``sqrt`` or a norm at 0).
- ``exploding_gradient``: gradients not zeroed -> ``missing_zero_grad``; inputs far
  from unit scale, or an MSE/L1 loss that started above 1000 -> ``unscaled_data``;
  float16 weights under a too-small epsilon -> ``low_precision_overflow``; else the
  step itself -> ``learning_rate``. In a recurrent model, clipping leads the remedies
  (the long products of recurrent Jacobians spike at any learning rate).
- ``dying_relu``: an output activation before a loss that reads logits ->
  ``output_activation``; dead in the first window already -> ``bad_init``; gradients
  not zeroed -> ``missing_zero_grad``; unscaled inputs -> ``unscaled_data``; large
  steps before, or steps 10x the healthy 1e-3 while the loss rose above its best ->
  ``learning_rate``.
- ``saturation``: saturated in the first window already -> ``unscaled_data`` when the
  inputs are large, else ``bad_init``; large steps before -> ``learning_rate``.
- ``vanishing_gradient``: sigmoid/tanh hidden activations -> ``saturating_activation``.
- ``output_activation``: the output activation; a sigmoid/tanh output whose targets
  are class labels outside its range leads with fixing the labels, real-valued
  targets with scaling them.
- ``diverged_plateau``: float16 weights under a too-small epsilon refine the
  detector's ``learning_rate``.

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

from gradvitals.detectors._output_activation import graph_inputs, graph_ops, op_name
from gradvitals.findings import Cause, FailureMode, Finding
from gradvitals.stats import SATURATING, WindowRecord

__all__ = ["Diagnosis", "diagnose", "loss_op_risks"]

#: update ratio (|dw| / |w| per step) above which a step counts as large: 100x the
#: healthy ~1e-3, a tenth of the exploding detector's "step as large as the weights"
LARGE_STEP = 0.1
#: update ratio 10x the healthy ~1e-3: large enough to blame when the loss also rose
RAISED_STEP = 0.01
#: the loss "rose" when a recent window is this much above the best window before it
#: (relative), and by at least LOSS_ROSE_MIN of the first window's loss (not noise)
LOSS_ROSE = 0.2
LOSS_ROSE_MIN = 0.05
#: input RMS or max |x| beyond which data counts as unscaled (He/Xavier init assume ~1)
INPUT_RMS_LIMIT = 100.0
INPUT_ABS_LIMIT = 1e4
#: an MSE/L1 loss whose first window is above this comes from targets far from unit scale
UNSCALED_LOSS = 1e3
#: windows (from the first) in which a failure counts as present at initialisation
INIT_WINDOWS = 2
#: float16's smallest nonzero square root, sqrt(2**-24): an Adam epsilon below it is
#: all that bounds a step once a squared gradient underflows to 0 in float16
FP16_SQRT_TINY = 2.0**-12

_MSE_OPS = frozenset(
    {"MseLossBackward0", "L1LossBackward0", "SmoothL1LossBackward0", "HuberLossBackward0"}
)
_LOG_OPS = frozenset({"LogBackward0", "Log2Backward0", "Log10Backward0"})
_PROB_OPS = frozenset({"SoftmaxBackward0", "SigmoidBackward0"})
_LOGIT_LOSS_OPS = frozenset({"LogSoftmaxBackward0", "BinaryCrossEntropyWithLogitsBackward0"})
_LOW = frozenset({"float16", "bfloat16"})

#: loss ops that map finite values to finite values (overflow aside): reshapes, sums,
#: products, the fused losses (their logs act on log_softmax or are clamped)
_FINITE_OPS = frozenset(
    {
        *("View", "Reshape", "ReshapeAlias", "UnsafeView", "Squeeze", "Unsqueeze", "Expand"),
        *("Permute", "Transpose", "T", "Select", "Slice", "Index", "Clone", "ToCopy"),
        *("Flatten", "Stack", "Cat", "Split", "Unbind", "Gather", "Where", "Contiguous"),
        *("Add", "Sub", "Rsub", "Neg", "Mul", "Sum", "Mean", "Abs", "Clamp", "Maximum"),
        *("Minimum", "Max", "Min", "Amax", "Amin", "Relu", "Sigmoid", "Tanh", "Softmax"),
        *("LogSoftmax", "NllLoss", "MseLoss", "L1Loss", "SmoothL1Loss", "HuberLoss"),
        *("BinaryCrossEntropyWithLogits", "BinaryCrossEntropy", "MultiMarginLoss"),
        *("SoftMarginLoss", "HingeEmbeddingLoss", "MarginRankingLoss", "Linear", "Addmm"),
        *("Mm", "Bmm", "Matmul"),
    }
)
#: ops whose derivative is infinite at a finite input (the forward stays finite)
_STEEP = {
    "Sqrt": "sqrt (its slope is infinite at 0)",
    "LinalgVectorNorm": "a vector norm (its gradient at the zero vector is 0/0)",
    "Norm": "a norm (its gradient at the zero vector is 0/0)",
    "Std": "std (a sqrt, infinite slope at zero spread)",
    "Var": "var",
    "Acos": "acos (infinite slope at +-1)",
    "Asin": "asin (infinite slope at +-1)",
    "Cdist": "cdist (a norm, 0/0 at a zero distance)",
}


@dataclass(frozen=True)
class Diagnosis:
    """A cause, what decided it, and (optionally) the remedy to try first."""

    cause: Cause
    evidence: str
    lead_remedy: str | None = None
    layer: str | None = None  # where the failure was born, when that is not the symptom's layer


# -- evidence -------------------------------------------------------------------------------
def _max_update(record: WindowRecord) -> float:
    vals = [lay.update_ratio for lay in record.layers.values() if math.isfinite(lay.update_ratio)]
    return max(vals, default=math.nan)


def _top_step(history: Sequence[WindowRecord], record: WindowRecord) -> float:
    """The largest update ratio of this and the last three windows (NaN: none measured)."""
    recent = [*list(history)[-3:], record]
    return max((_max_update(r) for r in recent if r.layers), default=math.nan)


def _large_steps(history: Sequence[WindowRecord], record: WindowRecord) -> float | None:
    """The largest update ratio of this and the last few windows, if above LARGE_STEP."""
    top = _top_step(history, record)
    return top if math.isfinite(top) and top >= LARGE_STEP else None


def _step_cause(
    history: Sequence[WindowRecord],
    record: WindowRecord,
    earlier: Sequence[Finding],
    after_steps: str,
    after_explosion: str,
) -> Diagnosis | None:
    """``learning_rate`` when large steps (or an earlier explosion) came first.

    ``after_steps`` is formatted with ``step``, the largest update ratio seen.
    """
    step = _large_steps(history, record)
    if step is None and not any(e.kind is FailureMode.EXPLODING_GRADIENT for e in earlier):
        return None
    return Diagnosis(
        Cause.LEARNING_RATE,
        after_steps.format(step=step) if step is not None else after_explosion,
    )


def _window_loss(r: WindowRecord) -> float:
    if r.loss is None or not r.loss.count or r.loss.n_nonfinite:
        return math.nan
    return r.loss.mean


def _loss_rose(history: Sequence[WindowRecord], record: WindowRecord) -> str | None:
    """A window among the last four rose LOSS_ROSE above the best window before it."""
    runs = [*history, record]
    losses = [_window_loss(r) for r in runs]
    first = next((v for v in losses if math.isfinite(v)), math.nan)
    if not math.isfinite(first):
        return None
    for i in range(max(1, len(runs) - 4), len(runs)):
        before = [v for v in losses[:i] if math.isfinite(v)]
        now = losses[i]
        if not before or not math.isfinite(now):
            continue
        best = min(before)
        rise = now - best
        if rise >= LOSS_ROSE * abs(best) and rise >= LOSS_ROSE_MIN * abs(first) and rise > 0:
            return f"the loss rose to {now:.4g} at step {runs[i].step} (best before {best:.4g})"
    return None


def _probe(facts: dict[str, Any]) -> dict[str, Any]:
    return dict(facts.get("probe") or {})


def _input_scale(record: WindowRecord, facts: dict[str, Any]) -> tuple[float, float, str]:
    """``(rms, max |x|, source)`` of the inputs: the sampled batches, else the probe."""
    b = record.batch
    if b is not None and (math.isfinite(b.input_rms) or math.isfinite(b.input_abs_max)):
        return b.input_rms, b.input_abs_max, "inputs"
    p = _probe(facts)
    rms, top = p.get("input_rms"), p.get("input_abs_max")
    if isinstance(rms, (int, float)) and isinstance(top, (int, float)):
        return float(rms), float(top), "probe batch's inputs"
    return math.nan, math.nan, ""


def _unscaled(
    record: WindowRecord, history: Sequence[WindowRecord], facts: dict[str, Any] | None = None
) -> str | None:
    rms, top, what = _input_scale(record, facts or {})
    if math.isfinite(rms) and rms >= INPUT_RMS_LIMIT:
        return f"the {what}' RMS is {rms:.3g} (limit {INPUT_RMS_LIMIT:g})"
    if math.isfinite(top) and top >= INPUT_ABS_LIMIT:
        return f"the {what} reach |x| = {top:.3g} (limit {INPUT_ABS_LIMIT:g})"
    first = next((r for r in [*history, record] if r.loss is not None and r.loss.count), None)
    ops = set(record.facts.get("loss_ops", ()))
    if first is not None and ops & _MSE_OPS and math.isfinite(first.loss.mean):  # type: ignore[union-attr]
        start = first.loss.mean  # type: ignore[union-attr]
        if start >= UNSCALED_LOSS:
            return f"the regression loss started at {start:.3g}: targets far from unit scale"
    return None


def _low_precision(facts: dict[str, Any]) -> str | None:
    """float16 weights trained with an Adam-type epsilon too small for float16."""
    dtypes = set(facts.get("param_dtypes") or ())
    eps = facts.get("optimizer_eps")
    if "float16" not in dtypes or not isinstance(eps, (int, float)) or eps >= FP16_SQRT_TINY:
        return None
    return (
        f"the weights are float16 and the optimizer's epsilon is {eps:g}: squared gradients "
        f"below 6e-8 round to 0 in float16, and an epsilon below {FP16_SQRT_TINY:.2g} (the "
        "smallest square root float16 holds) is then all that bounds the step"
    )


def _loss_graph(record: WindowRecord, history: Sequence[WindowRecord]) -> dict[str, Any] | None:
    """The loss's own graph: this window's, else the latest one recorded."""
    for r in [record, *reversed(list(history))]:
        g = r.facts.get("loss_graph")
        if g:
            return dict(g)
    return None


def _loss_ops(record: WindowRecord, history: Sequence[WindowRecord]) -> list[str]:
    for r in [record, *reversed(list(history))]:
        ops = r.facts.get("loss_ops")
        if ops:
            return list(ops)
    return []


def loss_op_risks(graph: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """``(ops that can turn finite values into NaN/Inf, ops with an infinite slope)``
    among the loss's own ops. ``pow`` with an integer exponent >= 1 is finite.

    >>> g = {"ops": ["MeanBackward0", "SqrtBackward0", "PowBackward0", "AddmmBackward0"],
    ...      "inputs": [[1], [2], [3], []], "layers": [3], "exponents": [[2, 2.0]]}
    >>> loss_op_risks(g)
    (['Sqrt'], ['Sqrt'])
    >>> loss_op_risks({"ops": ["MseLossBackward0", "AddmmBackward0"], "inputs": [[1], []],
    ...                "layers": [1]})
    ([], [])
    """
    if not graph:
        return [], []
    layers = set(graph.get("layers", ()))
    exps = {int(i): float(e) for i, e in graph.get("exponents", ())}
    risky: list[str] = []
    steep: list[str] = []
    for i, node in enumerate(graph.get("ops", ())):
        if i in layers:
            continue
        op = op_name(node)
        if op == "Pow":
            e = exps.get(i, math.nan)
            if math.isfinite(e) and e >= 1.0 and e == int(e):
                continue
            steep.append(op)
        elif op in _STEEP:
            steep.append(op)
        if op not in _FINITE_OPS and op not in risky:
            risky.append(op)
    return risky, list(dict.fromkeys(steep))


def _log_of_probability(graph: dict[str, Any] | None, ops: Sequence[str]) -> str | None:
    """``log`` applied directly to a softmax/sigmoid output (through reshapes only)."""
    if graph:
        names = [op_name(n) for n in graph.get("ops", ())]
        for i, name in enumerate(names):
            if name + "Backward0" not in _LOG_OPS:
                continue
            for j in graph_inputs(graph, i):
                if names[j] + "Backward0" in _PROB_OPS:
                    return f"log of a {names[j].lower()} output"
        return None
    names = list(ops)  # no graph: adjacent in the breadth-first op list
    for i, name in enumerate(names):
        if name in _LOG_OPS and any(n in _PROB_OPS for n in names[i + 1 : i + 4]):
            prob = next(n for n in names[i + 1 : i + 4] if n in _PROB_OPS)
            return f"log of a {prob.removesuffix('Backward0').lower()} output"
    return None


def _user_loss(facts: dict[str, Any]) -> bool:
    """Keras: the loss is a function the user wrote, not one of Keras' own."""
    return bool((facts.get("loss") or {}).get("custom"))


# -- nonfinite ------------------------------------------------------------------------------
def _input_nonfinite(record: WindowRecord, facts: dict[str, Any]) -> str | None:
    b = record.batch
    if b is not None and b.n_input_nonfinite:
        at = (
            f" of step {b.first_input_nonfinite_step}"
            if b.first_input_nonfinite_step is not None
            else ""
        )
        return f"the batch{at} entering the model already held NaN/Inf"
    prov = record.facts.get("provenance") or {}
    if prov.get("kind") == "input":
        return "the replayed batch holds NaN/Inf"
    p = _probe(facts)
    if p.get("input_nonfinite"):
        n, total = int(p["input_nonfinite"]), p.get("examples", "?")
        return (
            f"{n} of the {total} probe examples drawn from the training data hold NaN/Inf "
            "in their inputs"
        )
    return None


def _target_nonfinite(record: WindowRecord, facts: dict[str, Any]) -> str | None:
    b = record.batch
    if b is not None and b.target_nonfinite:
        return "the loss's target tensor held NaN/Inf"
    prov = record.facts.get("provenance") or {}
    if prov.get("kind") == "target":
        return str(prov.get("detail") or "the replayed targets hold NaN/Inf")
    p = _probe(facts)
    if p.get("target_nonfinite"):
        return f"{int(p['target_nonfinite'])} of the probe examples' targets hold NaN/Inf"
    return None


def _nonfinite(
    f: Finding,
    record: WindowRecord,
    history: Sequence[WindowRecord],
    facts: dict[str, Any],
    earlier: Sequence[Finding],
) -> Diagnosis:
    why = _input_nonfinite(record, facts)
    if why:
        return Diagnosis(Cause.NONFINITE_INPUT, why)
    why = _target_nonfinite(record, facts)
    if why:
        return Diagnosis(Cause.NONFINITE_TARGET, why)
    prov = record.facts.get("provenance") or {}
    kind = prov.get("kind")
    if kind == "overflow":
        return Diagnosis(
            Cause.LOW_PRECISION_OVERFLOW, prov["detail"], layer=prov.get("module") or None
        )
    if kind == "weights" and prov.get("dtype") in _LOW:
        return Diagnosis(
            Cause.LOW_PRECISION_OVERFLOW,
            f"{prov['detail']}: the update itself overflowed (or divided by 0) in {prov['dtype']}",
            layer=prov.get("module") or None,
        )
    why = _low_precision(facts)
    if why:
        return Diagnosis(Cause.LOW_PRECISION_OVERFLOW, why)
    b = record.batch
    if b is not None and b.stale_grad:
        return Diagnosis(Cause.MISSING_ZERO_GRAD, "gradients were not zeroed between steps")
    # growth before the NaN explains it better than the op that finally overflowed
    exploded = [e for e in earlier if e.kind is FailureMode.EXPLODING_GRADIENT]
    if exploded:
        return Diagnosis(
            Cause.LEARNING_RATE, f"the gradients exploded first (step {exploded[-1].step})"
        )
    if kind == "nan_from_finite" and not prov.get("masked"):
        return Diagnosis(
            Cause.UNSTABLE_OP, prov["detail"], "guard_op", layer=prov.get("module") or None
        )
    loss = record.loss
    sites_finite = not any(s.n_nonfinite for s in record.sites.values())
    forward_clean = kind == "forward_finite" or (
        kind in (None, "replay_failed") and bool(sites_finite and record.sites)
    )
    weights = [lay for lay in record.layers.values() if lay.is_weight_layer and lay.n_samples]
    out_bad = bool(weights) and weights[-1].n_grad_nonfinite > 0
    loss_bad = loss is not None and loss.n_nonfinite > 0
    loss_ok = loss is not None and loss.count > 0 and not loss.n_nonfinite
    graph = _loss_graph(record, history)
    risky, steep = loss_op_risks(graph)
    # the weights were already NaN on replay: an unsampled step's update wrote them, and
    # the first NaN may have been born in that step's loss
    spread = kind == "weights" and loss_bad
    if (forward_clean or spread) and loss_bad:
        # the outputs were finite, and the loss was not: the loss made it (or its target)
        seen = (
            "the model's outputs were finite and the loss was not"
            if forward_clean
            else "the weights were already NaN on replay (an unsampled step's update spread "
            "the first NaN, seen in the loss)"
        )
        pattern = _log_of_probability(graph, _loss_ops(record, history))
        if pattern:
            return Diagnosis(
                Cause.UNSTABLE_LOSS, f"{seen}: the loss takes the {pattern}", "stable_loss"
            )
        if risky or _user_loss(facts):
            what = (
                f"the loss computes {', '.join(risky[:4])}"
                if risky
                else "the loss is a function written for this model"
            )
            return Diagnosis(
                Cause.UNSTABLE_LOSS,
                f"{seen}; {what}, which can make NaN/Inf from finite values (a log of 0, a "
                "division by a zero count...)",
                "guard_op",
            )
    step = _large_steps(history, record)
    if step is not None:
        return Diagnosis(
            Cause.LEARNING_RATE, f"a step moved a layer by {step:.2g}x its weights before the NaN"
        )
    if kind == "nan_from_finite":
        return Diagnosis(
            Cause.UNSTABLE_OP, prov["detail"], "guard_op", layer=prov.get("module") or None
        )
    if forward_clean and loss_bad:
        if graph is not None and not risky:
            ops = [o for o in graph_ops(graph) if o not in ("Squeeze", "View", "Reshape")]
            return Diagnosis(
                Cause.NONFINITE_TARGET,
                f"the model's outputs were finite and the loss ({', '.join(ops[:4])}) cannot "
                "make NaN/Inf from finite values: its other input, the target, held NaN/Inf "
                "(inferred: the targets are not visible once backward() has run)",
            )
        return Diagnosis(
            Cause.UNSTABLE_LOSS,
            "the model's outputs were finite and the loss was not: the loss computation made "
            "the NaN/Inf (a log of 0, a division by a zero count...)",
            "guard_op",
        )
    if forward_clean and out_bad and loss_ok:
        what = f"; the loss computes {', '.join(_STEEP.get(s, s) for s in steep)}" if steep else ""
        return Diagnosis(
            Cause.UNSTABLE_OP,
            "the forward pass and the loss were finite, the gradients were not: an op's "
            f"derivative is infinite at its input{what}",
            "guard_op",
        )
    if forward_clean and out_bad:
        return Diagnosis(
            Cause.UNSTABLE_LOSS,
            "the model's outputs were finite and the loss's gradient at the output was not: "
            "the loss computation made the NaN/Inf (a log of 0, a division by a zero count...)",
            "guard_op",
        )
    if kind == "forward_finite":
        bad = [lay.name for lay in weights if lay.n_grad_nonfinite]
        where = f" (the last layer with non-finite gradients is {bad[-1]})" if bad else ""
        return Diagnosis(
            Cause.UNSTABLE_OP,
            "the forward pass stayed finite on replay and the output's gradient was finite: "
            f"an op's backward made the NaN/Inf{where} (sqrt or norm at 0, pow of 0...)",
            "guard_op",
            layer=bad[-1] if bad else None,
        )
    if kind == "weights":
        return Diagnosis(
            Cause.UNKNOWN,
            f"{prov['detail']} at the first failing sampled step: an earlier, unsampled "
            "step's update wrote it; ruled out: non-finite inputs and targets, large steps",
        )
    return Diagnosis(
        Cause.UNKNOWN,
        "ruled out: non-finite inputs and targets, large steps before it; "
        "no replay was possible (the failing step was not sampled)",
    )


# -- the other symptoms ---------------------------------------------------------------------
def _reads_logits(record: WindowRecord, history: Sequence[WindowRecord]) -> bool | None:
    """Does the loss read raw logits (cross-entropy, BCE with logits)? None: not known."""
    ops = _loss_ops(record, history)
    if not ops:
        return None
    return bool(set(ops) & _LOGIT_LOSS_OPS)


def _dying(
    f: Finding,
    record: WindowRecord,
    history: Sequence[WindowRecord],
    facts: dict[str, Any],
    earlier: Sequence[Finding],
    early: bool,
) -> Diagnosis:
    b = record.batch
    site = str(f.evidence.get("site", f.layer or "")).split("#")[0]
    if site in set(facts.get("output_sites", ())) and _reads_logits(record, history) is not False:
        return Diagnosis(
            Cause.OUTPUT_ACTIVATION,
            f"{site} is applied after the last weight layer: it clamps the outputs the loss reads",
        )
    if f.evidence.get("dead_at_start", early):
        return Diagnosis(
            Cause.BAD_INIT,
            "the units were already dead in the first window, before any update could kill them",
        )
    if b is not None and b.stale_grad:
        return Diagnosis(Cause.MISSING_ZERO_GRAD, "gradients were not zeroed between steps")
    why = _unscaled(record, history, facts)
    if why:
        return Diagnosis(Cause.UNSCALED_DATA, why)
    lr = _step_cause(
        history,
        record,
        earlier,
        "steps of up to {step:.2g}x the weights pushed the units negative",
        "the units died after the gradients exploded",
    )
    if lr is not None:
        return lr
    top = _top_step(history, record)
    rose = _loss_rose(history, record)
    if rose and math.isfinite(top) and top >= RAISED_STEP:
        return Diagnosis(
            Cause.LEARNING_RATE,
            f"the units died while steps reached {top:.2g}x the weights (10x a healthy 1e-3 "
            f"or more) and {rose}: the steps are too large",
        )
    return Diagnosis(Cause.UNKNOWN, "not at init, no large steps, inputs at unit scale")


def _output_activation(f: Finding) -> Diagnosis:
    if f.evidence.get("rule") == "targets_out_of_range":
        labels = f.evidence.get("targets") == "labels"
        return Diagnosis(
            Cause.OUTPUT_ACTIVATION,
            "the targets lie outside the range of the output activation"
            + (
                ": they are class labels, map them to what the output can produce (0/1)"
                if labels
                else ": they are real values, scale them into the output's range"
            ),
            "clean_targets" if labels else "normalize_data",
        )
    return Diagnosis(Cause.OUTPUT_ACTIVATION, str(f.evidence.get("cause_evidence", "")))


def _recurrent_clip(d: Diagnosis, facts: dict[str, Any]) -> Diagnosis:
    """A learning-rate instability in a recurrent model: clipping first (Pascanu et al.)."""
    rnn = list(facts.get("recurrent") or ())
    if d.cause is not Cause.LEARNING_RATE or not rnn or d.lead_remedy is not None:
        return d
    return Diagnosis(
        d.cause,
        f"{d.evidence}; the model is recurrent ({', '.join(rnn[:3])}): products of recurrent "
        "Jacobians spike even at a good learning rate, so clip first",
        "clip_grad_norm",
        d.layer,
    )


def diagnose(
    f: Finding,
    record: WindowRecord,
    history: Sequence[WindowRecord],
    model_facts: dict[str, Any],
    earlier: Sequence[Finding],
) -> Diagnosis:
    """The cause of finding ``f``, decided in ``record`` (its window) given the run's
    earlier ``history``, the collector's ``model_facts`` and the ``earlier`` findings.

    A cause the detector set (``f.cause``) is kept, with its evidence, unless a rule
    here refines it."""
    kind = f.kind
    b = record.batch
    facts = model_facts
    preset = f.cause is not Cause.UNKNOWN
    if preset:
        why = _low_precision(facts)
        if why and kind in (FailureMode.DIVERGED_PLATEAU, FailureMode.EXPLODING_GRADIENT):
            return Diagnosis(Cause.LOW_PRECISION_OVERFLOW, why, "fix_precision")
        kept = Diagnosis(f.cause, str(f.evidence.get("cause_evidence", "")))
        return _recurrent_clip(kept, facts) if kind is FailureMode.EXPLODING_GRADIENT else kept
    if kind is FailureMode.NONFINITE:
        return _recurrent_clip(_nonfinite(f, record, history, facts, earlier), facts)
    early = record.index < INIT_WINDOWS + (1 if kind is FailureMode.DYING_RELU else 0)
    if kind is FailureMode.EXPLODING_GRADIENT:
        if b is not None and b.stale_grad:
            return Diagnosis(
                Cause.MISSING_ZERO_GRAD,
                "the first backward of a step began on the previous step's gradients: they "
                "accumulate across steps (optimizer.zero_grad() is not called)",
            )
        why = _unscaled(record, history, facts)
        if why:
            return Diagnosis(Cause.UNSCALED_DATA, why)
        why = _low_precision(facts)
        if why:
            return Diagnosis(Cause.LOW_PRECISION_OVERFLOW, why, "fix_precision")
        top = _max_update(record)
        what = f"the largest step was {top:.2g}x its layer's weights" if math.isfinite(top) else ""
        d = Diagnosis(Cause.LEARNING_RATE, what or "norms grew past their history with the loss")
        return _recurrent_clip(d, facts)
    if kind is FailureMode.DYING_RELU:
        return _dying(f, record, history, facts, earlier, early)
    if kind is FailureMode.SATURATION:
        if f.evidence.get("saturated_at_start", early):
            why = _unscaled(record, history, facts)
            if why:
                return Diagnosis(Cause.UNSCALED_DATA, why)
            return Diagnosis(
                Cause.BAD_INIT,
                "saturated from the first windows: the initial weights are too large for the activation",
            )
        lr = _step_cause(
            history,
            record,
            earlier,
            "saturated mid-training after steps of up to {step:.2g}x the weights",
            "saturated after the gradients exploded",
        )
        if lr is not None:
            return lr
        return Diagnosis(Cause.UNKNOWN, "saturated mid-training without large steps")
    if kind is FailureMode.VANISHING_GRADIENT:
        acts = set(facts.get("activations", {}).values())
        sat = sorted(acts & SATURATING)
        if sat:
            return Diagnosis(
                Cause.SATURATING_ACTIVATION,
                f"the hidden activations are {', '.join(sat)}: their derivatives shrink the "
                "gradient layer by layer",
            )
        return Diagnosis(Cause.UNKNOWN, "no saturating activation in the model")
    if kind is FailureMode.OUTPUT_ACTIVATION:
        return _output_activation(f)
    if kind is FailureMode.DIVERGED_PLATEAU:
        why = _low_precision(facts)
        if why:
            return Diagnosis(Cause.LOW_PRECISION_OVERFLOW, why, "fix_precision")
    return Diagnosis(Cause.UNKNOWN, "")
