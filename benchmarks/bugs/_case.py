"""One corpus case: a real, public buggy training program, re-derived in our own words.

A :class:`BugCase` holds the metadata *as the public report and its accepted fix state
them* (not as gradvitals would diagnose it) and a ``run`` hook that trains either the
``"buggy"`` or the ``"fixed"`` variant and returns an :class:`Outcome`.

The ``run`` hook's ``watch`` argument is how the runner attaches gradvitals without the
case knowing about it:

- PyTorch cases call ``tap = watch(model, optimizer)`` (``optimizer=None`` for loops
  that update the weights by hand) and then ``tap.observe(loss)`` every step,
  ``tap.step()`` after a hand-written update, ``tap.close()`` at the end. With
  ``watch=None`` they use :data:`NULL_TAP`, which does nothing;
- Keras cases call ``callbacks = watch((x_probe, y_probe))`` and pass the list to
  ``model.fit``; with ``watch=None`` the list is empty.

>>> o = Outcome(final_loss=0.2, metric=0.93, metric_name="accuracy", nonfinite=False, steps=10)
>>> o.score
0.93
>>> Outcome(final_loss=float("nan"), metric=float("nan"), metric_name="r2",
...         nonfinite=True, steps=10).score
-1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gradvitals.findings import Cause, FailureMode

__all__ = [
    "MARGINS",
    "NULL_TAP",
    "REMEDY_KEYS",
    "VARIANTS",
    "BugCase",
    "Outcome",
    "Tap",
    "final_loss",
]

#: The remedy vocabulary of ``first_remedy`` (what the accepted fix corresponds to).
REMEDY_KEYS: tuple[str, ...] = (
    "lower_lr",
    "clip_grad_norm",
    "clean_inputs",
    "clean_targets",
    "guard_op",
    "stable_loss",
    "fix_precision",
    "zero_grad",
    "normalize_data",
    "reinit",
    "remove_output_activation",
    "match_loss",
    "relu_he",
    "batchnorm",
    "fix_graph",
    "leaky_variant",
)

VARIANTS: tuple[str, ...] = ("buggy", "fixed")

#: Score margin per metric: a bug *reproduces* when the buggy variant's mean score is
#: below the fixed one's minus the margin; a *repaired* run is within the margin of the
#: fixed run. Accuracy is a fraction of examples (0.05 = 5 points); R² is clipped to
#: [-1, 1] before it is compared (0.10 of the explained variance).
MARGINS: dict[str, float] = {"accuracy": 0.05, "r2": 0.10}

#: Score floor: a run whose metric is NaN (non-finite predictions) scores this.
_FLOOR: dict[str, float] = {"accuracy": 0.0, "r2": -1.0}


@dataclass(frozen=True)
class Outcome:
    """What one training run achieved.

    Attributes:
        final_loss: mean training loss over the last (up to) 10 steps; NaN when one of
            them was not finite.
        metric: held-out accuracy (classification) or R² (regression); NaN when the
            model's predictions are not finite.
        metric_name: ``"accuracy"`` or ``"r2"``.
        nonfinite: a NaN/Inf appeared in a training loss, the weights or the predictions.
        steps: optimizer steps taken.
    """

    final_loss: float
    metric: float
    metric_name: str
    nonfinite: bool
    steps: int

    @property
    def score(self) -> float:
        """The metric, higher is better: NaN becomes the floor, R² is clipped to [-1, 1]."""
        floor = _FLOOR[self.metric_name]
        if not math.isfinite(self.metric):
            return floor
        return max(floor, min(1.0, self.metric))

    def to_dict(self) -> dict[str, Any]:
        return {
            "final_loss": self.final_loss,
            "metric": self.metric,
            "metric_name": self.metric_name,
            "score": self.score,
            "nonfinite": self.nonfinite,
            "steps": self.steps,
        }


def final_loss(losses: Sequence[float], last: int = 10) -> float:
    """Mean of the last ``last`` losses; NaN if any of them is not finite (or none)."""
    tail = list(losses)[-last:]
    if not tail or not all(math.isfinite(v) for v in tail):
        return float("nan")
    return sum(tail) / len(tail)


class Tap(Protocol):
    """What a PyTorch case sees of the monitor the runner attached."""

    def observe(self, loss: Any) -> None: ...

    def step(self) -> None: ...

    def close(self) -> None: ...


class _NullTap:
    """The tap of an unwatched run: every call does nothing."""

    def observe(self, loss: Any) -> None:
        return None

    def step(self) -> None:
        return None

    def close(self) -> None:
        return None


NULL_TAP: Tap = _NullTap()

#: ``run(variant, watch, steps, seed) -> Outcome``; ``steps=0`` means the case's default.
RunFn = Callable[[str, Any, int, int], Outcome]


@dataclass(frozen=True)
class BugCase:
    """A public buggy training program and its accepted fix.

    Attributes:
        id: short unique name (``"torch_nan_input_batch"``).
        url: the public report (question, issue, pull request or course page).
        framework: ``"torch"`` or ``"keras"``.
        title: the report's subject, in a few words.
        report: 2-4 sentences in our words: the user's symptom and the accepted fix.
        symptom: the failure the report shows, as a :class:`~gradvitals.FailureMode`.
        cause: why it happened, per the report and its fix, as a :class:`~gradvitals.Cause`.
        first_remedy: the remedy key (:data:`REMEDY_KEYS`) the accepted fix corresponds to.
        repairable: an in-flight action, without changing the user's code or
            architecture, can fix it (lower the lr, clip, skip a poisoned batch, re-init a
            layer, zero the gradients after each step).
        run: ``run(variant, watch, steps, seed) -> Outcome``.
        steps: optimizer steps of a default run.
        metric: ``"accuracy"`` or ``"r2"``.
        note: how our program differs from the report's (data, sizes), when it does.
    """

    id: str
    url: str
    framework: str
    title: str
    report: str
    symptom: FailureMode
    cause: Cause
    first_remedy: str
    repairable: bool
    run: RunFn = field(repr=False, compare=False)
    steps: int = 300
    metric: str = "accuracy"
    note: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not self.id or not self.id.replace("_", "").isalnum():
            problems.append(f"id {self.id!r} must be letters, digits and underscores")
        if not self.url.startswith("https://"):
            problems.append(f"url {self.url!r} must be an https:// address of the report")
        if self.framework not in ("torch", "keras"):
            problems.append(f"framework {self.framework!r} must be 'torch' or 'keras'")
        if self.first_remedy not in REMEDY_KEYS:
            problems.append(
                f"first_remedy {self.first_remedy!r} is not a remedy key; "
                f"choose from {', '.join(REMEDY_KEYS)}"
            )
        if self.metric not in MARGINS:
            problems.append(f"metric {self.metric!r} must be one of {', '.join(MARGINS)}")
        if not isinstance(self.symptom, FailureMode):
            problems.append(f"symptom {self.symptom!r} must be a gradvitals.FailureMode")
        if not isinstance(self.cause, Cause):
            problems.append(f"cause {self.cause!r} must be a gradvitals.Cause")
        if not self.title or not self.report:
            problems.append("title and report must say what the public report says")
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if problems:
            raise ValueError(f"bug case {self.id!r}: " + "; ".join(problems))

    @property
    def margin(self) -> float:
        return MARGINS[self.metric]
