"""The PyTorch training monitor: ``gradvitals.watch(model, optimizer)``.

Wiring only: hooks collect on-device statistics on *sampled* steps, the monitor copies
them to the host once per window, and the framework-free detectors decide. No
thresholds or maths live here.

Sampling schedule (bounded detection latency, near-zero cost):

- windows of ``every`` optimizer steps; after a short warm-up of windows of 1, 2, 4...
  steps so that failures in the first steps are seen early;
- statistics are collected on the last ``samples`` steps of each window. Hooks are
  *installed* only for those steps and removed afterwards: an unsampled step runs no
  gradvitals Python code except the optimizer-step counter;
- the loss (when observed) is copied into an on-device buffer every step: one copy,
  no sync;
- one host transfer per window (``.cpu()`` of one concatenated tensor).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradvitals.detectors import DetectorSuite, Thresholds
from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.stats import LayerStats, LossStats, SiteStats, WindowRecord, history_scalars
from gradvitals.torch._params import LayerTable, ParamAccumulator
from gradvitals.torch._sites import SiteAccumulator, plan_sites

__all__ = ["Monitor", "watch"]

log = logging.getLogger("gradvitals")

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Reductions of packed statistics across ranks (see ``gradvitals.torch._dist``).
SUM, MAX, MIN, REPLICATED = 0, 1, 2, 3


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


class Monitor:
    """Watches one model's training. Create it with :func:`watch`.

    Attributes:
        findings: every :class:`~gradvitals.Finding`, oldest first.
        history: one :class:`~gradvitals.stats.WindowRecord` per closed window.
        preflight: the findings of the pre-flight lint run at attach (if enabled).
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
        policy: Any = None,
        distributed: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise UsageError(
                f"watch() expects a torch.nn.Module, got {type(model).__name__}. "
                "Pass the model itself: gradvitals.watch(model, optimizer)."
            )
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UsageError(f"every must be an integer >= 1 (steps per window), got {every!r}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise UsageError(
                f"samples must be an integer >= 1 (sampled steps per window), got {samples!r}"
            )
        if isinstance(thresholds, Thresholds):
            self.thresholds = thresholds
        elif thresholds is None:
            self.thresholds = Thresholds()
        elif isinstance(thresholds, dict):
            self.thresholds = Thresholds.from_kwargs(**thresholds)
        else:
            raise UsageError(
                f"thresholds must be a gradvitals.Thresholds or a dict of names, got {type(thresholds).__name__}"
            )
        self.model, self.compiled = _unwrap(model)
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
        self.every = every
        self.samples = samples
        self.warmup = warmup
        self.scaler = scaler
        self.console = console
        self.history_limit = history_limit
        self.suite = DetectorSuite(self.thresholds)
        self.findings: list[Finding] = []
        self.history: list[WindowRecord] = []
        self.preflight: list[Finding] = []
        self.repairs: list[dict[str, Any]] = []
        self.step_count = 0
        self.closed = False
        self.disabled = False
        self._window_index = 0
        self._window_start = 0
        self._window_len = self._length_of(0)
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
        self._pending: _Frozen | None = None  # a full window waiting for its last loss
        #: where a parameter's gradient goes; distributed runs defer it past DDP's all-reduce
        self._on_grad: Callable[[int, torch.Tensor], None] = lambda i, p: self._params.on_grad(i, p)
        self._packing_layout = ""  # names of the sites packed by the last _collect
        self._sink: Any = None
        self._repairer: Any = None
        #: ``(flat, [(op, length), ...]) -> flat``: combines packed statistics across ranks
        self._reduce: Callable[[torch.Tensor, list[tuple[int, int]]], torch.Tensor] | None = None
        self.is_main_process = True
        self._has_conv1d = any(isinstance(m, nn.Conv1d) for m in self.model.modules())
        self._acts, self._input_sites = plan_sites(self.model)
        self._table = LayerTable.from_model(self.model)
        self._params = ParamAccumulator(self._table)
        if scaler is not None:
            self._params.norm_dtype = torch.float64
        if distributed is not False:  # None: combine across ranks when there are several
            from gradvitals.torch._dist import attach

            attach(self, required=distributed is True)
        if log_dir is not None and self.is_main_process:
            from gradvitals.report import TensorBoardSink

            self._sink = TensorBoardSink(log_dir, run_info={"adapter": "torch"})
        if optimizer is not None:
            self._permanent_hooks.append(optimizer.register_step_pre_hook(self._on_pre_step))
            self._permanent_hooks.append(optimizer.register_step_post_hook(self._on_post_step))
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
        if repair or policy is not None:
            from gradvitals.torch._repair import Repairer

            if optimizer is None:
                raise UsageError(
                    "repair=True needs the optimizer: gradvitals.watch(model, optimizer, repair=True)"
                )
            self._repairer = Repairer(self, policy)
        if self._is_sampled(0):
            self._install()

    # -- schedule ------------------------------------------------------------------------
    def _length_of(self, index: int) -> int:
        if self.warmup and index < 16:
            return min(self.every, 2**index)
        return self.every

    def _is_sampled(self, step: int) -> bool:
        last = self._window_start + self._window_len - 1
        return step > last - min(self.samples, self._window_len)

    # -- hooks ---------------------------------------------------------------------------
    def _install(self) -> None:
        if self._sampled_hooks or self.disabled:
            return
        m = self.model
        h = self._sampled_hooks
        if self.compiled:
            # Forward hooks added after torch.compile never fire and changing them
            # recompiles; parameter hooks run outside the graph and keep working.
            for i, p in enumerate(self._table.params):
                h.append(p.register_post_accumulate_grad_hook(self._make_grad_hook(i)))
            return
        h.append(m.register_forward_pre_hook(self._on_root_forward, with_kwargs=True))
        modules = dict(m.named_modules())
        for name, act in self._acts.items():
            h.append(modules[name].register_forward_hook(self._make_act_hook(name, act)))
        for name in self._input_sites:
            h.append(modules[name].register_forward_pre_hook(self._make_input_hook(name)))
        for i, p in enumerate(self._table.params):
            h.append(p.register_post_accumulate_grad_hook(self._make_grad_hook(i)))
        if self._layer_order is None:
            order: list[str] = []
            self._layer_order = order
            owners = set(self._table.names)
            for name, mod in modules.items():
                key = name or type(mod).__name__
                if key in owners:
                    h.append(mod.register_forward_pre_hook(self._make_order_hook(key)))

    def _remove(self) -> None:
        for handle in self._sampled_hooks:
            handle.remove()
        self._sampled_hooks = []

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        def wrapped(*args: Any, **kwargs: Any) -> None:
            if self.disabled:
                return None
            try:
                fn(*args, **kwargs)
            except Exception as e:  # gradvitals must never break training
                self._fail(e)
            return None

        return wrapped

    def _fail(self, e: BaseException) -> None:
        self.disabled = True
        self._remove()
        warnings.warn(
            f"gradvitals stopped watching after an internal error ({type(e).__name__}: {e}); "
            "training continues unaffected. Please report this with the model's structure.",
            RuntimeWarning,
            stacklevel=3,
        )

    def _on_root_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        def body() -> None:
            self._calls = {}
            self._produced = set()
            ptrs = {a.data_ptr() for a in args if isinstance(a, torch.Tensor)}
            ptrs |= {v.data_ptr() for v in kwargs.values() if isinstance(v, torch.Tensor)}
            self._input_ptrs = ptrs
            if self.optimizer is None and torch.is_grad_enabled() and self._params.before is None:
                self._params.snapshot_weights()

        self._guard(body)()

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
            if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
                out = out[0]  # nn.RNN: (output, h_n)
            if not torch.is_grad_enabled() or not isinstance(out, torch.Tensor):
                return
            if not out.is_floating_point():
                return
            conv_like = self._has_conv1d and not isinstance(module, nn.RNNBase)
            acc = self._site(name, act, "output", conv_like)
            acc.add(out, eps)
            self._produced.add(out.data_ptr())

        return self._guard(body)

    def _make_input_hook(self, name: str) -> Callable[..., None]:
        eps = self.thresholds.saturation_eps

        def body(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0]
            if not x.is_floating_point():
                return
            ptr = x.data_ptr()
            if ptr in self._produced or ptr in self._input_ptrs:
                return
            acc = self._site(name, "input", "input", isinstance(module, _CONV))
            acc.add(x, eps)

        return self._guard(body)

    def _make_grad_hook(self, i: int) -> Callable[..., None]:
        def body(p: torch.Tensor) -> None:
            self._on_grad(i, p)
            if self._params.grad_scale is None and self.scaler is not None:
                scale = getattr(self.scaler, "_scale", None)
                enabled = getattr(self.scaler, "is_enabled", lambda: True)()
                if enabled and isinstance(scale, torch.Tensor):
                    self._params.grad_scale = scale.detach().clone()

        return self._guard(body)

    def _make_order_hook(self, key: str) -> Callable[..., None]:
        def body(module: nn.Module, args: Any) -> None:
            order = self._layer_order
            if order is not None and key not in order:
                order.append(key)

        return self._guard(body)

    def _on_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._sampled_hooks and not self.disabled:
            self._guard(self._params.snapshot_weights)()

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
        if self.disabled or self.closed:
            return
        try:
            if isinstance(loss, torch.Tensor):
                value = loss.detach()
                if value.numel() != 1:
                    value = value.float().mean()
                value = value.reshape(())
            else:
                value = torch.tensor(float(loss))
            target = self.step_count
            if self._last_loss_step < self.step_count - 1:
                target = self.step_count - 1  # observed after its optimizer step
            self._last_loss_step = target
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
            self._fail(e)

    def flush(self) -> list[Finding]:
        """Close the pending window now and run the detectors; returns new findings."""
        if self.disabled:
            return []
        try:
            new = self._resolve()
            return new + self._close_window(partial=True)
        except Exception as e:
            self._fail(e)
            return []

    def close(self) -> None:
        """Flush, then remove every hook gradvitals installed."""
        if self.closed:
            return
        self.flush()
        self._remove()
        for handle in self._permanent_hooks:
            handle.remove()
        self._permanent_hooks = []
        if self._repairer is not None:
            self._repairer.close()
        if self._sink is not None:
            try:
                self._sink.write_final(self.findings)
                self._sink.close()
            except Exception as e:  # pragma: no cover
                warnings.warn(
                    f"gradvitals could not finish the TensorBoard log: {e}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self.closed = True

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def healthy(self) -> bool:
        return not self.findings

    def report(self) -> str:
        """A text summary of the run: healthy or not, each finding and what to do."""
        from gradvitals.report._console import summary_text

        return summary_text(self.findings, len(self.history), self.repairs)

    def scalars(self) -> dict[str, list[tuple[int, float]]]:
        """Statistics history as ``tag -> [(step, value), ...]`` (the TensorBoard tags)."""
        return history_scalars(self.history)

    def state_dict(self) -> dict[str, Any]:
        """Detector state, findings and the step count, for a resumed run."""
        if self._pending is not None and not self.disabled:
            self._resolve()
        return {
            "version": 1,
            "step_count": self.step_count,
            "window_index": self._window_index,
            "detectors": self.suite.state_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "repairs": list(self.repairs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != 1:
            raise UsageError("not a gradvitals monitor state_dict (expected version 1)")
        self.suite.load_state_dict(state["detectors"])
        self.findings = [Finding.from_dict(d) for d in state.get("findings", [])]
        self.repairs = list(state.get("repairs", []))
        self.step_count = int(state["step_count"])
        self._window_index = int(state.get("window_index", 0))
        self._start_window(self.step_count)

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
            self.step_count = t + 1
            if t >= self._window_start + self._window_len - 1:
                self._freeze(t)
                # Resolve now when the window's last loss is in (loss observed before the
                # step) or a repair may act (it must act between steps); otherwise wait
                # for observe_loss() of this step, at most until the next step ends.
                if self._last_loss_step >= t or self._repairer is not None:
                    self._resolve()
            if self._is_sampled(self.step_count):
                self._install()
            else:
                self._remove()
        except Exception as e:
            self._fail(e)

    def _start_window(self, start: int) -> None:
        self._window_start = start
        self._window_len = self._length_of(self._window_index)
        for acc in self._sites.values():
            acc.reset()
        self._params.reset()
        self._losses, self._loss_steps = [], []

    def _freeze(self, end: int) -> None:
        """Set the window ``[start, end]`` aside and start the next with fresh accumulators."""
        self._pending = _Frozen(
            index=self._window_index,
            start=self._window_start,
            end=end,
            sites=self._sites,
            site_order=list(self._site_order),
            params=self._params,
            losses=self._losses,
            loss_steps=self._loss_steps,
        )
        self._sites = {k: a.fresh() for k, a in self._sites.items()}
        self._params = self._params.fresh()
        self._losses, self._loss_steps = [], []
        self._window_index += 1
        self._window_start = end + 1
        self._window_len = self._length_of(self._window_index)

    def _resolve(self) -> list[Finding]:
        """Collect the set-aside window (one host copy) and run the detectors on it."""
        frozen, self._pending = self._pending, None
        if frozen is None:
            return []
        record = self._collect(frozen)
        return self._decide(record)

    def _replan(self) -> None:
        """Re-plan sites and layers after a repair changed the model's structure."""
        self._remove()
        self._has_conv1d = any(isinstance(m, nn.Conv1d) for m in self.model.modules())
        self._acts, self._input_sites = plan_sites(self.model)
        self._table = LayerTable.from_model(self.model)
        dtype = self._params.norm_dtype
        self._params = ParamAccumulator(self._table)
        self._params.norm_dtype = dtype
        self._sites, self._site_order, self._layer_order = {}, [], None

    def _close_window(self, partial: bool) -> list[Finding]:
        """Close the open window now (``flush``): freeze it and resolve it."""
        end = self.step_count - 1
        if (
            end < self._window_start
            and not self._loss_steps
            and not any(a.n_examples for a in self._sites.values())
        ):
            return []
        self._freeze(max(end, self._window_start))
        return self._resolve()

    def _decide(self, record: WindowRecord) -> list[Finding]:
        new = self.suite.update(record)
        for f in new:
            site = f.layer
            if site and "#" in site:
                f.evidence.setdefault("site", site)
                f.layer = site.split("#")[0]
        self.history.append(record)
        if self.history_limit is not None and len(self.history) > self.history_limit:
            del self.history[0]
        self.findings.extend(new)
        for f in new:
            if self.console and self.is_main_process:
                log.warning(_console_line(f))
        if self._sink is not None and self.is_main_process:
            self._sink.write_window(record, new)
        if self._repairer is not None and new:
            self._repairer.on_findings(new, record)
        elif self._repairer is not None:
            self._repairer.on_healthy(record)
        return new

    def _collect(self, w: _Frozen) -> WindowRecord:
        """One host transfer of every on-device statistic of the window.

        The statistics are packed into one flat tensor with a parallel list of
        reductions (:data:`SUM`, :data:`MAX`, :data:`MIN`, :data:`REPLICATED`), so a
        distributed run combines them with one collective (see ``_dist.py``).
        """
        pieces: list[torch.Tensor] = []
        ops: list[tuple[int, int]] = []  # (reduction, length) per piece
        device = self._params.device

        def add(x: torch.Tensor, op: int) -> None:
            x = x.reshape(-1).to(device=device, dtype=torch.float64)
            pieces.append(x)
            ops.append((op, x.numel()))

        live = [k for k in w.site_order if k in w.sites and w.sites[k].live]
        for k in live:
            a = w.sites[k]
            positive, sums, mn = a.packed(device)
            add(positive, MAX)
            add(sums, SUM)
            add(mn, MIN)
            # host counts travel as fills, not host->device copies (which would sync)
            counts = [
                torch.full((), float(v), dtype=torch.float64, device=device)
                for v in (a.n_examples, a.n_elements)
            ]
            add(torch.stack(counts), SUM)
        p = w.params
        for x in (p.grad_sum, p.update_sum, p.weight_last):
            add(x, REPLICATED)
        add(p.nonfinite, SUM)
        loss_vals = torch.stack([v.to(device) for v in w.losses]).double() if w.losses else None
        add(self._loss_summary(loss_vals, device), SUM)
        add(self._loss_extremes(loss_vals, device), MIN)
        self._packing_layout = ",".join(live)
        flat = torch.cat(pieces)
        if self._reduce is not None:
            flat = self._reduce(flat, ops)
        host = flat.cpu().numpy()

        pos = 0
        sites: dict[str, SiteStats] = {}
        for k in live:
            a = w.sites[k]
            u = a.units
            mask = host[pos : pos + u] > 0.5
            n_zero, n_sat, n_nf, mn, n_ex, n_el = host[pos + u : pos + u + 6]
            pos += u + 6
            sites[k] = SiteStats(
                name=k,
                activation=a.activation,
                units=u,
                n_examples=int(n_ex),
                n_elements=int(n_el),
                n_zero=int(n_zero),
                n_saturated=int(n_sat),
                n_nonfinite=int(n_nf),
                min_value=float(mn),
                ever_positive=mask,
                role=a.role,
            )
        n = len(self._table.names)
        grad_sum, upd_sum, w_last, nonfinite = (
            host[pos + i * n : pos + (i + 1) * n] for i in range(4)
        )
        pos += 4 * n
        order = self._layer_order or []
        names = sorted(
            range(n),
            key=lambda i: (
                order.index(self._table.names[i])
                if self._table.names[i] in order
                else len(order) + i
            ),
        )
        layers: dict[str, LayerStats] = {}
        s = max(p.n_samples, 1)
        for i in names:
            has = p.has_grad[i]
            layers[self._table.names[i]] = LayerStats(
                name=self._table.names[i],
                grad_norm=float(grad_sum[i] / s) if has else float("nan"),
                weight_norm=float(w_last[i]) if p.n_samples else float("nan"),
                update_norm=float(upd_sum[i] / s) if p.has_update else float("nan"),
                numel=self._table.numel[i],
                n_grad_nonfinite=int(nonfinite[i]),
                n_samples=p.n_samples,
                has_grad=has,
                kind=self._table.kinds[i],
            )
        loss_sum, loss_count, loss_nf = host[pos : pos + 3]
        first_bad, neg_max, loss_min = host[pos + 3 : pos + 6]
        loss = None
        if loss_count:
            first = None
            if loss_nf and np.isfinite(first_bad):
                first = w.start + int(first_bad)
                if int(first_bad) < len(w.loss_steps):
                    first = int(w.loss_steps[int(first_bad)])
            loss = LossStats(
                sum=float(loss_sum),
                count=int(loss_count),
                n_nonfinite=int(loss_nf),
                first_nonfinite_step=first,
                min=float(loss_min) if np.isfinite(loss_min) else math.nan,
                max=float(-neg_max) if np.isfinite(neg_max) else math.nan,
            )
        site_rank = {k: i for i, k in enumerate(w.site_order)}
        sites = dict(sorted(sites.items(), key=lambda kv: site_rank[kv[0]]))
        return WindowRecord(
            index=w.index,
            step_start=w.start,
            step_end=w.end,
            sites=sites,
            layers=layers,
            loss=loss,
        )

    @staticmethod
    def _loss_summary(v: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """[sum of finite losses, count, non-finite count] on the device."""
        if v is None:
            return torch.zeros(3, dtype=torch.float64, device=device)
        ok = torch.isfinite(v)
        return torch.stack(
            [torch.where(ok, v, 0.0).sum(), v.new_full((), float(v.numel())), (~ok).sum().double()]
        )

    @staticmethod
    def _loss_extremes(v: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """[first non-finite index, -max, min] of the finite losses (reduced by min)."""
        inf = float("inf")
        if v is None:
            return torch.full((3,), inf, dtype=torch.float64, device=device)
        ok = torch.isfinite(v)
        idx = torch.arange(v.numel(), dtype=torch.float64, device=v.device)
        first_bad = torch.where(ok, inf, idx).min()
        return torch.stack(
            [first_bad, torch.where(ok, -v, inf).min(), torch.where(ok, v, inf).min()]
        )

    def _run_lint(self) -> None:
        try:
            from gradvitals.torch._lint import lint
        except ImportError:  # pragma: no cover
            return
        try:
            self.preflight = lint(self.model)
        except Exception as e:  # lint must never stop training
            log.debug("gradvitals lint skipped: %s", e)
            return
        for f in self.preflight:
            if self.console and self.is_main_process:
                log.warning(_console_line(f))


def _console_line(f: Finding) -> str:
    try:
        from gradvitals.report._console import format_finding

        return format_finding(f)
    except ImportError:  # pragma: no cover
        return str(f)


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    every: int = 20,
    samples: int = 2,
    log_dir: str | None = None,
    thresholds: Thresholds | dict[str, Any] | None = None,
    **kwargs: Any,
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
        log_dir: write TensorBoard vital signs there (needs the ``tensorboard`` package).
        thresholds: a :class:`~gradvitals.Thresholds` or a dict of overrides by name.
        **kwargs: ``scaler`` (an AMP ``GradScaler``: gradients are unscaled by it),
            ``lint`` (run the pre-flight lint, default True), ``console`` (log findings,
            default True), ``warmup``, ``history_limit``, ``repair``, ``policy``,
            ``distributed`` (None: under ``torch.distributed`` with several ranks,
            combine each window across ranks and log from rank 0 only; False: each
            rank on its own; True: require it. See ``docs/scale-out.md``).

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
        log_dir=log_dir,
        thresholds=thresholds,
        **kwargs,
    )
