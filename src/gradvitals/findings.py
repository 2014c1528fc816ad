"""Typed findings: what went wrong, where, with the numbers, and what to do.

A :class:`Finding` is the only thing gradvitals raises to the user's attention. It
means *act now*: healthy runs produce none. Statistics are always logged; findings
are for action.

>>> f = Finding(kind=FailureMode.DYING_RELU, layer="net.1", step=40,
...             message="62% of units dead", evidence={"dead_fraction": 0.62})
>>> f.kind.value, f.layer, f.step
('dying_relu', 'net.1', 40)
>>> FailureMode("nonfinite") is FailureMode.NONFINITE
True
>>> f.cause.value  # every finding carries a cause; UNKNOWN when the evidence does not decide
'unknown'
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["Cause", "FailureMode", "Finding", "Remedy", "kind_of", "register_kind"]


class FailureMode(str, Enum):
    """The failure modes gradvitals knows, as a ``str`` Enum (``FailureMode("dying_relu")``).

    Training failures (found while training runs):

    - ``vanishing_gradient``: early layers get gradients orders of magnitude smaller
      than late layers and barely move, while the loss has not converged.
    - ``exploding_gradient``: gradient norms or update ratios grow far beyond their
      own history, or grow layer by layer toward the input.
    - ``dying_relu``: most units of a ReLU-family layer are zero for every example
      in a window, and do not recover.
    - ``saturation``: most sigmoid/tanh outputs sit at their asymptotes.
    - ``nonfinite``: a NaN or Inf appeared in the loss, activations or gradients.
    - ``stalled``: the loss stays at its starting level while gradients or updates are
      exactly or nearly zero everywhere (a constant output, a detached graph, frozen
      parameters, a learning rate of about 0).
    - ``diverged_plateau``: the loss jumped far above its best and stays there without
      any NaN (a run knocked off its basin by too large a step).

    Pre-flight problems (found by :func:`gradvitals.lint` before training):

    - ``linear_collapse``: consecutive affine layers with no nonlinearity between.
    - ``deep_saturating_stack``: a deep sigmoid/tanh stack without normalization or
      residual connections.
    - ``init_mismatch``: the initialisation gain does not match the activation.
    - ``born_dead``: a narrow, deep ReLU stack likely to be constant at init, or
      units already dead at initialisation.
    - ``output_activation``: the output layer's activation cannot fit the loss or the
      targets (a ReLU before cross-entropy, softmax over a size-1 dimension, a sigmoid
      output for targets outside [0, 1]).
    - ``loss_mismatch``: the loss does not fit the targets (MSE on integer class labels).
    - ``unstable_loss``: the loss is computed in a numerically unsafe way
      (``log(softmax(x))`` instead of ``log_softmax``).
    - ``unscaled_data``: inputs or targets with a scale far from 1.
    """

    VANISHING_GRADIENT = "vanishing_gradient"
    EXPLODING_GRADIENT = "exploding_gradient"
    DYING_RELU = "dying_relu"
    SATURATION = "saturation"
    NONFINITE = "nonfinite"
    LINEAR_COLLAPSE = "linear_collapse"
    DEEP_SATURATING_STACK = "deep_saturating_stack"
    INIT_MISMATCH = "init_mismatch"
    BORN_DEAD = "born_dead"
    STALLED = "stalled"
    DIVERGED_PLATEAU = "diverged_plateau"
    OUTPUT_ACTIVATION = "output_activation"
    LOSS_MISMATCH = "loss_mismatch"
    UNSTABLE_LOSS = "unstable_loss"
    UNSCALED_DATA = "unscaled_data"

    def __str__(self) -> str:
        return self.value


_KINDS: dict[str, Enum] = {m.value: m for m in FailureMode}


def register_kind(kind: Enum) -> None:
    """Make a failure mode defined outside :class:`FailureMode` known by its value.

    The mode registry (:func:`gradvitals.remedies.register_mode`) calls this, so a
    finding of a mode added by a plugin or a test round-trips through JSON.
    """
    value = str(kind.value)
    if _KINDS.get(value, kind) is not kind:
        raise ValueError(f"failure mode {value!r} is already registered as {_KINDS[value]!r}")
    _KINDS[value] = kind


def kind_of(value: str | Enum) -> Any:
    """The failure mode whose value is ``value`` (built in or registered).

    >>> kind_of("dying_relu") is FailureMode.DYING_RELU
    True
    """
    if isinstance(value, Enum):
        return value
    try:
        return _KINDS[value]
    except KeyError:
        raise ValueError(
            f"unknown failure mode {value!r}; known: {', '.join(sorted(_KINDS))}"
        ) from None


class Cause(str, Enum):
    """Why a failure happened: the answer to "what do I change?", as a ``str`` Enum.

    A finding's :attr:`Finding.kind` is the symptom (``nonfinite``), its
    :attr:`Finding.cause` the reason (``nonfinite_input``); remedies are ordered by cause.

    - ``nonfinite_input``: the batch entering the model already holds NaN/Inf.
    - ``nonfinite_target``: the targets (labels) hold NaN/Inf.
    - ``unstable_op``: a forward op turned finite inputs into NaN/Inf (log, exp, div,
      sqrt, pow, softmax over an all ``-inf`` row...); the finding names the module.
    - ``unstable_loss``: the loss computation did (``log(softmax(x))``, ``log(sigmoid(x))``
      on saturated input, a division by a zero count).
    - ``low_precision_overflow``: an fp16/bf16 value exceeded its format's range.
    - ``learning_rate``: the update itself was too large for the weights.
    - ``missing_zero_grad``: gradients accumulate across optimizer steps
      (``optimizer.zero_grad()`` is not called).
    - ``unscaled_data``: inputs or targets with a scale far from 1 drive the failure.
    - ``bad_init``: the failure was present at initialisation (dead or saturated before
      any update; a weight scale that does not match the activation; negative biases).
    - ``output_activation``: the output layer's activation cannot fit the loss/targets.
    - ``saturating_activation``: sigmoid/tanh derivatives shrink the gradient layer by
      layer (a deep saturating stack).
    - ``no_gradient``: nothing reaches the parameters: a detached graph, frozen
      parameters, a constant output, or a learning rate of about 0.
    - ``unknown``: the evidence does not decide; gradvitals says so rather than guess.
    """

    NONFINITE_INPUT = "nonfinite_input"
    NONFINITE_TARGET = "nonfinite_target"
    UNSTABLE_OP = "unstable_op"
    UNSTABLE_LOSS = "unstable_loss"
    LOW_PRECISION_OVERFLOW = "low_precision_overflow"
    LEARNING_RATE = "learning_rate"
    MISSING_ZERO_GRAD = "missing_zero_grad"
    UNSCALED_DATA = "unscaled_data"
    BAD_INIT = "bad_init"
    OUTPUT_ACTIVATION = "output_activation"
    SATURATING_ACTIVATION = "saturating_activation"
    NO_GRADIENT = "no_gradient"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Remedy:
    """One thing to do about a finding.

    Attributes:
        action: a short imperative (``"Lower the learning rate"``).
        why: the mechanism, in one or two sentences.
        code: the concrete code change, as a snippet the user can paste.
        key: a stable identifier (``"lower_lr"``); repair policies refer to it.
        params: the numbers in it (``{"max_norm": 2.5}``), so nothing is parsed back
            out of ``code``.
    """

    action: str
    why: str
    code: str = ""
    key: str = ""
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"action": self.action, "why": self.why, "code": self.code}
        d["key"] = self.key
        if self.params:
            d["params"] = dict(self.params)
        return d


@dataclass
class Finding:
    """A failure found in a run (or a model, by the linter).

    Attributes:
        kind: the :class:`FailureMode`.
        layer: the qualified module name as in ``model.named_modules()``, or None
            when the finding is model-wide.
        step: the optimizer step at which it was detected (-1 for pre-flight lint).
        message: one sentence with the numbers.
        evidence: the numbers, by name.
        remedies: ordered remedies, the first is what to try first.
        final: True for "could not repair" findings that end a repair sequence.
        cause: the :class:`Cause` (``Cause.UNKNOWN`` when the evidence does not decide);
            ``evidence["cause_evidence"]`` holds what decided it.
        consequences: later findings caused by this one (dead units and NaNs after an
            explosion), nested here instead of reported as new failures.
    """

    kind: FailureMode
    layer: str | None
    step: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remedies: list[Remedy] = field(default_factory=list)
    final: bool = False
    cause: Cause = Cause.UNKNOWN
    consequences: list[Finding] = field(default_factory=list)

    def walk(self) -> Iterator[Finding]:
        """This finding, then its consequences (and theirs), depth first.

        >>> root = Finding(FailureMode.EXPLODING_GRADIENT, None, 40, "norm x100")
        >>> root.consequences.append(Finding(FailureMode.DYING_RELU, "net.1", 60, "dead"))
        >>> [f.kind.value for f in root.walk()]
        ['exploding_gradient', 'dying_relu']
        """
        yield self
        for c in self.consequences:
            yield from c.walk()

    def __str__(self) -> str:
        where = f" in {self.layer}" if self.layer else ""
        why = "" if self.cause is Cause.UNKNOWN else f" (cause: {self.cause.value})"
        return f"[gradvitals] step {self.step}: {self.kind.value}{where}{why}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "layer": self.layer,
            "step": self.step,
            "message": self.message,
            "evidence": dict(self.evidence),
            "remedies": [r.to_dict() for r in self.remedies],
            "final": self.final,
            "cause": self.cause.value,
            "consequences": [c.to_dict() for c in self.consequences],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            kind=kind_of(d["kind"]),
            layer=d.get("layer"),
            step=int(d.get("step", -1)),
            message=str(d.get("message", "")),
            evidence=dict(d.get("evidence", {})),
            remedies=[Remedy(**r) for r in d.get("remedies", [])],
            final=bool(d.get("final", False)),
            cause=Cause(d.get("cause", "unknown")),
            consequences=[cls.from_dict(c) for c in d.get("consequences", [])],
        )
