"""The failure-mode registry: one :class:`ModeSpec` per mode, the one place to add to.

A spec says everything gradvitals needs about a mode: how urgent it is (the report's
order), which detector finds it during training (a factory over
:class:`~gradvitals.Thresholds`; None for pre-flight modes found by the linter), the
order the detector suite runs it in and whether its firing makes the rest of the
window untrustworthy, its remedies (catalog keys, in the order to try them, and per
:class:`~gradvitals.Cause` when the cause changes what to do first), and the repair
actions tried by default (none: not repairable).

:func:`remedies_for`, the report's :func:`urgency`, the detector suite and
:class:`~gradvitals.RepairPolicy`'s defaults are all derived from here. Adding a mode
is one detector module plus one :func:`register_mode` call.

>>> spec = get_mode(FailureMode.DYING_RELU)
>>> spec.repair_actions, spec.remedies[:2]
(('lower_lr', 'leaky_variant', 'reinit_dead'), ('lower_lr', 'leaky_variant'))
>>> [r.key for r in remedies_for(FailureMode.EXPLODING_GRADIENT, clip_norm=2.5)]
['lower_lr', 'clip_grad_norm', 'batchnorm']
>>> remedies_for("exploding_gradient", clip_norm=2.5)[1].params["max_norm"]
2.5
>>> urgency(FailureMode.NONFINITE) < urgency(FailureMode.SATURATION)
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gradvitals.detectors import (
    Detector,
    DivergedPlateauDetector,
    DyingReluDetector,
    ExplodingGradientDetector,
    NonfiniteDetector,
    OutputActivationDetector,
    SaturationDetector,
    StalledDetector,
    Thresholds,
    VanishingGradientDetector,
    has_nonfinite,
)
from gradvitals.findings import Cause, FailureMode, Remedy, kind_of, register_kind
from gradvitals.remedies._catalog import render
from gradvitals.stats import WindowRecord

__all__ = [
    "ModeSpec",
    "get_mode",
    "modes",
    "register_mode",
    "remedies_for",
    "training_modes",
    "urgency",
]


@dataclass(frozen=True)
class ModeSpec:
    """Everything gradvitals knows about one failure mode.

    Attributes:
        kind: the mode (a :class:`~gradvitals.FailureMode`, or a member of another
            ``str`` Enum for a mode added outside gradvitals).
        urgency: lower is more urgent; the report and the console rank by it.
        summary: what the mode means, in one line.
        detector: builds the training-time detector from thresholds; None for
            pre-flight modes (found by ``lint``).
        run_order: position in the detector suite (lower runs first).
        stops_window: when it returns True for a window, later detectors skip that
            window (a NaN contaminates every other statistic).
        remedies: catalog keys in the order to try them.
        by_cause: for a cause that changes what to do first, its own order.
        repair_actions: the repair actions tried by default, in order; empty when
            the mode is not repaired in flight.
        repair_by_cause: for a cause that calls for other actions (skip a poisoned
            batch, not a learning-rate cut), its own list; empty: not repaired.
    """

    kind: Enum
    urgency: int
    summary: str
    detector: Callable[[Thresholds], Detector] | None = None
    run_order: int = 100
    stops_window: Callable[[WindowRecord], bool] | None = None
    remedies: tuple[str, ...] = ()
    by_cause: Mapping[Cause, tuple[str, ...]] = field(default_factory=dict)
    repair_actions: tuple[str, ...] = ()
    repair_by_cause: Mapping[Cause, tuple[str, ...]] = field(default_factory=dict)

    def actions_for(self, cause: Cause | None) -> tuple[str, ...]:
        """The default repair actions for a finding of this mode with this cause."""
        if cause is not None and cause in self.repair_by_cause:
            return self.repair_by_cause[cause]
        return self.repair_actions

    @property
    def repairable(self) -> bool:
        return bool(self.repair_actions)

    @property
    def preflight(self) -> bool:
        return self.detector is None


_MODES: dict[str, ModeSpec] = {}


def register_mode(spec: ModeSpec) -> ModeSpec:
    """Add a failure mode. Its kind becomes known to ``Finding.from_dict`` too."""
    key = str(spec.kind.value)
    if key in _MODES:
        raise ValueError(f"failure mode {key!r} is already registered")
    register_kind(spec.kind)
    _MODES[key] = spec
    return spec


def unregister_mode(kind: Enum | str) -> None:
    """Remove a mode added with :func:`register_mode` (tests use this to clean up)."""
    _MODES.pop(str(getattr(kind, "value", kind)), None)


def get_mode(kind: Enum | str) -> ModeSpec:
    """The spec of ``kind`` (an enum member or its value)."""
    key = str(getattr(kind, "value", kind))
    try:
        return _MODES[key]
    except KeyError:
        raise ValueError(
            f"no failure mode {key!r} is registered; known: {', '.join(sorted(_MODES))}"
        ) from None


def modes() -> tuple[ModeSpec, ...]:
    """Every registered mode, most urgent first."""
    return tuple(sorted(_MODES.values(), key=lambda s: s.urgency))


def training_modes() -> tuple[ModeSpec, ...]:
    """Modes with a training-time detector, in the suite's run order."""
    return tuple(sorted((s for s in _MODES.values() if s.detector), key=lambda s: s.run_order))


