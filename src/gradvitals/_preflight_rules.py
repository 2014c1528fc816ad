"""Framework-free decisions for the pre-flight rules that need a batch and a loss.

The PyTorch lint (:func:`gradvitals.lint`) and the Keras lint read the model, the
batch and the loss their own way, reduce them to names and numbers, and ask these
functions whether something is wrong. Each returns a :class:`~gradvitals.Finding`
(``step=-1``, remedies from the mode registry) or None.

Names used here: an output *activation* is a catalog-style op name (``"softmax"``,
``"sigmoid"``, ``"relu"``, ``"log_softmax"``, ``"linear"`` for a raw affine output);
a *loss* is PyTorch's functional name (``"cross_entropy"``, ``"nll_loss"``,
``"binary_cross_entropy_with_logits"``, ``"binary_cross_entropy"``, ``"mse_loss"``...).

The numbers in the messages:

- Probabilities used as logits. If every logit lies in ``[lo, hi]`` (softmax/sigmoid:
  ``[0, 1]``), softmax over C classes can give the true class at most
  ``p_max = e^(hi-lo) / (e^(hi-lo) + C - 1)``, so cross-entropy never falls below
  ``-log p_max`` (C = 10: ``p_max = 0.232``, loss >= 1.46). With logits ``>= 0``,
  sigmoid never goes below 0.5, so binary cross-entropy on a 0 target stays ``>= ln 2``.
- Data scale. ``s = sqrt(mean(x^2))`` (the RMS, ``= sqrt(mean^2 + std^2)``). Default
  initialisations assume inputs of unit scale (LeCun et al. 1998, "Efficient
  BackProp", section 4.3; Glorot & Bengio 2010; He et al. 2015): at scale s, the first
  layer's pre-activations are s times too large (saturating sigmoid/tanh at s ~ 10)
  and its SGD updates s^2 times. Inputs are flagged outside ``[1e-3, 10]``: one order of
  magnitude above unit scale already means a 100x step mismatch, and raw 0-255 pixels
  (RMS 85 on MNIST, ~130 on CIFAR-10) are the common case; [0, 1] pixels (RMS 0.3-0.5)
  and standardised data (1) pass. Regression targets are flagged outside ``[1e-3, 100]``:
  a linear output can scale itself, but at s = 100 the initial MSE is ~10^4, its
  gradient 100x, and an output bias moving by ``lr`` per Adam step needs ~s/lr steps
  (10^5 at lr 1e-3) just to reach the targets' mean.

>>> f = output_for_loss("softmax", "cross_entropy", classes=10, layer="3")
>>> f.kind.value, f.cause.value, round(f.evidence["max_probability"], 3)
('output_activation', 'output_activation', 0.232)
>>> output_for_loss("linear", "cross_entropy", classes=10, layer="3") is None
True
>>> data_scale("example_input", summarize([0.0, 255.0, 128.0, 3.0]), (1e-3, 10.0)).kind.value
'unscaled_data'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradvitals.findings import Cause, FailureMode, Finding
from gradvitals.remedies import remedies_for, render

__all__ = [
    "BINARY_LOSSES",
    "CLASS_LOSSES",
    "INPUT_SCALE",
    "LOGIT_LOSSES",
    "LOGPROB_LOSSES",
    "OUTPUT_RANGE",
    "REGRESSION_LOSSES",
    "TARGET_SCALE",
    "Summary",
    "binary_targets",
    "class_loss_on_one_unit",
    "data_scale",
    "output_for_loss",
    "output_range_vs_targets",
    "probability_loss_on_scores",
    "regression_on_class_ids",
    "summarize",
    "unit_softmax",
    "unstable_log",
]

#: (lo, hi) of each output activation: the values its output can take
OUTPUT_RANGE: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0),
    "softmax": (0.0, 1.0),
    "hardsigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
    "hardtanh": (-1.0, 1.0),
    "relu": (0.0, math.inf),
    "relu6": (0.0, 6.0),
    "softplus": (0.0, math.inf),
    "exp": (0.0, math.inf),
    "elu": (-1.0, math.inf),
    "celu": (-1.0, math.inf),
    "selu": (-1.7581, math.inf),
    "log_softmax": (-math.inf, 0.0),
    "logsigmoid": (-math.inf, 0.0),
}

#: losses that apply softmax/sigmoid themselves and want raw logits
LOGIT_LOSSES: dict[str, str] = {
    "cross_entropy": "CrossEntropyLoss",
    "binary_cross_entropy_with_logits": "BCEWithLogitsLoss",
    "multilabel_soft_margin_loss": "MultiLabelSoftMarginLoss",
}
#: losses that want log-probabilities (<= 0)
LOGPROB_LOSSES: dict[str, str] = {"nll_loss": "NLLLoss", "kl_div": "KLDivLoss"}
#: losses over class indices
CLASS_LOSSES = frozenset({"cross_entropy", "nll_loss"})
#: losses that want targets in [0, 1]
BINARY_LOSSES: dict[str, str] = {
    "binary_cross_entropy_with_logits": "BCEWithLogitsLoss",
    "binary_cross_entropy": "BCELoss",
    "multilabel_soft_margin_loss": "MultiLabelSoftMarginLoss",
}
#: element-wise regression losses
REGRESSION_LOSSES: dict[str, str] = {
    "mse_loss": "MSELoss",
    "l1_loss": "L1Loss",
    "smooth_l1_loss": "SmoothL1Loss",
    "huber_loss": "HuberLoss",
}
#: ops that produce raw scores (an affine output)
_AFFINE_OPS = frozenset({"linear", "addmm", "matmul", "mm", "bmm", "conv1d", "conv2d", "conv3d"})

#: default (low, high) RMS bounds; see the module docstring for why
INPUT_SCALE: tuple[float, float] = (1e-3, 10.0)
#: a column this many times the median column RMS (and above the bound) mixes scales
_MIXED = 10.0
TARGET_SCALE: tuple[float, float] = (1e-3, 100.0)


def _finding(
    kind: FailureMode,
    layer: str | None,
    message: str,
    evidence: dict[str, Any],
    remedies: Sequence[str] | None = None,
) -> Finding:
    cause = {
        FailureMode.OUTPUT_ACTIVATION: Cause.OUTPUT_ACTIVATION,
        FailureMode.UNSTABLE_LOSS: Cause.UNSTABLE_LOSS,
        FailureMode.UNSCALED_DATA: Cause.UNSCALED_DATA,
    }.get(kind, Cause.UNKNOWN)
    if kind is FailureMode.LOSS_MISMATCH:
        # no Cause names "the wrong loss for these targets": say what decided it
        evidence = {**evidence, "cause_evidence": "the loss function does not fit the targets"}
    chosen = [render(k) for k in remedies] if remedies is not None else remedies_for(kind)
    return Finding(
        kind=kind,
        layer=layer,
        step=-1,
        message=message,
        evidence=evidence,
        remedies=chosen,
        cause=cause,
    )


def _label(loss: str, label: str | None) -> str:
    if label:
        return label
    name = {**LOGIT_LOSSES, **LOGPROB_LOSSES, **BINARY_LOSSES, **REGRESSION_LOSSES}.get(loss)
    return f"nn.{name}" if name else loss


def max_probability(span: float, classes: int) -> float:
    """Largest softmax probability reachable when all C logits lie within ``span``.

    ``e^span / (e^span + C - 1)``; 1.0 for an unbounded span.

    >>> round(max_probability(1.0, 10), 4), max_probability(math.inf, 10)
    (0.232, 1.0)
    """
    if not math.isfinite(span):
        return 1.0
    return 1.0 / (1.0 + (classes - 1) * math.exp(-span))


def output_for_loss(
    act: str | None,
    loss: str,
    *,
    classes: int | None,
    layer: str | None,
    where: str = "",
    zero_fraction: float | None = None,
    loss_label: str | None = None,
) -> Finding | None:
    """An output activation that the loss applies again, or that it cannot read.

    Fires (``output_activation``) for a non-negative output (softmax, sigmoid, ReLU,
    ReLU6, softplus, hard sigmoid, exp) into a logits loss (cross-entropy, BCE with
    logits), and for anything but log-probabilities into ``nll_loss``/``kl_div``
    (probabilities, ReLU outputs or raw affine scores: ``-z_y`` has no lower bound).

    Args:
        act: the output activation (``"linear"`` for a raw affine output, None unknown).
        loss: the loss, by its ``torch.nn.functional`` name.
        classes: the number of classes/units on the output, when known.
        layer: where the activation is (a module name), for the finding.
        where: a phrase saying where it was seen (``" (F.softmax in forward)"``).
        zero_fraction: the fraction of outputs exactly 0 on the batch (ReLU), if measured.
        loss_label: how to name the loss in the message (default ``nn.<Class>``).

    >>> f = output_for_loss("sigmoid", "binary_cross_entropy_with_logits", classes=1, layer="2")
    >>> f.evidence["probability_range"]
    [0.5, 0.7311]
    >>> output_for_loss("softmax", "nll_loss", classes=3, layer="2").message.split(":")[0]
    'nn.NLLLoss expects log-probabilities (<= 0) but gets softmax outputs'
    """
    if act is None:
        return None
    name = _label(loss, loss_label)
    lo, hi = OUTPUT_RANGE.get(act, (-math.inf, math.inf))
    evidence: dict[str, Any] = {"activation": act, "loss": loss, "output_range": [lo, hi]}
    if classes is not None:
        evidence["classes"] = classes
    if zero_fraction is not None:
        evidence["zero_fraction"] = zero_fraction
    if loss in LOGIT_LOSSES and lo >= 0.0:
        msg = (
            f"{act} output{where} feeds {name}, which applies "
            f"{'log_softmax' if loss == 'cross_entropy' else 'logsigmoid'} itself: "
        )
        if loss == "cross_entropy":
            if act == "softmax":
                msg = f"softmax applied twice: {msg}"
            c = classes if classes and classes > 1 else 2
            p = max_probability(hi - lo, c)
            evidence.update(max_probability=p, min_loss=-math.log(p))
            if math.isfinite(hi):
                msg += (
                    f"the logits it sees lie in [{lo:g}, {hi:g}], so with {c} classes the "
                    f"true class gets at most p = {p:.3f} and the loss stays >= {-math.log(p):.3f}"
                )
            else:
                msg += (
                    "the logits it sees cannot go below 0, and a logit stuck at 0 gets no gradient"
                )
        else:
            p_lo = 1.0 / (1.0 + math.exp(-lo))
            p_hi = 1.0 / (1.0 + math.exp(-hi)) if math.isfinite(hi) else 1.0
            evidence.update(probability_range=[round(p_lo, 4), round(p_hi, 4)])
            msg += (
                f"sigmoid of [{lo:g}, {hi:g}] lies in [{p_lo:.3f}, {p_hi:.3f}], so a 0 target "
                f"keeps a loss >= {-math.log(1.0 - p_lo):.3f} and nothing is ever predicted negative"
            )
        if zero_fraction is not None and zero_fraction > 0.0:
            msg += f"; {zero_fraction:.0%} of the outputs are exactly 0 on this batch"
        return _finding(FailureMode.OUTPUT_ACTIVATION, layer, msg, evidence)
    if loss in LOGPROB_LOSSES and (lo >= 0.0 or act in _AFFINE_OPS or act == "linear"):
        what = "raw scores" if act in _AFFINE_OPS or act == "linear" else f"{act} outputs"
        msg = f"{name} expects log-probabilities (<= 0) but gets {what}{where}: it minimises "
        if act in ("softmax", "sigmoid", "hardsigmoid"):
            msg += "-p, bounded in [-1, 0], whose gradient fades as p -> 0; use log_softmax"
        else:
            msg += "-z for the target class, which has no lower bound, so the loss can diverge"
        return _finding(FailureMode.OUTPUT_ACTIVATION, layer, msg, evidence)
    return None


def probability_loss_on_scores(act: str, loss_label: str, *, layer: str | None) -> Finding | None:
    """A cross-entropy on probabilities (Keras ``from_logits=False``, the default) fed by an
    output that is not a probability (linear, ReLU, tanh...).

    Keras clips such outputs to ``[1e-7, 1 - 1e-7]`` (a categorical loss also divides by
    their sum), so a score below 0 sits on the clip and gets no gradient.

    >>> f = probability_loss_on_scores("linear", "'binary_crossentropy'", layer="dense")
    >>> f.kind.value, [r.key for r in f.remedies]
    ('output_activation', ['match_loss', 'remove_output_activation'])
    >>> probability_loss_on_scores("sigmoid", "'binary_crossentropy'", layer="dense") is None
    True
    """
    if act in ("softmax", "sigmoid", "hardsigmoid"):
        return None
    return _finding(
        FailureMode.OUTPUT_ACTIVATION,
        layer,
        f"{loss_label} expects probabilities but the output layer '{layer}' gives {act} "
        "outputs: they are clipped to [1e-7, 1 - 1e-7] (and a categorical loss renormalises "
        "them), so scores below 0 get no gradient and the loss is not a cross-entropy of the "
        "scores; use from_logits=True, or end with a softmax/sigmoid",
        {"activation": act, "loss": loss_label, "from_logits": False},
        remedies=("match_loss", "remove_output_activation"),
    )


def unit_softmax(act: str, size: int, *, layer: str | None, where: str = "") -> Finding | None:
    """softmax/log_softmax over a dimension of size 1: a constant 1.0 (0.0) output.

    >>> unit_softmax("softmax", 1, layer="2").message.split(":")[0]
    'softmax over a dimension of size 1'
    >>> unit_softmax("softmax", 3, layer="2") is None
    True
    """
    if act not in ("softmax", "log_softmax") or size != 1:
        return None
    value = "1.0" if act == "softmax" else "0.0"
    return _finding(
        FailureMode.OUTPUT_ACTIVATION,
        layer,
        f"{act} over a dimension of size 1{where}: the output is exactly {value} for every "
        "input, so it carries no information and passes no gradient (a one-unit output "
        "wants a sigmoid/binary cross-entropy, or 2 units + softmax)",
        {"activation": act, "size": 1, "constant": float(value)},
        remedies=("match_loss", "remove_output_activation"),
    )


def class_loss_on_one_unit(
    loss: str, classes: int, *, loss_label: str | None = None
) -> Finding | None:
    """Cross-entropy over a single class: ``log_softmax`` of one logit is 0, so the loss is 0.

    >>> class_loss_on_one_unit("cross_entropy", 1).evidence["constant_loss"]
    0.0
    """
    if loss != "cross_entropy" or classes != 1:
        return None
    return _finding(
        FailureMode.LOSS_MISMATCH,
        None,
        f"{_label(loss, loss_label)} over a one-unit output: the only class always gets "
        "probability 1 (log_softmax of one logit is 0), so the loss is exactly 0 for every "
        "example and nothing is learned; use a binary cross-entropy on one logit "
        "(BCEWithLogitsLoss, BinaryCrossentropy(from_logits=True)) or one unit per class",
        {"loss": loss, "classes": 1, "constant_loss": 0.0},
    )


@dataclass(frozen=True)
class Summary:
    """Scale statistics of an array: count, mean, std, ``rms = sqrt(mean(x^2))``, min, max,
    whether every value is an integer, and for 2-D data each column's RMS."""

    count: int
    mean: float
    std: float
    rms: float
    min: float
    max: float
    integral: bool
    column_rms: tuple[float, ...] = ()


