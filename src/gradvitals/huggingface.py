"""Hugging Face ``Trainer``: ``Trainer(..., callbacks=[VitalsCallback()])``.

Wiring only; the :class:`~gradvitals.torch.Monitor` does the work. Where it hooks in:

- ``on_train_begin``: watch the model with ``optimizer=None`` (the Trainer's optimizer
  is Accelerate's wrapper; steps are counted here instead). Under fp16 the wrapper's
  ``GradScaler`` is handed to the monitor, which divides gradient norms by its scale:
  norms, findings and a suggested clip norm are those of the true gradients;
- the loss of **every** step, on the device, with no host sync: a forward hook on the
  model keeps ``outputs["loss"]`` of each training micro-batch, and ``on_step_end``
  hands the step's loss to the monitor: the mean over micro-batches, or their sum
  when the model normalised each one by the whole step (``num_items_in_batch``).
  A model whose forward returns no loss (a custom ``compute_loss``, label
  smoothing) falls back to the loss of ``on_log``, every ``logging_steps``;
- gradients are read by per-parameter hooks as soon as they are complete, i.e. after
  the last micro-batch's backward and **before** ``max_grad_norm`` clipping. On a
  sampled step the weights are copied at the step's first forward, which makes the
  update ratio that of the whole step;
- ``on_step_end`` (once per optimizer step, after ``gradient_accumulation_steps``
  micro-batches) closes the step; at the last step it also closes the last, partial
  window, while the ``report_to`` integrations are still open;
- findings and outputs come from the world's process zero only
  (``state.is_world_process_zero``); under DDP every rank decides on statistics
  combined across ranks (see ``docs/scale-out.md``);
- with ``TrainingArguments(restore_callback_states_from_checkpoint=True)``, detector
  state, findings and the step count are restored from the checkpoint.

Outputs. Each window's vital signs go to the integrations of ``report_to``
(TensorBoard, W&B, MLflow, Comet...) through their own ``on_log``, at the step the
window closes, as numbers ``gradvitals/<statistic>/<layer>`` and
``gradvitals/findings_count`` (the integrations prefix them with ``train/``). They
are not added to the Trainer's console logs nor to ``state.log_history``.

Stopping and repair. ``stop_on={"nonfinite"}`` sets ``control.should_training_stop``
at the window that finds one; ``repair=True`` rolls back and changes the Trainer's
optimizer (unwrapped from Accelerate) and scales its LR scheduler along.

Install with ``pip install gradvitals[huggingface]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

try:
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState
except ImportError as e:  # pragma: no cover
    raise ImportError(
        "gradvitals.huggingface needs transformers: pip install 'gradvitals[huggingface]'"
    ) from e

import torch

from gradvitals.findings import Finding
from gradvitals.remedies import RepairPolicy
from gradvitals.report import _tags as T
from gradvitals.session import as_policy
from gradvitals.stats import WindowRecord
from gradvitals.torch import Monitor

__all__ = ["VitalsCallback"]

log = logging.getLogger("gradvitals")

#: The callback made last. The Trainer rebuilds a callback from a checkpoint's JSON
#: right after the one it replaces was made, while that one is still alive: the
#: rebuilt callback takes from it what JSON cannot hold (sinks, functions, policy).
_latest: weakref.ref[VitalsCallback] | None = None


def _unwrap(obj: Any, attr: str, kind: type | None = None) -> Any:
    """Accelerate's wrappers hold the real object in ``.optimizer`` / ``.scheduler``."""
    while True:
        inner = getattr(obj, attr, None)
        if inner is None or inner is obj or (kind is not None and not isinstance(inner, kind)):
            return obj
        obj = inner


def _integrations(handler: Any) -> list[Any]:
    """The ``report_to`` integration callbacks among the Trainer's callbacks."""
    try:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    except ImportError:  # pragma: no cover
        return []
    kinds = tuple(INTEGRATION_TO_CALLBACK.values())
    return [cb for cb in getattr(handler, "callbacks", []) if isinstance(cb, kinds)]


