"""In-flight repair for PyTorch: snapshots, and the repair actions as registry entries.

``gradvitals.watch(model, optimizer, repair=True)`` (or ``policy=RepairPolicy(...)``)
gives the session a :class:`TorchRepairHost`; the framework-free
:class:`~gradvitals.session.RepairController` decides when to roll back and which
action comes next, and this module does it to the model and the optimizer:

- **snapshot** (:class:`~gradvitals.torch._repair_snapshot.Snapshot`): after each
  *clean* window (no NaN/Inf, nothing on its way to a finding), a copy of the model's
  weights and buffers and of the optimizer's per-parameter state; the state at attach
  counts as the first snapshot;
- **roll back**: weights, buffers and per-parameter optimizer state are restored;
  learning rates stay as they are now;
- **actions**: each one is a function registered in :data:`TORCH_ACTIONS` by name
  (``lower_lr``, ``clip_grad_norm``, ``leaky_variant``, ``relu_he``, ``add_norm``,
  ``reinit_dead``, ``xavier_init``, ``skip_batch``, ``zero_grad`` and the opt-in
  ``guard_op``), with its applicability test. The surgery itself is in
  :mod:`gradvitals.torch._repair_actions`.

``guard_op`` puts a forward pre-hook on the ``nn.MultiheadAttention`` the NaN's
provenance names (fully masked rows attend to every key); unlike the other hooks it
stays on the model after ``close()``, like a swapped activation, because evaluation
meets the same padded inputs.

Memory cost: one snapshot, about the size of the parameters plus the optimizer state
(1x the parameters for SGD, 2x with momentum, 3x for Adam), on the model's device or,
with ``RepairPolicy(offload_to_cpu=True)``, in CPU memory. Time: one copy of that
state per healthy window (``snapshot_every`` windows) and one host sync to check it
is finite. A healthy run is otherwise untouched: no RNG is drawn, no value is
written, so its weights are bitwise identical to an unwatched run's.

>>> import torch, gradvitals
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> monitor = gradvitals.watch(model, opt, repair=True, lint=False)
>>> monitor.session.repair.snapshot_step, monitor.repairs
(0, [])
>>> sorted(TORCH_ACTIONS.names())  # doctest: +NORMALIZE_WHITESPACE
['add_norm', 'clip_grad_norm', 'guard_op', 'leaky_variant', 'lower_lr', 'reinit_dead',
 'relu_he', 'skip_batch', 'xavier_init', 'zero_grad']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.remedies import ACTION_SPECS, ActionContext, ActionRegistry, RepairPolicy
from gradvitals.session import as_policy
from gradvitals.stats import SATURATING
from gradvitals.torch import _repair_actions as act
from gradvitals.torch._repair_snapshot import Snapshot

__all__ = ["TORCH_ACTIONS", "TorchRepairHost", "attach_repair", "resolve_policy"]

log = logging.getLogger("gradvitals")

_RELU_KINDS = ("relu", "relu6")

#: PyTorch implementations of the repair actions, by name.
TORCH_ACTIONS = ActionRegistry("torch")


def resolve_policy(policy: RepairPolicy | dict[str, Any] | None) -> RepairPolicy:
    """The policy to repair with (defaults when None; a dict of its fields is accepted)."""
    return as_policy(policy)


class TorchRepairHost:
    """The PyTorch side of repair: snapshots and the model/optimizer surgery.

    It talks to the monitor only through its public collector interface: ``model``,
    ``replan()``, ``add_permanent_hook()`` and ``multi_call_modules()``.

    Args:
        monitor: the :class:`~gradvitals.torch.Monitor`.
        optimizer: the optimizer being repaired.
        policy: the :class:`~gradvitals.RepairPolicy`.
        install_clip: how a repair's gradient clipping is hooked in: called with the
            :class:`~gradvitals.torch._repair_actions.GradClip`, returns a handle with
            ``remove()``. Default: an optimizer step pre-hook (see :func:`attach_repair`).
    """

    actions = TORCH_ACTIONS

    def __init__(
        self,
        monitor: Any,
        optimizer: torch.optim.Optimizer,
        policy: RepairPolicy,
        install_clip: Callable[[act.GradClip], Any] | None = None,
    ):
        self.monitor = monitor
        self.optimizer = optimizer
        self.policy = policy
        self._install_clip = install_clip
        self.snapshot = Snapshot(monitor.model, optimizer, offload_to_cpu=policy.offload_to_cpu)
        self.clip: act.GradClip | None = None
        self.guard: act.StepGuard | None = None
        self.guarded_ops: dict[str, Any] = {}  # guard_op: module name -> hook handle
        self.zeroing = False
        self.generator = torch.Generator().manual_seed(policy.seed)
        self.warned_scheduler = False
        #: the product of the learning-rate factors applied: multiply a schedule your loop
        #: sets every step by it, so that ``lower_lr`` holds
        self.lr_scale = 1.0
        self._expected_lrs: list[float] | None = None
        self._lr_factor = policy.lr_factor
        self._overridden = False
        self._skipped_seen = 0
        self._steps_seen = 0

    @property
    def model(self) -> torch.nn.Module:
        return self.monitor.model  # type: ignore[no-any-return]

    def install_clip(self, clip: act.GradClip) -> Any:
        """Hook ``clip`` in where gradients are final; returns a handle with ``remove()``."""
        if self._install_clip is not None:
            return self._install_clip(clip)
        return clip.install(self.optimizer)

    def capture(self, step: int) -> bool:
        return self.snapshot.capture(step)

    def restore(self) -> int | None:
        if not self.snapshot.taken:
            return None
        self.snapshot.restore()
        return self.snapshot.step

    def after_repair(self, applied: Sequence[str]) -> None:
        if any(ACTION_SPECS[n].structural for n in applied):
            self.monitor.replan()

    def handled(self, kind: Any, cause: Any) -> str | None:
        """``skip_batch`` is in place and skipped the step that made this NaN."""
        guard = self.guard
        if guard is None or str(getattr(kind, "value", kind)) != "nonfinite":
            return None
        n = guard.skipped - self._skipped_seen
        steps = self.monitor.step_count - self._steps_seen
        self._skipped_seen, self._steps_seen = guard.skipped, self.monitor.step_count
        if n <= 0 or n >= steps:
            return None  # nothing skipped, or every step was: nothing trains, act on it
        return f"skip_batch skipped {n} more step(s) whose gradients were not finite"

    def check(self) -> list[str]:
        """Did the loop undo ``lower_lr``? How many steps did ``skip_batch`` skip?"""
        lines = []
        if self._expected_lrs is not None and not self._overridden:
            now = [float(g.get("lr", 0.0)) for g in self.optimizer.param_groups]
            # set back to about its value before the cut: a schedule written every step
            # (a cosine or warm-up schedule moves by far less in one window)
            back = 0.5 / max(self._lr_factor, 1e-12)
            if any(n > back * e for n, e in zip(now, self._expected_lrs, strict=False)):
                self._overridden = True
                lines.append(
                    f"your loop set the learning rate back to {now[0]:.3g} after the repair "
                    f"lowered it to {self._expected_lrs[0]:.3g}: it sets g['lr'] every step. "
                    "Multiply your schedule by monitor.lr_scale "
                    f"(now {self.lr_scale:.3g}) so that the repair holds, e.g. "
                    "g['lr'] = get_lr(it) * monitor.lr_scale"
                )
            else:  # checked once, in the window right after the cut
                self._expected_lrs = None
        if self.guard is not None and self.guard.skipped:
            lines.append(
                f"skip_batch: skipped {self.guard.skipped} optimizer step(s) whose gradients "
                "were not finite"
            )
        return lines

    def incoming(self, f: Finding, ctx: ActionContext) -> tuple[str, Any] | None:
        """The Linear/Conv layer whose outputs are the units of the finding's site."""
        units = f.evidence.get("units")
        if not f.layer:
            return None
        if units is None:  # saturation: the width of the site's input
            units = ctx.site_units(f)
        if not units:
            return None
        role = f.evidence.get("site_role", "output")
        return act.find_incoming(self.model, f.layer, int(units), role)


