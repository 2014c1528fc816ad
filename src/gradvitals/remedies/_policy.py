"""Repair policy: what :func:`gradvitals.watch` (``repair=True``) may do, in which order.

A policy maps each training failure mode to an ordered list of *actions*. When a mode
fires, the monitor rolls the model and optimizer back to their last healthy state and
applies the next action of that mode's list; at most ``max_attempts`` actions per mode.
After that it emits a final "could not repair" finding and leaves the mode alone.

The actions (keys match :class:`~gradvitals.Remedy` keys where one exists):

- ``lower_lr``: multiply every parameter group's learning rate by ``lr_factor``
  (and the ``scheduler``'s ``base_lrs``, so the scheduler does not undo it);
- ``clip_grad_norm``: clip the global gradient norm at ``clip_norm``, or at 2x the
  median of the run's healthy gradient norms; a second use halves the threshold;
- ``leaky_variant``: swap hidden ``nn.ReLU``/``nn.ReLU6`` modules for
  ``nn.LeakyReLU(leaky_slope)`` (they have no weights: nothing else changes);
- ``reinit_dead``: He-initialise the incoming weights of the dead units (dying ReLU);
- ``relu_he``: swap hidden sigmoid/tanh modules for ``swap_to`` and He-initialise the
  layers feeding them;
- ``add_norm``: put a ``LayerNorm`` (``GroupNorm(1, C)`` after a convolution) before
  each hidden activation module;
- ``xavier_init``: Xavier-initialise the layers feeding saturated units, with the gain
  of their activation (saturation);
- ``skip_batch``: skip every optimizer step whose gradients are not finite (a poisoned
  batch) instead of cutting the learning rate (PyTorch: one host sync per step from then;
  Keras: decided inside the compiled step);
- ``zero_grad``: zero the gradients after every optimizer step (a missing
  ``optimizer.zero_grad()``; PyTorch);
- ``guard_op`` (opt-in: ``RepairPolicy(opt_in=["guard_op"])``): an
  ``nn.MultiheadAttention`` whose query rows have every key masked (a fully padded
  sequence) lets those rows attend to every key instead, which is what a finite fill
  such as ``-1e9`` does; other rows are computed exactly as before (PyTorch).

Actions that change what the model computes for some inputs (``guard_op``) are your
code's business: without ``opt_in`` they stay a recommendation and repair moves on to
the next action.

Which actions a finding gets depends on its cause (the mode registry's
``repair_by_cause``): a poisoned batch is skipped, units dead at initialisation are
re-initialised, and the learning rate is cut when the step itself was too large.

This module imports no framework: ``gradvitals.RepairPolicy`` is cheap to import.

>>> p = RepairPolicy(max_attempts=2, actions={"dying_relu": ["leaky_variant", "reinit_dead"]})
>>> p.actions_for(FailureMode.DYING_RELU)
('leaky_variant', 'reinit_dead')
>>> p.actions_for("exploding_gradient")
('lower_lr', 'clip_grad_norm', 'lower_lr')
>>> p.actions_for("nonfinite", "unstable_op"), RepairPolicy(opt_in=["guard_op"]).actions_for(
...     "nonfinite", "unstable_op")
(('skip_batch',), ('guard_op', 'skip_batch'))
>>> RepairPolicy(actions={"dying_relu": ["leaky"]})
Traceback (most recent call last):
...
gradvitals.errors.UsageError: unknown repair action 'leaky' for dying_relu. Valid actions: add_norm, clip_grad_norm, ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gradvitals.errors import UsageError
from gradvitals.findings import Cause, FailureMode
from gradvitals.remedies._actions import ACTION_SPECS
from gradvitals.remedies._modes import get_mode, modes

__all__ = ["ACTIONS", "DEFAULT_ACTIONS", "REPAIRABLE", "RepairPolicy"]

#: The failure modes a policy can repair: registered modes with default actions.
REPAIRABLE: tuple[FailureMode, ...] = tuple(m.kind for m in modes() if m.repairable)  # type: ignore[misc]

#: Action name -> (what it does, the modes it may be used for).
ACTIONS: dict[str, tuple[str, frozenset[FailureMode]]] = {
    name: (spec.description, spec.modes if spec.modes is not None else frozenset(REPAIRABLE))
    for name, spec in ACTION_SPECS.items()
}

#: The default order of actions per mode (from the mode registry): the cheapest first.
DEFAULT_ACTIONS: dict[FailureMode, tuple[str, ...]] = {
    m.kind: m.repair_actions  # type: ignore[misc]
    for m in modes()
    if m.repairable
}

_SWAP_TO = ("leaky_relu", "relu")


def _repairable() -> dict[str, Any]:
    """The registered modes that have default repair actions, by value (live)."""
    return {str(m.kind.value): m for m in modes() if m.repairable}


def _mode(key: Any) -> Any:
    spec = _repairable().get(str(getattr(key, "value", key)))
    if spec is None:
        raise UsageError(
            f"cannot repair {key!r}. Repairable failure modes: {', '.join(_repairable())}"
        )
    return spec.kind


@dataclass
class RepairPolicy:
    """What in-flight repair may do. Pass it as ``gradvitals.watch(..., policy=...)``.

    Attributes:
        max_attempts: repairs per failure mode before giving up with a final
            "could not repair" finding (default 3).
        actions: per failure mode (an enum or its value), the ordered actions to try;
            modes not given keep :data:`DEFAULT_ACTIONS`; an empty list turns repair
            off for that mode. Actions that do not apply to the model (no
            ``nn.ReLU`` module to swap...) are skipped and do not count as attempts.
        lr_factor: ``lower_lr`` multiplies learning rates by this (default 0.1).
        clip_norm: ``clip_grad_norm`` threshold; None (default) takes 2x the median of
            the run's healthy gradient norms (``monitor.suite.clip_norm``).
        leaky_slope: negative slope of the ``nn.LeakyReLU`` swapped in (default 0.01).
        swap_to: what ``relu_he`` swaps sigmoid/tanh for: ``"leaky_relu"`` (default)
            or ``"relu"``.
        offload_to_cpu: keep the healthy snapshot in CPU memory instead of on the
            model's device (saves device memory, costs a device-to-host copy per
            snapshot).
        snapshot_every: take a snapshot every this many healthy windows (default 1);
            raise it when the copy is expensive (large models).
        scheduler: the LR scheduler driving the optimizer, if any. ``lower_lr`` scales
            its ``base_lrs`` too; without it a scheduler would undo the change.
        seed: seed of gradvitals' own random generator for re-initialisations (your
            global RNG is never used).
        opt_in: actions that change what your model computes for some inputs
            (``guard_op``), allowed in the default orders; naming one in ``actions``
            opts in too. Default: none.
    """

    max_attempts: int = 3
    actions: Mapping[FailureMode | str, Sequence[str]] = field(default_factory=dict)
    lr_factor: float = 0.1
    clip_norm: float | None = None
    leaky_slope: float = 0.01
    swap_to: str = "leaky_relu"
    offload_to_cpu: bool = False
    snapshot_every: int = 1
    scheduler: Any = None
    seed: int = 0
    opt_in: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise UsageError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise UsageError(
                f"max_attempts must be >= 1, got {self.max_attempts}; to turn repair off "
                "for a mode use actions={mode: []}, or watch(..., repair=False)"
            )
        if not 0.0 < float(self.lr_factor) < 1.0:
            raise UsageError(f"lr_factor must be in (0, 1), got {self.lr_factor!r}")
        if self.clip_norm is not None and not float(self.clip_norm) > 0:
            raise UsageError(f"clip_norm must be > 0 or None, got {self.clip_norm!r}")
        if not 0.0 < float(self.leaky_slope) < 1.0:
            raise UsageError(f"leaky_slope must be in (0, 1), got {self.leaky_slope!r}")
        if self.swap_to not in _SWAP_TO:
            raise UsageError(f"swap_to must be one of {', '.join(_SWAP_TO)}; got {self.swap_to!r}")
        if isinstance(self.snapshot_every, bool) or int(self.snapshot_every) < 1:
            raise UsageError(f"snapshot_every must be an integer >= 1, got {self.snapshot_every!r}")
        if isinstance(self.opt_in, str):
            raise UsageError(f"opt_in must be a list of action names; write [{self.opt_in!r}]")
        optional = sorted(n for n, spec in ACTION_SPECS.items() if spec.opt_in)
        for name in self.opt_in:
            if name not in optional:
                raise UsageError(
                    f"opt_in names actions that change what the model computes; {name!r} "
                    f"is not one. Valid: {', '.join(optional)}"
                )
        self._opted = frozenset(self.opt_in)
        if not isinstance(self.actions, Mapping):
            raise UsageError(
                "actions must map failure modes to lists of action names, e.g. "
                "{'dying_relu': ['lower_lr', 'leaky_variant']}"
            )
        resolved: dict[Any, tuple[str, ...]] = {
            spec.kind: spec.repair_actions for spec in _repairable().values()
        }
        given: dict[str, tuple[str, ...]] = {}
        for key, names in self.actions.items():
            mode = _mode(key)
            if isinstance(names, str):
                raise UsageError(
                    f"actions[{mode.value!r}] must be a list of action names, got the "
                    f"string {names!r}; write [{names!r}]"
                )
            for name in names:
                if name not in ACTIONS:
                    raise UsageError(
                        f"unknown repair action {name!r} for {mode.value}. Valid actions: "
                        f"{', '.join(sorted(ACTIONS))}"
                    )
                if not ACTION_SPECS[name].allows(mode):
                    allowed = ", ".join(sorted(m.value for m in ACTIONS[name][1]))
                    raise UsageError(
                        f"repair action {name!r} cannot repair {mode.value}; it is for: {allowed}"
                    )
            resolved[mode] = tuple(names)
            given[str(mode.value)] = tuple(names)
        self._resolved = resolved
        self._given = given

    def actions_for(self, kind: Enum | str, cause: Cause | str | None = None) -> tuple[str, ...]:
        """The ordered actions for ``kind`` (and its ``cause``); empty when not repaired.

        Actions you gave for a mode are used whatever the cause; otherwise the mode
        registry's defaults for that cause (skip a poisoned batch rather than cut the
        learning rate, re-initialise a layer born dead...).
        """
        key = str(getattr(kind, "value", kind))
        if key in self._given:
            return self._given[key]
        for mode, names in self._resolved.items():
            if str(mode.value) == key:
                if cause is not None and cause != "unknown":
                    names = tuple(get_mode(mode).actions_for(Cause(cause)))
                return tuple(n for n in names if not ACTION_SPECS[n].opt_in or n in self._opted)
        return ()

    def describe(self) -> str:
        """One line per mode: ``mode: action -> action -> action``.

        >>> print(RepairPolicy(actions={"saturation": []}).describe().splitlines()[-1])
        saturation: (not repaired)
        """
        lines = []
        for mode in self._resolved:
            acts = self.actions_for(mode)
            lines.append(f"{mode.value}: {' -> '.join(acts) if acts else '(not repaired)'}")
        return "\n".join(lines)