class ReportToSink:
    """A gradvitals sink that hands each window to the Trainer's ``report_to``
    integrations, through their ``on_log``, as numbers only (every integration takes
    them; MLflow drops text)."""

    def __init__(self, callback: VitalsCallback) -> None:
        self.callback = callback
        self.closed = False
        self._count = 0

    def write_window(self, record: WindowRecord, findings: list[Finding]) -> None:
        event = self.callback.event
        targets = self.callback.integrations
        if event is None or not targets:
            return
        self._count += len(findings)
        logs: dict[str, float] = T.namespaced_scalars(record.scalars())
        logs[T.FINDINGS_COUNT_TAG] = float(self._count)
        args, state, control, kwargs = event
        for integration in targets:
            integration.on_log(args, state, control, logs=dict(logs), **kwargs)

    def write_repair(self, repair: dict[str, Any]) -> None:
        pass

    def write_final(self, findings: list[Finding]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class VitalsCallback(TrainerCallback, ExportableState):
    """Watch a ``Trainer`` run for vanishing/exploding gradients, dying ReLUs,
    saturation and NaNs. ``callback.monitor`` holds the findings once training starts.

    Args:
        every: optimizer steps per window (detectors run once per window).
        samples: steps per window on which statistics are measured.
        log_dir: also write gradvitals' own TensorBoard file there (process zero only).
        thresholds: overrides by name, e.g. ``{"dead_fraction": 0.6}``.
        lint: run the pre-flight lint when training starts.
        console: log findings (process zero only).
        report_to: send the vital signs to the ``report_to`` integrations (default True).
        sinks: more outputs (``gradvitals.report``: W&B, MLflow, logging...).
        on_finding: called with each new :class:`~gradvitals.Finding`.
        on_window: called with each window record and its new findings.
        stop_on: failure modes (or ``"any"``) that end training
            (``control.should_training_stop``) at the window that finds one.
        repair: repair in flight: roll back and change the Trainer's optimizer and LR
            scheduler (see ``docs/repair.md``).
        policy: a :class:`~gradvitals.RepairPolicy` (or a dict of its fields);
            implies ``repair=True``.
    """

    def __init__(
        self,
        every: int = 20,
        samples: int = 2,
        log_dir: str | None = None,
        thresholds: dict[str, float] | None = None,
        lint: bool = True,
        console: bool = True,
        *,
        report_to: bool = True,
        sinks: Sequence[Any] = (),
        on_finding: Callable[[Finding], Any] | None = None,
        on_window: Callable[[WindowRecord, list[Finding]], Any] | None = None,
        stop_on: Iterable[Any] | str | None = None,
        repair: bool = False,
        policy: RepairPolicy | dict[str, Any] | None = None,
    ) -> None:
        stop = (
            stop_on
            if stop_on is None or isinstance(stop_on, str)
            else [str(getattr(m, "value", m)) for m in stop_on]
        )
        # JSON-serialisable: saved in trainer_state.json and given back to __init__
        self.options: dict[str, Any] = dict(
            every=every,
            samples=samples,
            log_dir=log_dir,
            thresholds=thresholds,
            lint=lint,
            console=console,
            report_to=bool(report_to),
            stop_on=stop,
            repair=bool(repair),
        )
        self.extras: dict[str, Any] = dict(
            sinks=list(sinks), on_finding=on_finding, on_window=on_window, policy=policy
        )
        if policy is not None:
            as_policy(policy)  # a bad policy is an error now, not at train()
        global _latest
        self._previous, _latest = _latest, weakref.ref(self)
        self.monitor: Monitor | None = None
        self.saved_state: dict[str, Any] | None = None  # restored by the Trainer
        #: the ``report_to`` integration callbacks the vital signs go to
        self.integrations: list[Any] = []
        #: ``(args, state, control, kwargs)`` of the event being handled
        self.event: tuple[Any, Any, Any, dict[str, Any]] | None = None
        self._hook: Any = None
        self._micro: list[torch.Tensor] = []
        self._summed = False
        self._hook_saw_loss = False

    @property
    def restored(self) -> bool:
        """True for a callback rebuilt by the Trainer from a checkpoint."""
        return bool(getattr(self, "_restored", False))

    @restored.setter
    def restored(self, value: bool) -> None:
        # set by the Trainer after rebuilding this callback from its JSON args: take the
        # non-JSON options (sinks, functions, policy) of the callback it replaces
        self._restored = bool(value)
        previous = self._previous() if self._previous is not None else None
        if value and isinstance(previous, VitalsCallback) and previous is not self:
            self.extras = dict(previous.extras)

    # -- events -------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # called by the Trainer's CallbackHandler: it holds the report_to integrations
        handler = sys._getframe(1).f_locals.get("self")
        if self.options["report_to"]:
            self.integrations = _integrations(handler)
        self.event = (args, state, control, kwargs)
        opt = kwargs.get("optimizer")
        kw: dict[str, Any] = {
            k: v for k, v in self.options.items() if k not in ("report_to", "repair")
        }
        sinks = list(self.extras.get("sinks") or [])
        if not state.is_world_process_zero:
            kw.update(console=False, log_dir=None)
            sinks = []
        if self.integrations:
            sinks.append(ReportToSink(self))
        model = kwargs["model"]
        self.monitor = Monitor(
            model,
            None,
            scaler=getattr(opt, "scaler", None),
            sinks=sinks,
            on_finding=self.extras.get("on_finding"),
            on_window=self.extras.get("on_window"),
            **kw,
        )
        if self.options["repair"] or self.extras.get("policy") is not None:
            self._attach_repair(opt, kwargs.get("lr_scheduler"))
        if self.saved_state:
            self.monitor.load_state_dict(self.saved_state)
        self._hook = model.register_forward_hook(self._on_forward, with_kwargs=True)

    def _attach_repair(self, optimizer: Any, scheduler: Any) -> None:
        from gradvitals.torch._repair import attach_repair

        assert self.monitor is not None
        opt = _unwrap(optimizer, "optimizer", torch.optim.Optimizer)
        policy = as_policy(self.extras.get("policy"))
        sched = _unwrap(scheduler, "scheduler") if scheduler is not None else None
        if policy.scheduler is None and sched is not None:
            policy = dataclasses.replace(policy, scheduler=sched)
        attach_repair(self.monitor, opt, policy)

    def _on_forward(
        self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any], output: Any
    ) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return  # evaluation, generation
        loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor):
            self._micro.append(loss.detach())
            self._summed = kwargs.get("num_items_in_batch") is not None
            self._hook_saw_loss = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        self.event = (args, state, control, kwargs)
        if self._micro:
            losses = torch.stack([v.float().reshape(()) for v in self._micro])
            monitor.observe_loss(losses.sum() if self._summed else losses.mean())
            self._micro = []
        monitor.step()
        if monitor.should_stop:
            control.should_training_stop = True
        if control.should_training_stop:  # the last step (max_steps, or a stop)
            # close the last, partial window now: at on_train_end the report_to
            # integrations (called before this callback) have closed their writers
            monitor.flush()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if self.monitor is not None and not self._hook_saw_loss and logs and "loss" in logs:
            self.monitor.observe_loss(float(logs["loss"]))  # the model returns no loss

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.event = None  # the integrations have ended: nothing more goes to them
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.monitor is not None:
            self.monitor.close()

    def state(self) -> dict[str, Any]:
        """For ``trainer_state.json``: the init args and the monitor's state (as JSON)."""
        saved = self.monitor.state_dict() if self.monitor is not None else self.saved_state
        # trainer_state.json is written with json.dumps: numpy scalars become numbers
        saved = json.loads(json.dumps(saved, default=_plain))
        return {
            "args": dict(self.options),
            "attributes": {"saved_state": saved, "restored": True},
        }


def _plain(x: Any) -> Any:
    return x.tolist() if hasattr(x, "tolist") else str(x)