def summarize(values: Any) -> Summary:
    """:class:`Summary` of any array-like (float64; non-finite values are ignored).

    >>> s = summarize([[3.0, 4.0], [-3.0, -4.0]])
    >>> s.mean, round(s.rms, 3), s.min, s.max, s.integral, s.column_rms
    (0.0, 3.536, -4.0, 4.0, True, (3.0, 4.0))
    """
    a = np.asarray(values, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return Summary(0, 0.0, 0.0, 0.0, 0.0, 0.0, False)
    cols: tuple[float, ...] = ()
    if a.ndim == 2 and a.shape[1] > 1:
        cols = tuple(
            float(v) for v in np.sqrt(np.nanmean(np.where(np.isfinite(a), a, np.nan) ** 2, axis=0))
        )
    return Summary(
        count=int(finite.size),
        mean=float(finite.mean()),
        std=float(finite.std()),
        rms=float(np.sqrt(np.mean(finite**2))),
        min=float(finite.min()),
        max=float(finite.max()),
        integral=bool(np.all(finite == np.round(finite))),
        column_rms=cols,
    )


def data_scale(
    name: str, s: Summary, bounds: tuple[float, float], *, role: str = "input"
) -> Finding | None:
    """Data whose RMS lies outside ``bounds`` (``(low, high)``), or 2-D data that mixes
    scales: a column whose RMS exceeds ``high`` and is over 10x the median column RMS
    (raw tabular features such as areas next to ratios; not image pixels, whose columns
    differ by a few x). An all-zero array is not reported (nothing to scale).

    >>> s = summarize([[1.0, 5000.0, 2.0], [-1.0, 7000.0, -2.0]])
    >>> f = data_scale("x", s, (1e-3, 10.0))
    >>> f.evidence["columns"], f.message.split(":")[0]
    ([1], 'x mixes scales')
    >>> data_scale("x", summarize([0.2, -0.4, 1.3]), (1e-3, 10.0)) is None
    True
    """
    low, high = bounds
    if s.count == 0 or s.rms == 0.0:
        return None
    nonzero = sorted(r for r in s.column_rms if r > 0.0)
    median = nonzero[len(nonzero) // 2] if nonzero else 0.0
    loud = [i for i, r in enumerate(s.column_rms) if r > high and r > _MIXED * median]
    if low <= s.rms <= high and not loud:
        return None
    evidence: dict[str, Any] = {
        "data": name,
        "role": role,
        "rms": s.rms,
        "mean": s.mean,
        "std": s.std,
        "min": s.min,
        "max": s.max,
        "bounds": [low, high],
    }
    stats = (
        f"RMS {s.rms:.3g} (mean {s.mean:.3g}, std {s.std:.3g}, range [{s.min:.3g}, {s.max:.3g}])"
    )
    mixed = bool(loud) and len(loud) < len(s.column_rms)
    if mixed:
        evidence["columns"] = loud[:10]
        evidence["column_rms"] = [s.column_rms[i] for i in loud[:10]]
    if s.rms > high or mixed:
        factor = max(s.column_rms[i] for i in loud) if mixed else s.rms
        if mixed:
            head = (
                f"{name} mixes scales: {len(loud)} of {len(s.column_rms)} columns "
                f"({', '.join(map(str, loud[:5]))}{', ...' if len(loud) > 5 else ''}) have RMS "
                f"up to {factor:.3g}, above {high:g} (overall {stats})"
            )
        else:
            head = f"{name} has {stats}, above {high:g}"
        if role == "input":
            tail = (
                "default initialisation assumes unit scale, so the first layer's "
                f"pre-activations are ~{factor:.3g}x too large and its SGD steps ~{factor**2:.2g}x"
            )
        else:
            tail = (
                f"the initial loss is ~{s.rms**2:.2g} and a unit-scale output needs "
                f"~{s.rms:.2g}/lr steps just to reach the targets' scale"
            )
        msg = f"{head}: {tail}"
    else:
        if role == "input":
            tail = (
                "the first layer barely sees it and its weights must grow "
                f"~{1.0 / s.rms:.2g}x before it matters"
            )
        else:
            tail = (
                f"a unit-scale output starts ~{1.0 / s.rms:.2g}x too large and the loss is "
                "dominated by that offset"
            )
        msg = f"{name} has {stats}, below {low:g}: {tail}"
    return _finding(FailureMode.UNSCALED_DATA, None, msg, evidence)


def output_range_vs_targets(
    act: str | None,
    t: Summary,
    *,
    fraction_outside: float,
    layer: str | None,
    where: str = "",
    bounds: tuple[float, float] | None = None,
) -> Finding | None:
    """A bounded output activation (sigmoid, tanh, ReLU...) asked to reach targets outside
    its range: those targets are unreachable and their error never goes to 0.

    ``bounds`` overrides :data:`OUTPUT_RANGE` (e.g. hardtanh's own min/max).

    >>> f = output_range_vs_targets("sigmoid", summarize([0.0, 3.0, 7.0]),
    ...                             fraction_outside=2 / 3, layer="3")
    >>> f.message.split(":")[0]
    'sigmoid output in [0, 1] but the targets span [0, 7]'
    """
    if act is None or (act not in OUTPUT_RANGE and bounds is None) or t.count == 0:
        return None
    lo, hi = bounds if bounds is not None else OUTPUT_RANGE[act]
    tol = 1e-6
    if t.min >= lo - tol * max(1.0, abs(lo)) and t.max <= hi + tol * max(1.0, abs(hi)):
        return None
    return _finding(
        FailureMode.OUTPUT_ACTIVATION,
        layer,
        f"{act} output in [{lo:g}, {hi:g}] but the targets span [{t.min:.4g}, {t.max:.4g}]"
        f"{where}: {fraction_outside:.0%} of them are out of reach, so their error never "
        "falls to 0 and the output saturates chasing them",
        {
            "activation": act,
            "output_range": [lo, hi],
            "target_min": t.min,
            "target_max": t.max,
            "fraction_outside": fraction_outside,
        },
        remedies=("remove_output_activation", "match_loss", "normalize_data"),
    )


def regression_on_class_ids(
    loss: str, units: int, t: Summary, *, column: bool, loss_label: str | None = None
) -> Finding | None:
    """A regression loss between a multi-unit output and one column of class ids.

    Fires when ``loss`` is MSE/L1/smooth-L1/Huber, the output has ``units > 1``, and
    the targets are a single column (``column``) of integers in ``[0, units]``: the
    loss then broadcasts the class id against every unit instead of classifying.

    >>> f = regression_on_class_ids("mse_loss", 10, summarize([0, 3, 9, 9]), column=True)
    >>> f.kind.value, f.cause.value
    ('loss_mismatch', 'unknown')
    >>> regression_on_class_ids("mse_loss", 1, summarize([0, 3, 9]), column=True) is None
    True
    """
    if loss not in REGRESSION_LOSSES or units <= 1 or not column or t.count == 0:
        return None
    if not t.integral or t.min < 0 or t.max > units:
        return None
    return _finding(
        FailureMode.LOSS_MISMATCH,
        None,
        f"{_label(loss, loss_label)} between a {units}-unit output and one column of class "
        f"ids (integers in [{t.min:.0f}, {t.max:.0f}]): every unit is pushed toward the class "
        "number itself, which is not classification; use raw logits with a "
        "cross-entropy over class indices (CrossEntropyLoss, "
        "SparseCategoricalCrossentropy(from_logits=True))",
        {
            "loss": loss,
            "units": units,
            "target_min": t.min,
            "target_max": t.max,
            "distinct_targets_integral": True,
        },
    )


def binary_targets(loss: str, t: Summary, *, loss_label: str | None = None) -> Finding | None:
    """A binary cross-entropy whose targets leave [0, 1] (class ids given to BCE).

    >>> binary_targets("binary_cross_entropy_with_logits", summarize([0, 4, 9])).kind.value
    'loss_mismatch'
    """
    if loss not in BINARY_LOSSES or t.count == 0 or (t.min >= 0.0 and t.max <= 1.0):
        return None
    ids = " (class ids?)" if t.integral and t.max > 1 else ""
    return _finding(
        FailureMode.LOSS_MISMATCH,
        None,
        f"{_label(loss, loss_label)} needs targets in [0, 1] but they span "
        f"[{t.min:.4g}, {t.max:.4g}]{ids}: the loss is then unbounded below and is "
        "minimised by pushing logits to +-infinity; for several classes use a categorical "
        "cross-entropy over class indices",
        {"loss": loss, "target_min": t.min, "target_max": t.max},
    )


def unstable_log(
    source: str,
    *,
    fn: str = "log",
    complement: bool = False,
    dtype: str = "float32",
    underflow_gap: float,
    saturation: float,
    gap: float | None = None,
    layer: str | None = None,
    where: str = "",
    also_direct: bool = False,
) -> Finding:
    """``log`` taken of a softmax/sigmoid output instead of ``log_softmax``/``logsigmoid``.

    In a float format with smallest subnormal ``t``, ``exp(-d)`` rounds to 0 once
    ``d > -ln(t/2)`` (``underflow_gap``: 103.97 in float32, 17.3 in float16), so softmax
    gives an exact 0 and log gives -inf; ``1 - sigmoid(x)`` is exactly 0 once
    ``x > -ln(eps/2)`` (``saturation``: 16.6 in float32).

    Args:
        source: ``"softmax"`` or ``"sigmoid"``.
        fn: the log function used (``log``, ``log2``, ``log10``).
        complement: True for ``log(1 - sigmoid(x))``.
        dtype: the probability's dtype, for the message.
        underflow_gap: the logit gap at which softmax underflows in that dtype.
        saturation: the input above which sigmoid rounds to 1 in that dtype.
        gap: the largest logit gap (softmax) or largest ``|x|`` (sigmoid) on this batch.
        layer: the module the log ran in (None: outside the model, in the loss).
        where: a phrase for the message.
        also_direct: with ``complement``, ``log(sigmoid(x))`` is taken too (a hand-written
            binary cross-entropy); one finding covers both.

    >>> f = unstable_log("softmax", underflow_gap=103.97, saturation=16.6, gap=4.2)
    >>> f.kind.value, f.cause.value, f.evidence["underflow_at"]
    ('unstable_loss', 'unstable_loss', 103.97)
    """
    if source == "sigmoid" and complement:
        limit, what = (
            saturation,
            f"1 - sigmoid(x) is exactly 0 in {dtype} once x > {saturation:.1f}",
        )
        better = "F.binary_cross_entropy_with_logits or F.logsigmoid(-x)"
    elif source == "sigmoid":
        limit, what = (
            underflow_gap,
            f"sigmoid(x) is exactly 0 in {dtype} once x < -{underflow_gap:.1f}",
        )
        better = "F.logsigmoid or F.binary_cross_entropy_with_logits"
    else:
        limit = underflow_gap
        what = f"softmax is exactly 0 in {dtype} once two logits differ by {underflow_gap:.1f}"
        better = "F.log_softmax (or F.cross_entropy on the logits)"
    arg = f"1 - {source}(x)" if complement else f"{source}(x)"
    call = f"{fn}({arg})"
    if complement and also_direct:
        call = f"{fn}({source}(x)) and {call}"
    msg = f"{call}{where}: {what}, and {fn}(0) = -inf turns the loss and gradients into inf/NaN"
    if gap is not None:
        measure = "largest logit gap" if source == "softmax" else "largest |x|"
        msg += f" (the {measure} on this batch is {gap:.3g} at initialisation; training grows it)"
    msg += f"; use {better}"
    return _finding(
        FailureMode.UNSTABLE_LOSS,
        layer,
        msg,
        {
            "function": fn,
            "source": source,
            "complement": complement,
            "dtype": dtype,
            "underflow_at": limit,
            "batch_value": gap,
            "also_direct": also_direct,
        },
    )
