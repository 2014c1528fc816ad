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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["FailureMode", "Finding", "Remedy"]


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

    Pre-flight problems (found by :func:`gradvitals.lint` before training):

    - ``linear_collapse``: consecutive affine layers with no nonlinearity between.
    - ``deep_saturating_stack``: a deep sigmoid/tanh stack without normalization or
      residual connections.
    - ``init_mismatch``: the initialisation gain does not match the activation.
    - ``born_dead``: a narrow, deep ReLU stack likely to be constant at init, or
      units already dead at initialisation.
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
    """

    action: str
    why: str
    code: str = ""
    key: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"action": self.action, "why": self.why, "code": self.code, "key": self.key}


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
    """

    kind: FailureMode
    layer: str | None
    step: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remedies: list[Remedy] = field(default_factory=list)
    final: bool = False

    def __str__(self) -> str:
        where = f" in {self.layer}" if self.layer else ""
        return f"[gradvitals] step {self.step}: {self.kind.value}{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "layer": self.layer,
            "step": self.step,
            "message": self.message,
            "evidence": dict(self.evidence),
            "remedies": [r.to_dict() for r in self.remedies],
            "final": self.final,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            kind=FailureMode(d["kind"]),
            layer=d.get("layer"),
            step=int(d.get("step", -1)),
            message=str(d.get("message", "")),
            evidence=dict(d.get("evidence", {})),
            remedies=[Remedy(**r) for r in d.get("remedies", [])],
            final=bool(d.get("final", False)),
        )