def urgency(kind: Enum | str) -> int:
    """The report's rank of ``kind`` (unknown modes rank last)."""
    key = str(getattr(kind, "value", kind))
    spec = _MODES.get(key)
    return spec.urgency if spec is not None else 10_000


def remedies_for(
    kind: Enum | str,
    cause: Cause | str | None = None,
    *,
    framework: str = "torch",
    clip_norm: float | None = None,
    activation: str | None = None,
    layer: str | None = None,
    exclude: frozenset[str] = frozenset(),
    lead: str | None = None,
) -> list[Remedy]:
    """The remedies for ``kind`` (and ``cause``), first to try first.

    Args:
        kind: the failure mode (enum or value).
        cause: the cause; a cause with its own order (``ModeSpec.by_cause``) leads.
        framework: ``"torch"`` or ``"keras"``: the code snippets' framework.
        clip_norm: a clipping threshold from the run's healthy history.
        activation: the offending activation's name, for the wording.
        layer: the layer the finding names, for snippets that need it.
        exclude: remedy keys not to offer (they do not fit this model).
        lead: a remedy key to put first (the diagnosis knows better than the order).

    Returns:
        A new list of :class:`~gradvitals.Remedy`.
    """
    spec = get_mode(kind_of(kind) if isinstance(kind, str) else kind)
    keys = list(spec.remedies)
    if cause is not None:
        first = spec.by_cause.get(Cause(cause), ())
        keys = list(first) + [k for k in keys if k not in first]
    if lead is not None:
        keys = [lead] + [k for k in keys if k != lead]
    params: dict[str, Any] = {"activation": activation, "layer": layer}
    if clip_norm:
        params.update(
            max_norm=clip_norm, source="twice the median of this run's healthy gradient norms"
        )
    return [render(k, framework, **params) for k in keys if k not in exclude]


