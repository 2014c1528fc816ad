"""Repair actions: what each does (framework-free), and a per-framework registry of how.

An :class:`ActionSpec` declares an action once: its name (a remedy key where one
exists), what it does, which failure modes it may repair, and how it changes the run
(``structural``: the model's modules change, so the collector re-plans its hooks;
``reinit``: weights are re-initialised, so the detectors forget their healthy history;
``per_finding``: it acts on each finding's own layer, so two modes in one window each
get their own application instead of sharing one; ``opt_in``: it changes what the model
computes for some inputs, so it is tried only when the user's
:class:`~gradvitals.RepairPolicy` names it in ``opt_in`` or ``actions``).

Each framework registers its implementations in an :class:`ActionRegistry`
(``gradvitals.torch._repair_actions.TORCH_ACTIONS``, the Keras one likewise): an
``applicable`` test and an ``apply`` that returns what it did, or None when it could
not act. The repair controller looks actions up by name, never by ``if name == ...``.

>>> reg = ActionRegistry("toy")
>>> @reg.register("lower_lr")
... def _lower(host, ctx):
...     return "lr 0.1 -> 0.01"
>>> reg.get("lower_lr").apply(None, None), reg.names()
('lr 0.1 -> 0.01', ['lower_lr'])
>>> ACTION_SPECS["reinit_dead"].per_finding, ACTION_SPECS["leaky_variant"].structural
(True, True)
>>> [name for name, spec in ACTION_SPECS.items() if spec.opt_in]
['guard_op']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gradvitals.findings import FailureMode, Finding
from gradvitals.stats import WindowRecord

__all__ = [
    "ACTION_SPECS",
    "ActionContext",
    "ActionImpl",
    "ActionRegistry",
    "ActionSpec",
]


@dataclass(frozen=True)
class ActionSpec:
    """One repair action, framework-free.

    Attributes:
        name: the action's name (``"lower_lr"``).
        description: what it does, one line.
        modes: the failure modes it may repair; None: any repairable mode.
        structural: it changes the model's modules (the collector re-plans).
        reinit: it re-initialises weights (detectors forget healthy history).
        per_finding: it acts on each finding's layer; never shared between modes.
        opt_in: it changes what the model computes for some inputs (the user's code,
            in effect); tried only when the policy names it.
    """

    name: str
    description: str
    modes: frozenset[FailureMode] | None = None
    structural: bool = False
    reinit: bool = False
    per_finding: bool = False
    opt_in: bool = False

    def allows(self, kind: Enum) -> bool:
        return self.modes is None or kind in self.modes


ACTION_SPECS: dict[str, ActionSpec] = {
    s.name: s
    for s in (
        ActionSpec("lower_lr", "multiply the learning rate by lr_factor"),
        ActionSpec(
            "clip_grad_norm",
            "clip the global gradient norm (threshold from the run's healthy history)",
        ),
        ActionSpec(
            "leaky_variant", "swap ReLU modules for Leaky ReLU", structural=True, reinit=True
        ),
        ActionSpec(
            "reinit_dead",
            "He-initialise the incoming weights of dead units",
            modes=frozenset({FailureMode.DYING_RELU}),
            reinit=True,
            per_finding=True,
        ),
        ActionSpec(
            "relu_he",
            "swap sigmoid/tanh modules for a ReLU-family activation, with He init",
            structural=True,
            reinit=True,
        ),
        ActionSpec(
            "add_norm",
            "insert normalization before each hidden activation",
            structural=True,
            reinit=True,
        ),
        ActionSpec(
            "skip_batch",
            "skip the optimizer steps whose gradients are not finite (poisoned batches)",
            modes=frozenset({FailureMode.NONFINITE}),
        ),
        ActionSpec("zero_grad", "zero the gradients after every optimizer step"),
        ActionSpec(
            "guard_op",
            "let attention rows whose keys are all masked attend to every key (what a "
            "finite fill such as -1e9 does) instead of giving NaN",
            modes=frozenset({FailureMode.NONFINITE}),
            opt_in=True,
        ),
        ActionSpec(
            "xavier_init",
            "Xavier-initialise the layers feeding saturated units",
            modes=frozenset({FailureMode.SATURATION}),
            reinit=True,
            per_finding=True,
        ),
    )
}


@dataclass
class ActionContext:
    """What an action implementation is told about the repair it is part of.

    Attributes:
        kind: the failure mode being repaired.
        findings: that mode's findings in this window.
        policy: the :class:`~gradvitals.RepairPolicy`.
        clip_norm: a clipping threshold from the run's healthy history, if any.
        history: recent window records, newest last.
    """

    kind: Enum
    findings: Sequence[Finding]
    policy: Any
    clip_norm: float | None = None
    history: Sequence[WindowRecord] = field(default_factory=tuple)

    def site_units(self, f: Finding) -> int | None:
        """The units of the site a finding names, from the last two windows."""
        key = str(f.evidence.get("site", f.layer))
        for rec in reversed(list(self.history)[-2:]):
            s = rec.sites.get(key)
            if s is not None:
                return int(s.units)
        return None


@dataclass(frozen=True)
class ActionImpl:
    """A framework's implementation of one action."""

    name: str
    apply: Callable[[Any, ActionContext], str | None]
    applicable: Callable[[Any, ActionContext], bool]


class ActionRegistry:
    """A framework's repair actions by name."""

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self._impls: dict[str, ActionImpl] = {}

    def register(
        self, name: str, *, applicable: Callable[[Any, ActionContext], bool] | None = None
    ) -> Callable[[Callable[[Any, ActionContext], str | None]], Callable[..., str | None]]:
        """Decorator: register ``fn(host, ctx) -> str | None`` as action ``name``."""

        def deco(fn: Callable[[Any, ActionContext], str | None]) -> Callable[..., str | None]:
            self._impls[name] = ActionImpl(name, fn, applicable or (lambda host, ctx: True))
            return fn

        return deco

    def get(self, name: str) -> ActionImpl:
        try:
            return self._impls[name]
        except KeyError:
            raise KeyError(
                f"{self.framework} has no repair action {name!r}; it has: "
                f"{', '.join(sorted(self._impls))}"
            ) from None

    def has(self, name: str) -> bool:
        return name in self._impls

    def names(self) -> list[str]:
        return sorted(self._impls)
