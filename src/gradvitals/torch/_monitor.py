"""The PyTorch collector: ``gradvitals.watch(model, optimizer)``.

Wiring only: hooks collect on-device statistics on *sampled* steps, the monitor packs
them and copies them to the host once per window, and hands the
:class:`~gradvitals.session.Session` one :class:`~gradvitals.stats.WindowRecord`. The
session decides, reports and repairs; no thresholds or maths live here.

Sampling schedule (:class:`~gradvitals.session.Schedule`; bounded detection latency,
near-zero cost):

- windows of ``every`` optimizer steps; after a short warm-up of windows of 1, 2, 4...
  steps so that failures in the first steps are seen early;
- statistics are collected on the last ``samples`` steps of each window. Hooks are
  *installed* only for those steps and removed afterwards: an unsampled step runs no
  gradvitals Python code except the optimizer-step counter;
- the loss (when observed) is copied into an on-device buffer every step: one copy,
  no sync;
- one host transfer per window (``.cpu()`` of one packed tensor, laid out by
  :class:`~gradvitals.stats.Layout`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradvitals.detectors import Thresholds
from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.remedies import RepairPolicy
from gradvitals.session import Coverage, Session, SessionView
from gradvitals.stats import LayerInfo, Layout, SiteInfo, WindowRecord, assemble_record
from gradvitals.stats._table import LOSS_FIELDS
from gradvitals.torch._batch import (
    BatchAccumulator,
    first_float_input,
    loss_facts,
    saved_targets,
    target_inputs,
)
from gradvitals.torch._modules import is_conv_like, is_normalization, is_recurrent
from gradvitals.torch._params import (
    LayerTable,
    ParamAccumulator,
    is_sharded_tensor,
    local_shard,
    module_kind,
)
from gradvitals.torch._sites import SiteAccumulator, plan_sites

__all__ = ["Monitor", "watch"]

log = logging.getLogger("gradvitals")


@dataclass
class _Frozen:
    """A full window set aside until its statistics are collected (double buffering)."""

    index: int
    start: int
    end: int
    sites: dict[str, SiteAccumulator]
    site_order: list[str]
    params: ParamAccumulator
    losses: list[torch.Tensor]
    loss_steps: list[int]
    batch: BatchAccumulator
    skipped: int = 0
    facts: dict[str, Any] = field(default_factory=dict)


def _recomputing(name: str, calls: dict[str, int]) -> bool:
    """True inside a backward pass that recomputes a forward already measured in this step
    (activation checkpointing): the recomputation is not a second call of the module."""
    return name in calls and torch._C._current_graph_task_id() != -1


def _has_storage(x: torch.Tensor) -> bool:
    """False for tensors without storage: torch.func wrappers, meta and fake tensors."""
    return not torch._C._functorch.is_functorch_wrapped_tensor(x) and x.device.type != "meta"


def _unwrap(model: Any) -> tuple[nn.Module, bool]:
    compiled = False
    while True:  # DDP(compile(m)) and compile(DDP(m)) alike: hooks go on m, names lose "module."
        orig = getattr(model, "_orig_mod", None)
        if isinstance(orig, nn.Module) and type(model).__name__ == "OptimizedModule":
            model, compiled = orig, True
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model, compiled


class Monitor(SessionView):
    """Watches one model's training. Create it with :func:`watch`.

    The monitor is a collector: it measures, and its :attr:`session` decides. The
    session's results are available here too.

    Attributes:
        session: the :class:`~gradvitals.session.Session` (findings, history, outputs).
        findings: every :class:`~gradvitals.Finding`, oldest first.
        history: one :class:`~gradvitals.stats.WindowRecord` per closed window.
        preflight: the findings of the pre-flight lint run at attach (if enabled).
        repairs: one dict per repair made (``repair=True``).
        step_count: optimizer steps seen so far.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int = 20,
        samples: int = 2,
        warmup: bool = True,
        log_dir: str | None = None,
        thresholds: Thresholds | dict[str, Any] | None = None,
        scaler: Any = None,
        lint: bool = True,
        console: bool = True,
        history_limit: int | None = 10_000,
        repair: bool = False,
        policy: RepairPolicy | dict[str, Any] | None = None,
        distributed: bool | None = None,
        sinks: Sequence[Any] = (),
        on_finding: Callable[[Finding], Any] | None = None,
        on_window: Callable[[WindowRecord, list[Finding]], Any] | None = None,
        stop_on: Iterable[Any] | str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise UsageError(
                f"watch() expects a torch.nn.Module, got {type(model).__name__}. "
                "Pass the model itself: gradvitals.watch(model, optimizer)."
            )
        if isinstance(model, torch.jit.ScriptModule):
            raise UsageError(
                "watch() cannot watch a torch.jit.script/trace module: TorchScript runs no "
                "Python hooks. Watch the eager module you scripted (train it eagerly, or "
                "use torch.compile, whose gradients gradvitals does watch)."
            )
        self.session = Session(
            framework="torch",
            thresholds=thresholds,
            every=every,
            samples=samples,
            warmup=warmup,
            console=console,
            history_limit=history_limit,
            sinks=sinks,
            on_finding=on_finding,
            on_window=on_window,
            stop_on=stop_on,
        )
        self.model, self.compiled = _unwrap(model)
        inner = getattr(optimizer, "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer) and inner is not optimizer:
            optimizer = inner  # Accelerate's and Lightning's wrappers: hook the torch optimizer
        self.optimizer = optimizer
        if optimizer is not None:
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise UsageError(
                    f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
                )
            mine = {id(p) for p in self.model.parameters()}
            theirs = [p for g in optimizer.param_groups for p in g["params"]]
            if mine and not any(id(p) in mine for p in theirs):
                raise UsageError(
                    "the optimizer holds none of the model's parameters: build it from this "
                    "model, e.g. torch.optim.SGD(model.parameters(), lr=0.1), or pass the "
                    "optimizer that trains this model"
                )
        pol: RepairPolicy | None = None
        if repair or policy is not None:
            if optimizer is None:
                raise UsageError(
                    "repair=True needs the optimizer: "
                    "gradvitals.watch(model, optimizer, repair=True)"
                )
            from gradvitals.session import as_policy

            pol = as_policy(policy)  # validated before anything is attached
        self.scaler = scaler
        self.closed = False
        self._sampled_hooks: list[Any] = []
        self._permanent_hooks: list[Any] = []
        self._sites: dict[str, SiteAccumulator] = {}
        self._site_order: list[str] = []
        self._calls: dict[str, int] = {}
        self._produced: set[int] = set()
        self._input_ptrs: set[int] = set()
        self._layer_order: list[str] | None = None
        self._losses: list[torch.Tensor] = []  # detached 0-d losses of the open window
        self._loss_steps: list[int] = []  # the step each loss belongs to
        self._last_loss_step = -1
        self._batch = BatchAccumulator()  # the open window's batch evidence
        self._last_batch: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # references
        self._backwards = 0  # backward passes of the watched parameter since the last step
        self._facts: dict[str, Any] = {}  # the open window's host facts (provenance...)
        self._replayed = False  # one provenance replay per failure episode
        self._can_replay = True  # False on sharded models (see below)
        self._first_log: list[tuple[str, str]] | None = None
        self._rolled_back_at = -1  # the step a repair last rolled the model back at
        self._step_loss: torch.Tensor | None = None  # this step's loss, observed pre-step
        self._pending: _Frozen | None = None  # a full window waiting for its last loss
        self._forwards = 0  # training forward passes since the last optimizer step
        self._pending_skipped = 0  # forwards whose optimizer step never came
        self._forwards_per_step = 1  # the most seen in one step (gradient accumulation)
        self._warned_stuck = False
        self._unmeasured: dict[str, str] = {}  # site -> why it could not be measured
        self._measured_sites: set[str] = set()
        self._measured_layers: set[str] = set()
        self._relu_inputs: set[str] = set()  # input sites seen to follow a functional ReLU
        #: where a parameter's gradient goes; distributed runs defer it past DDP's all-reduce
        self._on_grad: Callable[[int, torch.Tensor], None] = lambda i, p: self._params.on_grad(i, p)
        #: ``(flat, layout) -> flat``: combines packed statistics across ranks
        self._reduce: Callable[[torch.Tensor, Layout], torch.Tensor] | None = None
        self._plan()
        if scaler is not None:
            self._params.norm_dtype = torch.float64
        self.session.on_disable(self._remove)
        if distributed is not False:  # None: combine across ranks when there are several
            self._attach_distributed(required=distributed is True, repair=pol is not None)
        if any(is_sharded_tensor(p) for p in self._table.params):
            # FSDP: a replay of the forward all-gathers the parameters, and only the ranks
            # that saw the NaN would replay (a hang): the first NaN's op is not traced
            self._can_replay = False
        self.session.open_log(log_dir, {"adapter": "torch", "every": every})
        # every check has passed: from here on, hooks are attached
        if optimizer is not None:
            self._permanent_hooks.append(optimizer.register_step_pre_hook(self._on_pre_step))
            self._permanent_hooks.append(optimizer.register_step_post_hook(self._on_post_step))
        if not self.compiled:  # counts training forwards: a step that never comes is seen
            self._permanent_hooks.append(
                self.model.register_forward_pre_hook(self._on_root_forward, with_kwargs=True)
            )
        if self.compiled:
            warnings.warn(
                "gradvitals: this model is torch.compile'd. Gradient norms, update ratios, "
                "non-finite checks and the loss are watched; activation statistics (dead "
                "units, saturation) are not, because forward hooks cannot be added to a "
                "compiled graph without recompiling it. To watch activations, train the "
                "uncompiled model (or compile only submodules).",
                UserWarning,
                stacklevel=3,
            )
        if lint:
            self._run_lint()
        if pol is not None:
            from gradvitals.torch._repair import TorchRepairHost

            assert optimizer is not None
            host = TorchRepairHost(self, optimizer, pol)
            self.session.enable_repair(host, pol).capture(self.step_count)
        if self.session.schedule.is_sampled(0):
            self._install()

    # -- the session's results (findings, history, report...: see SessionView) -----------
    @property
    def step_count(self) -> int:
        return self.session.step_count

    @property
    def lr_scale(self) -> float:
        """The product of the learning-rate cuts repair made (1.0 without any). A loop that
        sets ``g['lr']`` every step should multiply its schedule by it, or it undoes them."""
        rep = self.session.repair
        return float(getattr(rep.host, "lr_scale", 1.0)) if rep is not None else 1.0

    # -- what the repair host may use ----------------------------------------------------
    def replan(self) -> None:
        """Re-plan sites and layers after the model's structure changed (a repair)."""
        self._remove()
        dtype = self._params.norm_dtype
        self._plan()
        self._params.norm_dtype = dtype
        self._sites, self._site_order, self._layer_order = {}, [], None

    def add_permanent_hook(self, handle: Any) -> None:
        """Keep a hook handle (e.g. a repair's clipping hook) until :meth:`close`."""
        self._permanent_hooks.append(handle)

    def multi_call_modules(self) -> set[str]:
        """Modules called more than once per forward pass (their sites are ``name#k``)."""
        return {k.split("#")[0] for k in self._site_order if "#" in k}

    # -- planning ------------------------------------------------------------------------
    def _plan(self) -> None:
        self._planned_for = self._signature()
        self._has_conv1d = any(isinstance(m, nn.Conv1d) for m in self.model.modules())
        self._acts, self._input_sites = plan_sites(self.model)
        self.session.model_facts = _model_facts(self.model, self._acts)
        self._table = LayerTable.from_model(self.model)
        self._params = ParamAccumulator(self._table)

    def _attach_distributed(self, *, required: bool, repair: bool = False) -> None:
        from gradvitals.torch._dist import AfterBackward, plan

        setup = plan(
            self.model, required=required, layout_key=lambda: self._packing_layout, repair=repair
        )
        if setup is None:
            return
        self._reduce = setup.reduce
        self.session.is_main_process = setup.is_main
        if not setup.sharded:  # FSDP2 calls the hooks with the reduced shard: read it there
            self._on_grad = AfterBackward(self._on_grad, self.session.fail)

    _packing_layout = ""  # names of the sites packed by the last _collect

    def _run_lint(self) -> None:
        try:
            from gradvitals.torch._lint import lint
        except ImportError:  # pragma: no cover
            return
        try:
            found = lint(self.model)
        except Exception as e:  # lint must never stop training
            log.debug("gradvitals lint skipped: %s", e)
            return
        self.session.add_preflight(found)

    # -- hooks ---------------------------------------------------------------------------
    def _signature(self) -> tuple[Any, ...]:
        """What the layer table depends on: which parameters train, and their dtype and
        device (progressive unfreezing, ``add_param_group``, ``.double()``, ``.to()``)."""
        params = tuple((id(p), p.requires_grad, p.dtype, p.device) for p in self.model.parameters())
        groups = (
            0
            if self.optimizer is None
            else sum(len(g["params"]) for g in self.optimizer.param_groups)
        )
        return params, groups

    def _install(self) -> None:
        if self._sampled_hooks or self.disabled:
            return
        sig = self._signature()
        if sig != self._planned_for:
            self.replan()  # re-plan at the next window, as the parameters changed
        m = self.model
        h = self._sampled_hooks
        if self.compiled:
            # Forward hooks added after torch.compile never fire and changing them
            # recompiles; parameter hooks run outside the graph and keep working.
            for i, p in enumerate(self._table.params):
                h.append(p.register_post_accumulate_grad_hook(self._make_grad_hook(i)))
            return
        modules = dict(m.named_modules())
        if "activations" not in self.session.off:
            for name, act in self._acts.items():
                h.append(modules[name].register_forward_hook(self._make_act_hook(name, act)))
            for name in self._input_sites:
                h.append(modules[name].register_forward_pre_hook(self._make_input_hook(name)))
        if "gradients" not in self.session.off:
            for i, p in enumerate(self._table.params):
                h.append(p.register_post_accumulate_grad_hook(self._make_grad_hook(i)))
            if self._table.params:  # the smallest parameter: is its gradient zeroed?
                probe = min(self._table.params, key=lambda q: q.numel())
                if is_sharded_tensor(probe):
                    h.append(self._stale_hook_sharded(modules, probe))
                else:
                    h.append(probe.register_hook(self._make_stale_hook(probe)))
        if self._layer_order is None:
            order: list[str] = []
            self._layer_order = order
            self._first_log = []  # the first sampled forward's calls, for the output sites
            owners = set(self._table.names)
            for name, mod in modules.items():
                key = name or module_kind(mod)
                if key in owners:
                    h.append(mod.register_forward_pre_hook(self._make_order_hook(key)))

    def _remove(self) -> None:
        for handle in self._sampled_hooks:
            handle.remove()
        self._sampled_hooks = []

    def _on_root_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        def body() -> None:
            if not torch.is_grad_enabled() or self.closed:
                return
            self._forwards += 1
            if self._forwards > self.every + 4 * self._forwards_per_step:
                self._stuck()
            if self._first_log:
                self._settle_output_sites()
            sampled = bool(self._sampled_hooks)
            x = first_float_input(args, kwargs)
            if x is not None and _has_storage(x):
                self._batch.add_input(x, self.step_count, sampled)
            if kwargs:
                self._batch.add_targets(target_inputs(kwargs))  # labels= (Hugging Face)
            self._last_batch = (args, kwargs)  # references for a provenance replay
            if not sampled:
                return
            self._calls = {}
            self._produced = set()
            tensors = [*args, *kwargs.values()]
            self._input_ptrs = {
                a.data_ptr()
                for a in tensors
                if isinstance(a, torch.Tensor) and a.layout is torch.strided and _has_storage(a)
            }
            if self.optimizer is None and self._params.before is None:
                self._params.snapshot_weights()

        self.session.guard(body)()

    def _site(self, name: str, activation: str, role: str, conv_like: bool) -> SiteAccumulator:
        k = self._calls.get(name, -1) + 1
        self._calls[name] = k
        key = name if k == 0 else f"{name}#{k}"
        acc = self._sites.get(key)
        if acc is None:
            acc = SiteAccumulator(key, activation, role, conv_like)
            self._sites[key] = acc
        if key not in self._site_order:
            self._site_order.append(key)
        return acc

    def _make_act_hook(self, name: str, act: str) -> Callable[..., None]:
        eps = self.thresholds.saturation_eps

        def body(module: nn.Module, inp: Any, out: Any) -> None:
            if isinstance(out, tuple) and out:
                out = out[0]  # nn.RNN/LSTM/GRU: (output, h_n)
            if isinstance(out, nn.utils.rnn.PackedSequence):
                out = out.data  # (total steps, hidden): the units are still the last dim
            if not torch.is_grad_enabled() or not isinstance(out, torch.Tensor):
                return
            if not out.is_floating_point() or self._unmeasurable(name, out):
                return
            if _recomputing(name, self._calls):
                return
            conv_like = self._has_conv1d and not isinstance(module, nn.RNNBase)
            acc = self._site(name, act, "output", conv_like)
            acc.add(out, eps)
            self._produced.add(out.data_ptr())
            if self._first_log is not None:
                self._first_log.append(("site", name))

        return self.session.guard(body, "activations")

    def _make_input_hook(self, name: str) -> Callable[..., None]:
        eps = self.thresholds.saturation_eps

        def body(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0]
            # the model's own input, transformed or not (x / x.sum(1), x.to(bf16)), depends
            # on no trainable parameter: never a site
            if not x.is_floating_point() or not x.requires_grad:
                return
            if self._unmeasurable(name, x) or _recomputing(name, self._calls):
                return
            if type(x.grad_fn).__name__ == "CheckpointFunctionBackward":
                return  # reentrant checkpointing's output: its activation is measured inside
            ptr = x.data_ptr()
            if ptr in self._produced or ptr in self._input_ptrs:
                return
            acc = self._site(name, "input", "input", is_conv_like(module))
            acc.add(x, eps)

        return self.session.guard(body, "activations")

    def _make_grad_hook(self, i: int) -> Callable[..., None]:
        def body(p: torch.Tensor) -> None:
            self._on_grad(i, p)
            if self._params.grad_scale is None and self.scaler is not None:
                scale = getattr(self.scaler, "_scale", None)
                enabled = getattr(self.scaler, "is_enabled", lambda: True)()
                if enabled and isinstance(scale, torch.Tensor):
                    self._params.grad_scale = scale.detach().clone()

        return self.session.guard(body, "gradients")

    def _make_stale_hook(self, p: torch.Tensor) -> Callable[..., None]:
        """Before the first gradient of a step accumulates, the buffer must be empty."""

        def body(grad: torch.Tensor) -> None:
            if self._backwards == 0 and p.grad is not None:
                self._batch.add_stale(local_shard(p.grad))
            self._backwards += 1

        return self.session.guard(body, "gradients")

    def _stale_hook_sharded(self, modules: dict[str, nn.Module], p: torch.Tensor) -> Any:
        """FSDP2 keeps a sharded parameter out of the autograd graph (the forward uses an
        all-gathered copy), so its own tensor hooks never fire. The gradient of its
        module's output arrives just before the parameter's own, and before FSDP writes
        the reduced shard: the stale-gradient check runs there."""
        owner = next(m for m in modules.values() if any(q is p for q in m.parameters(False)))
        check = self._make_stale_hook(p)

        def on_output(module: nn.Module, inp: Any, out: Any) -> None:
            out = out[0] if isinstance(out, tuple) and out else out
            if torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.requires_grad:
                out.register_hook(check)

        return owner.register_forward_hook(self.session.guard(on_output, "gradients"))

    def _make_order_hook(self, key: str) -> Callable[..., None]:
        def body(module: nn.Module, args: Any) -> None:
            order = self._layer_order
            if order is not None and key not in order:
                order.append(key)
            if self._first_log is not None:
                self._first_log.append(("layer", key))

        return self.session.guard(body)

    def _settle_output_sites(self) -> None:
        """From the first sampled forward's calls: the activation sites called after the
        last weight layer (an activation on the model's output)."""
        log_, self._first_log = self._first_log or [], None
        last = max((i for i, (kind, _) in enumerate(log_) if kind == "layer"), default=-1)
        outputs = sorted({name for kind, name in log_[last + 1 :] if kind == "site"})
        self.session.model_facts["output_sites"] = outputs

    def _unmeasurable(self, name: str, x: torch.Tensor) -> bool:
        """True (and the reason noted) for activations no statistic can be taken of."""
        why = None
        if x.layout is not torch.strided:
            why = "sparse activations"
        elif x.is_nested:
            why = "nested (jagged) tensors"
        elif torch._C._functorch.is_functorch_wrapped_tensor(x):
            why = "inside a torch.func transform"
        elif x.numel() == 0:
            return True  # an empty batch (an expert that got no token): nothing to count
        if why is not None:
            self._unmeasured.setdefault(name, why)
            return True
        return False

    def _stuck(self) -> None:
        """Many training forwards and no optimizer step: an AMP scaler that skips every
        step, or a loop without optimizer that never calls ``monitor.step()``. Close the
        window anyway, so a diverged run is reported while it runs and no buffer grows."""
        n, self._forwards = self._forwards, 0
        if self.optimizer is None and not self._warned_stuck:
            self._warned_stuck = True
            note = (
                f"{n} training forward passes and no monitor.step(): without an optimizer, "
                "call monitor.step() after each optimizer step"
            )
            self.session.notes.append(note)
            warnings.warn(f"gradvitals: {note}", UserWarning, stacklevel=4)
        if self._sampled_hooks:
            self._params.commit()
        self._pending_skipped += n
        self._close_window()

    def _on_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._sampled_hooks and not self.disabled:
            self.session.guard(self._params.snapshot_weights, "updates")()
            self.session.guard(self._check_step, "provenance")()

    def _check_step(self) -> None:
        """On a sampled step, before the optimizer applies it: if its loss or gradients
        are not finite, replay the step's forward now, while the weights are still those
        of the failing forward, and name the op that made the first NaN/Inf.

        One host sync per sampled step (free on CPU); a healthy run never replays.
        """
        if self._replayed or self._last_batch is None or not self._can_replay:
            return
        vals = [v.reshape(()).double() for v in self._params.grad_norms.values()]
        if self._step_loss is not None:
            vals.append(self._step_loss.reshape(()).double())
        if not vals or bool(
            torch.isfinite(torch.stack([v.to(self._params.device) for v in vals])).all()
        ):
            return
        from gradvitals.torch._provenance import replay

        self._replayed = True
        args, kwargs = self._last_batch
        prov = replay(self.model, args, kwargs)
        self._facts["provenance"] = (
            prov.to_dict()
            if prov is not None
            else {"kind": "forward_finite", "detail": "the forward pass stayed finite on replay"}
        )
        self._facts["provenance_step"] = self.step_count

    def _on_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._end_step()

    # -- public API ----------------------------------------------------------------------
    def step(self) -> None:
        """Mark the end of an optimizer step. Only needed when no optimizer was given."""
        if self.optimizer is not None:
            raise UsageError(
                "monitor.step() is for monitors without an optimizer; this one counts "
                "steps through the optimizer's step hooks already. Remove the call."
            )
        self._end_step()

    def begin_step(self, *inputs: Any) -> None:
        """Mark the start of a forward pass that does not call the watched module itself.

        For loops that call submodules directly (Lightning's ``training_step``): it does
        what the watched module's own forward pre-hook does. ``inputs`` (the batch's
        tensors) are never taken for activation sites.
        """
        if self._sampled_hooks and not self.disabled:
            self._on_root_forward(self.model, inputs, {})

    def observe_loss(self, loss: Any) -> None:
        """Record the training loss of this step (a tensor; never forces a host sync).

        Call it before or after ``optimizer.step()``: a loss observed after the step
        belongs to the step just taken when that step has none yet.
        """
        if not isinstance(loss, (torch.Tensor, int, float)) or isinstance(loss, bool):
            raise UsageError(
                f"observe_loss() takes the loss tensor (or a number), got {type(loss).__name__} "
                f"{loss!r}: pass the value your loss function returned, e.g. "
                "monitor.observe_loss(loss)"
            )
        if self.disabled or self.closed or "loss" in self.session.off:
            return
        if self._sampled_hooks and isinstance(loss, torch.Tensor):
            self.session.guard(self._read_loss_graph, "loss")(loss)
        try:
            if isinstance(loss, torch.Tensor):
                # a 0-d float loss (the common case) is kept as is: the window's losses
                # are stacked and made float64 once, when it closes
                value = loss.detach()
                if value.dim() or not value.is_floating_point():
                    if value.is_complex():
                        value = value.abs()
                    if value.numel() != 1:
                        value = value.float().mean()
                    value = value.reshape(()).to(torch.float64)
            else:
                value = torch.tensor(float(loss), dtype=torch.float64)
            target = self.step_count
            if self._last_loss_step < self.step_count - 1:
                target = self.step_count - 1  # observed after its optimizer step
            self._last_loss_step = target
            if target < self._rolled_back_at:
                return  # from before a repair's roll-back
            pending = self._pending
            if pending is not None and target <= pending.end:
                pending.losses.append(value)
                pending.loss_steps.append(target)
                self._resolve()
                return
            if pending is not None:
                self._resolve()
            self._losses.append(value)
            self._loss_steps.append(target)
        except Exception as e:
            self.session.disable("loss", e)

    def _read_loss_graph(self, loss: torch.Tensor) -> None:
        """On sampled steps: what the loss did to the output, and whether its target is
        finite (readable only before ``backward()`` frees the saved tensors)."""
        fn = loss.grad_fn
        if fn is None:
            return
        facts = loss_facts(fn)
        self._facts.update(facts)
        if self._pending is not None:  # observed after the step that closed its window
            self._pending.facts.update(facts)
        self._batch.add_targets(saved_targets(fn))
        if self._last_loss_step < self.step_count:  # observed before this step's optimizer step
            self._step_loss = loss.detach()

    def flush(self) -> list[Finding]:
        """Close the pending window now and run the detectors; returns new findings."""
        if self.disabled:
            return []
        try:
            new = self._resolve()
            return new + self._close_window()
        except Exception as e:
            self.session.fail(e)
            return []

    def close(self) -> None:
        """Flush, then remove every hook gradvitals installed and close the outputs."""
        if self.closed:
            return
        self.flush()
        self._remove()
        for handle in self._permanent_hooks:
            handle.remove()
        self._permanent_hooks = []
        self.session.close()
        self.closed = True

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        """Detector state, findings and the step count, for a resumed run."""
        if self._pending is not None and not self.disabled:
            self._resolve()
        return self.session.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the next window opens at the saved step."""
        self.session.load_state_dict(state)
        self._start_window()

    # -- window bookkeeping --------------------------------------------------------------
    def _end_step(self) -> None:
        if self.disabled or self.closed:
            return
        try:
            if self._pending is not None:
                self._resolve()
            t = self.step_count
            if self._sampled_hooks:
                self._params.commit()
            self._forwards_per_step = max(self._forwards_per_step, self._forwards)
            self._forwards = 0
            self._backwards = 0
            self._step_loss = None
            self.session.step_count = t + 1
            if t >= self.session.schedule.last:
                self._freeze(t)
                # Resolve now when the window's last loss is in (loss observed before the
                # step) or a repair may act (it must act between steps); otherwise wait
                # for observe_loss() of this step, at most until the next step ends.
                if self._last_loss_step >= t or self.session.repair is not None:
                    self._resolve()
            if self.session.schedule.is_sampled(self.step_count):
                self._install()
            else:
                self._remove()
        except Exception as e:
            self.session.fail(e)

    def _start_window(self) -> None:
        for acc in self._sites.values():
            acc.reset()
        self._params.reset()
        self._losses, self._loss_steps = [], []

    def _freeze(self, end: int) -> None:
        """Set the window ``[start, end]`` aside and start the next with fresh accumulators."""
        sched = self.session.schedule
        self._pending = _Frozen(
            index=sched.index,
            start=sched.start,
            end=end,
            sites=self._sites,
            site_order=list(self._site_order),
            params=self._params,
            losses=self._losses,
            loss_steps=self._loss_steps,
            batch=self._batch,
            skipped=self._pending_skipped,
            facts=self._facts,
        )
        self._pending_skipped = 0
        self._batch = self._batch.fresh()
        self._facts = {}
        self._sites = {k: a.fresh() for k, a in self._sites.items()}
        self._params = self._params.fresh()
        self._losses, self._loss_steps = [], []
        sched.advance(end)

    def _resolve(self) -> list[Finding]:
        """Collect the set-aside window (one host copy) and hand it to the session."""
        frozen, self._pending = self._pending, None
        if frozen is None:
            return []
        repairs = len(self.session.repairs)
        found = self.session.submit(self._collect(frozen))
        if len(self.session.repairs) > repairs:
            # the model was rolled back: a loss of a step before now, observed late,
            # describes a state that no longer exists
            self._rolled_back_at = self.step_count
        return found

    def _close_window(self) -> list[Finding]:
        """Close the open window now (``flush``): freeze it and resolve it."""
        end = self.step_count - 1
        start = self.session.schedule.start
        if (
            end < start
            and not self._loss_steps
            and not any(a.n_examples for a in self._sites.values())
        ):
            return []
        self._freeze(max(end, start))
        return self._resolve()

    def _collect(self, w: _Frozen) -> WindowRecord:
        """One host transfer of every on-device statistic of the window.

        The statistics are packed into one flat ``float64`` tensor in
        :class:`~gradvitals.stats.Layout` order, so a distributed run combines them
        with one collective (see ``_dist.py``).
        """
        p = w.params
        device = p.device
        live = [k for k in w.site_order if k in w.sites and w.sites[k].live]
        layout = Layout(
            sites=tuple((k, w.sites[k].units) for k in live), n_layers=len(p.table.names)
        )
        pieces = [w.sites[k].pack(device) for k in live]
        pieces.append(p.pack())
        loss_vals = torch.stack([v.to(device) for v in w.losses]).double() if w.losses else None
        pieces.append(_pack_loss(loss_vals, device))
        pieces.append(w.batch.pack(device))
        self._packing_layout = ",".join(live)
        flat = torch.cat(pieces)
        if self._reduce is not None:
            flat = self._reduce(flat, layout)
        host = flat.cpu().numpy()
        names = p.table.names
        order = self._layer_order or []
        ranked = sorted(
            range(len(names)),
            key=lambda i: order.index(names[i]) if names[i] in order else len(order) + i,
        )
        record = assemble_record(
            index=w.index,
            start=w.start,
            end=w.end,
            layout=layout,
            host=host,
            sites=[SiteInfo(k, w.sites[k].activation, w.sites[k].role) for k in live],
            layers=[
                LayerInfo(n, kind, numel)
                for n, kind, numel in zip(names, p.table.kinds, p.table.numel, strict=True)
            ],
            has_grad=p.has_grad,
            n_samples=p.n_samples,
            has_update=p.has_update,
            layer_order=ranked,
            loss_steps=w.loss_steps,
            skipped_steps=w.skipped,
            batch_steps=w.batch.steps,
        )
        record.facts = dict(w.facts)
        if self._first_log:
            self._settle_output_sites()
        mf = self.session.model_facts
        outputs = {n: mf["activations"][n] for n in mf.get("output_sites", ())}
        if outputs:
            record.facts["output_activations"] = outputs
        clean_loss = record.loss is None or record.loss.n_nonfinite == 0
        if clean_loss and not any(lay.n_grad_nonfinite for lay in record.layers.values()):
            self._replayed = False  # a clean window ends the episode: replay again later
        self._update_coverage(record)
        return record

    def _update_coverage(self, record: WindowRecord) -> None:
        """What has been measured so far, and why the rest was not (for the verdict)."""
        for key, site in record.sites.items():
            name = key.split("#")[0]
            if site.role == "input":
                if site.relu_like:
                    self._relu_inputs.add(name)
            elif site.n_examples:
                self._measured_sites.add(name)
        self._measured_layers |= {n for n, lay in record.layers.items() if lay.has_grad}
        acts = set(self._acts)
        measured = (self._measured_sites & acts) | self._relu_inputs
        missing: dict[str, str] = {}
        if self.compiled:
            missing["activation sites"] = (
                "torch.compile'd model: forward hooks cannot run without recompiling"
            )
        else:
            for name in sorted(acts - measured):
                missing[name] = self._unmeasured.get(name, "not called in a training forward")
        modules = dict(self.model.named_modules())
        for name in sorted(self._measured_sites & acts):
            if isinstance(modules.get(name), (nn.LSTM, nn.GRU)):
                missing[f"{name} gates"] = "inside the fused kernel; the hidden state is measured"
        names = self._table.names
        for name in [n for n in names if n not in self._measured_layers]:
            missing[name] = "no gradient reached it through autograd"
        self.session.coverage = Coverage(
            sites_total=len(acts) + len(self._relu_inputs),
            sites_measured=measured,
            not_measured=missing,
            layers_total=len(names),
            layers_measured=len(set(names) & self._measured_layers),
        )


def _model_facts(model: nn.Module, acts: dict[str, str]) -> dict[str, Any]:
    """What remedies must know about the architecture: normalization layers, recurrent
    modules, and the activation sites after the last affine layer (output activations)."""
    mods = list(model.named_modules())
    return {
        "framework": "torch",
        "has_normalization": any(is_normalization(m) for _, m in mods),
        "recurrent": sorted(n for n, m in mods if is_recurrent(m) and n),
        "output_sites": [],  # known after the first sampled forward (the call order)
        "activations": dict(acts),
    }


def _pack_loss(v: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The loss segment of the packed window, in :data:`LOSS_FIELDS` order, on the device:
    the sum, count and non-finite count, the first non-finite index, minus the largest
    and the smallest finite loss."""
    inf = float("inf")
    f64 = torch.float64
    if v is None:
        values = dict.fromkeys(
            (f.name for f in LOSS_FIELDS), torch.zeros((), dtype=f64, device=device)
        )
        for k in ("first_nonfinite_index", "loss_neg_max", "loss_min"):
            values[k] = torch.full((), inf, dtype=f64, device=device)
    else:
        ok = torch.isfinite(v)
        idx = torch.arange(v.numel(), dtype=f64, device=v.device)
        values = {
            "loss_sum": torch.where(ok, v, 0.0).sum(),
            "loss_count": v.new_full((), float(v.numel())),
            "loss_nonfinite": (~ok).sum().to(f64),
            "first_nonfinite_index": torch.where(ok, inf, idx).min(),
            "loss_neg_max": torch.where(ok, -v, inf).min(),
            "loss_min": torch.where(ok, v, inf).min(),
        }
    return torch.stack([values[f.name].to(device) for f in LOSS_FIELDS])


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    every: int = 20,
    samples: int = 2,
    warmup: bool = True,
    log_dir: str | None = None,
    thresholds: Thresholds | dict[str, Any] | None = None,
    scaler: Any = None,
    lint: bool = True,
    console: bool = True,
    history_limit: int | None = 10_000,
    repair: bool = False,
    policy: RepairPolicy | dict[str, Any] | None = None,
    distributed: bool | None = None,
    sinks: Sequence[Any] = (),
    on_finding: Callable[[Finding], Any] | None = None,
    on_window: Callable[[WindowRecord, list[Finding]], Any] | None = None,
    stop_on: Iterable[Any] | str | None = None,
) -> Monitor:
    """Attach gradvitals to a PyTorch model (and optimizer) in one line.

    Args:
        model: the ``nn.Module`` being trained (a ``torch.compile``d one too).
        optimizer: its optimizer. Steps are counted through its step hooks; without
            it, call ``monitor.step()`` after each optimizer step.
        every: steps per window; statistics are copied to the host and the detectors
            run once per window (default 20; the first windows are 1, 2, 4... steps).
        samples: steps per window on which activations and gradients are measured
            (default 2, the last steps of each window).
        warmup: short first windows, so early failures are seen early (default True).
        log_dir: write TensorBoard vital signs there (needs the ``tensorboard`` package).
        thresholds: a :class:`~gradvitals.Thresholds` or a dict of overrides by name.
        scaler: an AMP ``GradScaler``: gradient norms are unscaled by it, and steps it
            skips for inf gradients are ignored.
        lint: run the pre-flight lint at attach (default True).
        console: log findings on the ``gradvitals`` logger (default True).
        history_limit: window records kept in ``monitor.history`` (None: all).
        repair: repair in flight: roll back to the last healthy state and apply the
            next action of the policy (see ``docs/repair.md``).
        policy: a :class:`~gradvitals.RepairPolicy` (or a dict of its fields);
            implies ``repair=True``.
        distributed: None (default): under ``torch.distributed`` with several ranks,
            combine each window across ranks and log from rank 0 only; False: each
            rank on its own; True: require it (see ``docs/scale-out.md``).
        sinks: more outputs (``gradvitals.report`` has TensorBoard, W&B, MLflow and
            logging sinks); each gets every window, finding and repair (rank 0 only).
        on_finding: called with each new :class:`~gradvitals.Finding`.
        on_window: called with each closed window's record and its new findings.
        stop_on: failure modes (or ``"any"``) that end the run: ``monitor.should_stop``
            turns True at the window that finds one (with repair on: once repair gives
            up on it).

    Returns:
        The :class:`Monitor`. Use it as a context manager or call ``close()``.

    Example:
        >>> import torch, gradvitals
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> with gradvitals.watch(model, opt, every=5) as monitor:
        ...     for _ in range(10):
        ...         loss = model(torch.randn(32, 4)).pow(2).mean()
        ...         opt.zero_grad(); loss.backward(); opt.step()
        ...         monitor.observe_loss(loss)
        >>> monitor.findings
        []
        >>> sorted(monitor.scalars())[:2]
        ['dead_fraction/1', 'grad_norm/0']
    """
    return Monitor(
        model,
        optimizer,
        every=every,
        samples=samples,
        warmup=warmup,
        log_dir=log_dir,
        thresholds=thresholds,
        scaler=scaler,
        lint=lint,
        console=console,
        history_limit=history_limit,
        repair=repair,
        policy=policy,
        distributed=distributed,
        sinks=sinks,
        on_finding=on_finding,
        on_window=on_window,
        stop_on=stop_on,
    )