# -- the built-in modes -----------------------------------------------------------------
_T = FailureMode
register_mode(
    ModeSpec(
        _T.NONFINITE,
        urgency=0,
        summary="a NaN or Inf appeared in the loss, activations or gradients",
        detector=NonfiniteDetector,
        run_order=0,
        stops_window=has_nonfinite,
        remedies=("lower_lr", "clip_grad_norm", "check_numerics"),
        by_cause={
            Cause.NONFINITE_INPUT: ("clean_inputs", "check_numerics"),
            Cause.NONFINITE_TARGET: ("clean_targets", "check_numerics"),
            Cause.UNSTABLE_OP: ("guard_op", "check_numerics"),
            Cause.UNSTABLE_LOSS: ("stable_loss", "guard_op"),
            Cause.LOW_PRECISION_OVERFLOW: ("fix_precision", "check_numerics"),
            Cause.LEARNING_RATE: ("lower_lr", "clip_grad_norm"),
            Cause.MISSING_ZERO_GRAD: ("zero_grad",),
        },
        repair_actions=("lower_lr", "clip_grad_norm", "lower_lr"),
        repair_by_cause={
            Cause.NONFINITE_INPUT: ("skip_batch",),
            Cause.NONFINITE_TARGET: ("skip_batch",),
            Cause.UNSTABLE_OP: ("guard_op", "skip_batch"),
            Cause.UNSTABLE_LOSS: ("skip_batch",),
            Cause.LOW_PRECISION_OVERFLOW: ("skip_batch",),
            Cause.MISSING_ZERO_GRAD: ("zero_grad",),
        },
    )
)
register_mode(
    ModeSpec(
        _T.EXPLODING_GRADIENT,
        urgency=10,
        summary="gradient norms or steps grow far past their own history",
        detector=ExplodingGradientDetector,
        run_order=40,
        remedies=("lower_lr", "clip_grad_norm", "batchnorm"),
        by_cause={
            Cause.MISSING_ZERO_GRAD: ("zero_grad",),
            Cause.UNSCALED_DATA: ("normalize_data", "lower_lr"),
        },
        repair_actions=("lower_lr", "clip_grad_norm", "lower_lr"),
        repair_by_cause={
            Cause.MISSING_ZERO_GRAD: ("zero_grad",),
            Cause.UNSCALED_DATA: ("lower_lr", "clip_grad_norm"),
        },
    )
)
register_mode(
    ModeSpec(
        _T.VANISHING_GRADIENT,
        urgency=20,
        summary="early layers get orders of magnitude less gradient and barely move",
        detector=VanishingGradientDetector,
        run_order=30,
        remedies=("relu_he", "batchnorm", "residual"),
        by_cause={Cause.SATURATING_ACTIVATION: ("relu_he", "batchnorm", "residual")},
        repair_actions=("relu_he", "add_norm", "lower_lr"),
    )
)
register_mode(
    ModeSpec(
        _T.DYING_RELU,
        urgency=30,
        summary="most units of a ReLU layer are zero for every example, and stay so",
        detector=DyingReluDetector,
        run_order=10,
        remedies=("lower_lr", "leaky_variant", "he_init", "check_bias"),
        by_cause={
            Cause.OUTPUT_ACTIVATION: ("remove_output_activation",),
            Cause.BAD_INIT: ("reinit", "check_bias", "leaky_variant"),
            Cause.MISSING_ZERO_GRAD: ("zero_grad",),
            Cause.UNSCALED_DATA: ("normalize_data",),
        },
        repair_actions=("lower_lr", "leaky_variant", "reinit_dead"),
        repair_by_cause={
            Cause.OUTPUT_ACTIVATION: (),
            Cause.BAD_INIT: ("reinit_dead", "leaky_variant"),
            Cause.MISSING_ZERO_GRAD: ("zero_grad",),
        },
    )
)
register_mode(
    ModeSpec(
        _T.SATURATION,
        urgency=40,
        summary="most sigmoid/tanh outputs sit at an asymptote",
        detector=SaturationDetector,
        run_order=20,
        remedies=("xavier_init", "lower_lr", "batchnorm", "relu_he"),
        by_cause={
            Cause.BAD_INIT: ("xavier_init", "batchnorm"),
            Cause.UNSCALED_DATA: ("normalize_data", "xavier_init"),
            Cause.LEARNING_RATE: ("lower_lr", "batchnorm"),
        },
        repair_actions=("xavier_init", "lower_lr", "add_norm"),
        repair_by_cause={Cause.LEARNING_RATE: ("lower_lr", "add_norm")},
    )
)
register_mode(
    ModeSpec(
        _T.BORN_DEAD,
        urgency=50,
        summary="a ReLU stack likely constant at initialisation",
        remedies=("widen", "leaky_variant", "he_init"),
    )
)
register_mode(
    ModeSpec(
        _T.LINEAR_COLLAPSE,
        urgency=60,
        summary="consecutive affine layers with no nonlinearity between them",
        remedies=("add_nonlinearity",),
    )
)
register_mode(
    ModeSpec(
        _T.DEEP_SATURATING_STACK,
        urgency=70,
        summary="a deep sigmoid/tanh stack without normalization or skips",
        remedies=("relu_he", "batchnorm", "residual"),
    )
)
register_mode(
    ModeSpec(
        _T.INIT_MISMATCH,
        urgency=80,
        summary="the initialisation gain does not match the activation",
        remedies=("he_init",),
    )
)
register_mode(
    ModeSpec(
        _T.OUTPUT_ACTIVATION,
        urgency=45,
        summary="the output layer's activation cannot fit the loss or the targets",
        detector=OutputActivationDetector,
        run_order=5,
        remedies=("remove_output_activation", "match_loss"),
    )
)
register_mode(
    ModeSpec(
        _T.LOSS_MISMATCH,
        urgency=46,
        summary="the loss does not fit the targets",
        remedies=("match_loss",),
    )
)
register_mode(
    ModeSpec(
        _T.UNSTABLE_LOSS,
        urgency=47,
        summary="the loss is computed in a numerically unsafe way",
        remedies=("stable_loss",),
    )
)
register_mode(
    ModeSpec(
        _T.UNSCALED_DATA,
        urgency=48,
        summary="inputs or targets with a scale far from 1",
        remedies=("normalize_data",),
    )
)
# -- stalled and diverged_plateau (issue 12, item 3) ---------------------------------------
register_mode(
    ModeSpec(
        _T.STALLED,
        urgency=5,  # nothing trains at all: right after NaNs
        summary="the loss stays at its start while nothing moves anywhere",
        detector=StalledDetector,
        run_order=50,
        remedies=("check_graph", "unfreeze", "check_lr", "remove_output_activation"),
        by_cause={
            Cause.NO_GRADIENT: ("fix_graph", "check_graph", "unfreeze", "remove_output_activation"),
            Cause.LEARNING_RATE: ("check_lr", "unfreeze"),
        },
        # no repair action fits: a cut graph, a frozen model or lr=0 is a code change
    )
)
register_mode(
    ModeSpec(
        _T.DIVERGED_PLATEAU,
        urgency=15,  # after exploding: the run survives, at a useless loss
        summary="the loss jumped far above its best and stays there, without a NaN",
        detector=DivergedPlateauDetector,
        run_order=60,
        remedies=("lower_lr", "lr_warmup", "restore_checkpoint", "clip_grad_norm"),
        by_cause={
            Cause.LEARNING_RATE: ("lower_lr", "lr_warmup", "restore_checkpoint"),
            Cause.UNKNOWN: ("restore_checkpoint", "lower_lr"),
        },
        # roll back to the last snapshot from before the jump, then a smaller step
        repair_actions=("lower_lr", "clip_grad_norm", "lower_lr"),
    )
)
# -- end of stalled and diverged_plateau --------------------------------------------------