def attach_repair(
    monitor: Any,
    optimizer: torch.optim.Optimizer,
    policy: RepairPolicy | dict[str, Any] | None = None,
    *,
    install_clip: Callable[[act.GradClip], Any] | None = None,
) -> Any:
    """Turn on repair for a monitor created without an optimizer (framework callbacks).

    The Lightning and Hugging Face callbacks count steps themselves, so their
    :class:`~gradvitals.torch.Monitor` has ``optimizer=None``; they hand the framework's
    torch optimizer here. Builds a :class:`TorchRepairHost`, enables repair on the
    monitor's session and takes the first snapshot (the state now).

    Args:
        monitor: the :class:`~gradvitals.torch.Monitor`.
        optimizer: the ``torch.optim.Optimizer`` that trains the monitored model (not a
            framework wrapper around it).
        policy: a :class:`~gradvitals.RepairPolicy`, a dict of its fields, or None.
        install_clip: where a ``clip_grad_norm`` repair hooks in, for loops whose
            ``optimizer.step`` computes the gradients itself (a closure, as Lightning
            does): its step pre-hooks run before the gradients exist.

    Returns:
        The session's :class:`~gradvitals.session.RepairController`.

    >>> import torch, gradvitals
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> monitor = gradvitals.watch(model, lint=False)  # no optimizer: steps counted by hand
    >>> ctl = attach_repair(monitor, torch.optim.SGD(model.parameters(), lr=0.1))
    >>> ctl.snapshot_step, monitor.session.repair is ctl
    (0, True)
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UsageError(
            f"repair needs the torch optimizer, got {type(optimizer).__name__}; unwrap it "
            "first (Accelerate: accelerated_optimizer.optimizer)"
        )
    pol = resolve_policy(policy)
    host = TorchRepairHost(monitor, optimizer, pol, install_clip=install_clip)
    controller = monitor.session.enable_repair(host, pol)
    controller.capture(monitor.step_count)
    return controller


def _multi_rank() -> bool:
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def _leaky(old: torch.nn.Module, slope: float) -> torch.nn.Module:
    inplace = bool(getattr(old, "inplace", False))
    return torch.nn.LeakyReLU(slope, inplace=inplace)


def _hidden_kinds(host: TorchRepairHost) -> set[str]:
    return set(act.hidden_activations(host.model).values())


# -- the actions ---------------------------------------------------------------------------
@TORCH_ACTIONS.register("lower_lr")
def _lower_lr(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    p = host.policy
    if (
        p.scheduler is None
        and act.scheduler_suspected(host.optimizer)
        and not host.warned_scheduler
    ):
        host.warned_scheduler = True
        log.warning(
            "gradvitals repair: an LR scheduler drives this optimizer; pass it as "
            "RepairPolicy(scheduler=scheduler) so that the lowered learning rate "
            "survives its next step"
        )
    done = act.scale_lr(host.optimizer, p.lr_factor, p.scheduler)
    host.lr_scale *= p.lr_factor
    host._expected_lrs = [float(g.get("lr", 0.0)) for g in host.optimizer.param_groups]
    return done


@TORCH_ACTIONS.register("skip_batch")
def _skip_batch(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    if host.guard is not None:
        return None  # already skipping: nothing more this action can do
    host.guard = act.StepGuard()
    host._steps_seen = host.monitor.step_count
    host.monitor.add_permanent_hook(host.guard.install(host.optimizer))
    return (
        "skipping every optimizer step whose gradients are not finite (one host sync per "
        "step from now on), instead of cutting the learning rate"
    )


def _attention_of(host: TorchRepairHost, ctx: ActionContext) -> list[tuple[str, Any]]:
    names = [f.layer for f in ctx.findings if f.layer]
    return [
        (n, m) for n, m in act.attention_modules(host.model, names) if n not in host.guarded_ops
    ]


@TORCH_ACTIONS.register("guard_op", applicable=lambda host, ctx: bool(_attention_of(host, ctx)))
def _guard_op(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    mods = _attention_of(host, ctx)
    if not mods:
        return None
    for name, m in mods:
        host.guarded_ops[name] = m.register_forward_pre_hook(
            act.unmask_empty_rows, with_kwargs=True
        )
    return (
        f"attention rows of {', '.join(n for n, _ in mods)} whose keys are all masked now "
        "attend to every key (as a finite fill such as -1e9 does) instead of giving NaN; "
        "the hook stays on the model: make the same change in your code"
    )


@TORCH_ACTIONS.register("zero_grad")
def _zero_grad(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    if host.zeroing:
        return None

    def zero(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        optimizer.zero_grad(set_to_none=True)

    host.zeroing = True
    host.monitor.add_permanent_hook(host.optimizer.register_step_post_hook(zero))
    return "zeroing the gradients after every optimizer step (optimizer.zero_grad())"


@TORCH_ACTIONS.register("clip_grad_norm")
def _clip(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    if host.clip is not None:
        host.clip.max_norm /= 2.0
        return f"tightened gradient-norm clipping to {host.clip.max_norm:.3g}"
    value = host.policy.clip_norm
    source = "from the policy"
    if value is None:
        value, source = ctx.clip_norm, "2x the median healthy gradient norm"
    if value is None:
        value, source = 1.0, "a default: no healthy gradient norms were seen"
    host.clip = act.GradClip(value)
    host.monitor.add_permanent_hook(host.install_clip(host.clip))
    return f"clipping the global gradient norm at {value:.3g} ({source})"


@TORCH_ACTIONS.register(
    "leaky_variant", applicable=lambda host, ctx: bool(_hidden_kinds(host) & set(_RELU_KINDS))
)
def _leaky_variant(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    slope = host.policy.leaky_slope
    names = act.swap_activations(host.model, _RELU_KINDS, lambda old: _leaky(old, slope))
    if not names:
        return None
    return f"swapped {len(names)} ReLU module(s) for LeakyReLU({slope:g}): " + ", ".join(names)


@TORCH_ACTIONS.register(
    "relu_he", applicable=lambda host, ctx: bool(_hidden_kinds(host) & SATURATING)
)
def _relu_he(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    p = host.policy
    hidden = act.hidden_activations(host.model)
    layers = []
    for n, kind in hidden.items():
        if kind in SATURATING:
            inc = act.affine_before(host.model, n)
            if inc is not None:
                layers.append(inc)
    gain = act.he_gain(p.swap_to, p.leaky_slope)

    def make(old: torch.nn.Module) -> torch.nn.Module:
        return torch.nn.ReLU() if p.swap_to == "relu" else _leaky(old, p.leaky_slope)

    names = act.swap_activations(host.model, SATURATING, make)
    if not names:
        return None
    changed: list[torch.Tensor] = []
    for _, layer in layers:
        changed += act.reinit_layer(layer, "he", gain, host.generator)
    act.reset_optimizer_state(host.optimizer, changed)
    new = "ReLU" if p.swap_to == "relu" else f"LeakyReLU({p.leaky_slope:g})"
    return (
        f"swapped {len(names)} sigmoid/tanh module(s) for {new} ({', '.join(names)}) "
        f"and He-initialised {len(layers)} layer(s): {', '.join(n for n, _ in layers)}"
    )


@TORCH_ACTIONS.register(
    # under DDP new parameters would not be all-reduced: ranks would drift apart
    "add_norm",
    applicable=lambda host, ctx: bool(act.hidden_activations(host.model)) and not _multi_rank(),
)
def _add_norm(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    names = act.insert_norm(host.model, host.optimizer, exclude=host.monitor.multi_call_modules())
    if not names:
        return None
    return f"inserted a normalization before {len(names)} activation(s): " + ", ".join(names)


def _has_incoming(host: TorchRepairHost, ctx: ActionContext) -> bool:
    return any(host.incoming(f, ctx) is not None for f in ctx.findings)


@TORCH_ACTIONS.register("reinit_dead", applicable=_has_incoming)
def _reinit_dead(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    hidden = act.hidden_activations(host.model)
    leaky = any(k == "leaky_relu" for k in hidden.values())
    gain = act.he_gain("leaky_relu" if leaky else "relu", host.policy.leaky_slope)
    parts = []
    for f in ctx.findings:
        inc = host.incoming(f, ctx)
        rows = list(f.evidence.get("dead_unit_indices") or [])
        if inc is None or not rows:
            continue
        name, layer = inc
        changed = act.reinit_rows(layer, rows, gain, host.generator)
        units = int(f.evidence.get("units", 0))
        for norm in act.norms_between(host.model, name, f.layer or "", units):
            changed += act.reset_norm_rows(norm, rows)
        act.reset_optimizer_state(host.optimizer, changed, rows=rows)
        parts.append(f"{len(rows)} unit(s) of {name}")
    if not parts:
        return None
    return "He-initialised the incoming weights of " + ", ".join(parts)


@TORCH_ACTIONS.register("xavier_init", applicable=_has_incoming)
def _xavier(host: TorchRepairHost, ctx: ActionContext) -> str | None:
    parts = []
    changed: list[torch.Tensor] = []
    seen: set[str] = set()
    for f in ctx.findings:
        inc = host.incoming(f, ctx)
        if inc is None or inc[0] in seen:
            continue
        name, layer = inc
        seen.add(name)
        gain = act.xavier_gain(str(f.evidence.get("activation", "tanh")))
        changed += act.reinit_layer(layer, "xavier", gain, host.generator)
        parts.append(f"{name} (gain {gain:.3g})")
    if not parts:
        return None
    act.reset_optimizer_state(host.optimizer, changed)
    return "Xavier-initialised " + ", ".join(parts)
