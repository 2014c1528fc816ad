"""Lightning: ``Trainer(callbacks=[VitalsCallback()])``.

Wiring only; the :class:`~gradvitals.torch.Monitor` does the work. Where it hooks in:

- ``on_fit_start``: watch the ``LightningModule`` (not Lightning's DDP wrapper, so
  layer names have no ``module.`` prefix) with ``optimizer=None``: Lightning may run
  several optimizers, or call ``optimizer.step`` with a closure that runs the forward
  and backward *inside* the step, so steps are counted here instead;
- ``on_train_batch_start``: a training step's forward begins (``training_step`` does
  not always call the module itself). On a sampled step the weights are copied here,
  before the first micro-batch, which makes the update ratio that of the whole step;
- gradients are read by per-parameter hooks when they are complete: after the last
  micro-batch's backward (and DDP's all-reduce), **before** ``gradient_clip_val``
  clips them. Under 16-bit AMP they are unscaled with the precision plugin's scaler;
- ``on_before_optimizer_step`` notes that an optimizer step happens (once per
  ``accumulate_grad_batches``) and applies a repair's gradient clipping (the
  gradients are final there, and unscaled under AMP); ``on_train_batch_end`` then
  closes the step and records the loss;
- ``state_dict``/``load_state_dict``: detector state, findings and the step count go
  into Lightning checkpoints, so a resumed run keeps its patience counters.

Outputs. By default the vital signs go through the Trainer's own loggers
(``trainer.loggers``: ``CSVLogger``, ``TensorBoardLogger``, ``WandbLogger``,
``MLFlowLogger``...), once per window, as ``gradvitals/<statistic>/<layer>`` metrics
at the window's last step, with ``gradvitals/findings_count``. Findings also go as
text where the logger takes text: markdown and JSON text summaries in TensorBoard
(so ``gradvitals report`` reads the logger's directory), a table in W&B, a JSON
artifact in MLflow. ``log_dir=`` writes gradvitals' own TensorBoard file besides.

Stopping and repair. ``stop_on={"nonfinite"}`` sets ``trainer.should_stop`` at the
window that finds one (a decision reduced across ranks, as ``EarlyStopping`` does);
``repair=True`` rolls back and changes the optimizer returned by
``configure_optimizers`` (the first one; its first LR scheduler is scaled along).

Under DDP every rank decides on statistics combined across ranks and only rank 0
logs (see ``docs/scale-out.md``). Install with ``pip install gradvitals[lightning]``.

``VitalsCallback`` subclasses ``lightning.pytorch.Callback`` (or
``pytorch_lightning.Callback`` when only that is installed); ``PLVitalsCallback``
subclasses ``pytorch_lightning.Callback`` for Trainers from that package.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gradvitals._version import __version__
from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.remedies import RepairPolicy
from gradvitals.report import _tags as T
from gradvitals.report._markdown import findings_markdown, repair_markdown, summary_markdown
from gradvitals.report._sinks import FINDING_COLUMNS, FindingLog, finding_row
from gradvitals.report._summary import to_json
from gradvitals.session import as_policy
from gradvitals.stats import WindowRecord
from gradvitals.torch import Monitor

__all__ = ["VitalsCallback"]  # and PLVitalsCallback, built on first access

log = logging.getLogger("gradvitals")


def _base(*modules: str) -> type:
    for name in modules:
        try:
            return importlib.import_module(name).Callback  # type: ignore[no-any-return]
        except ImportError:
            continue
    raise ImportError(
        "gradvitals.lightning needs Lightning: pip install 'gradvitals[lightning]' "
        "(or pip install lightning)"
    )


def _tensors(batch: Any) -> tuple[Any, ...]:
    if isinstance(batch, dict):
        return tuple(batch.values())
    return tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)


def _is(logger: Any, name: str) -> bool:
    """``logger`` is (a subclass of) Lightning's logger class ``name``, of either package."""
    return any(c.__name__ == name for c in type(logger).__mro__)


class LoggersSink:
    """A gradvitals sink that writes through a Lightning Trainer's ``trainer.loggers``.

    Every logger gets ``log_metrics`` of the window's ``gradvitals/`` statistics and
    ``gradvitals/findings_count`` at the window's last step. Text goes where the
    logger takes it: ``TensorBoardLogger`` (markdown and JSON text, as gradvitals'
    own TensorBoard sink writes them), ``WandbLogger`` (a ``gradvitals/findings``
    table), ``MLFlowLogger`` (``gradvitals/findings.json`` at the end); other
    loggers (``CSVLogger``...) get the count only.

    Args:
        trainer: the Lightning ``Trainer``; its loggers are read at each write.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.closed = False
        self._log = FindingLog()
        self._repairs: list[dict[str, Any]] = []
        self._marked: set[int] = set()
        self._step = 0

    @property
    def loggers(self) -> list[Any]:
        return list(getattr(self.trainer, "loggers", None) or [])

    def write_window(self, record: WindowRecord, findings: list[Finding]) -> None:
        new = self._log.add(findings)
        step = self._step = max(self._step, int(record.step))
        metrics = T.namespaced_scalars(record.scalars())
        metrics[T.FINDINGS_COUNT_TAG] = float(len(self._log.findings))
        for lg in self.loggers:
            lg.log_metrics(_keys_for(lg, metrics), step=step)
            if _is(lg, "TensorBoardLogger"):
                self._tensorboard_text(lg, new, step)
            elif new and _is(lg, "WandbLogger"):
                rows = [finding_row(f) for f in self._log.findings]
                lg.log_text(key=T.namespaced("findings"), columns=list(FINDING_COLUMNS), data=rows)

    def _tensorboard_text(self, lg: Any, new: list[Finding], step: int) -> None:
        writer = lg.experiment
        if id(lg) not in self._marked:  # what makes `gradvitals report <log dir>` take it
            self._marked.add(id(lg))
            info = {"gradvitals": __version__, "format": T.FORMAT_VERSION, "adapter": "lightning"}
            writer.add_text(T.RUN_INFO_TAG, to_json(info), global_step=0)
        if new:
            writer.add_text(T.namespaced(T.FINDINGS_TAG), findings_markdown(new), global_step=step)
            writer.add_text(
                T.FINDINGS_JSON_TAG, to_json([f.to_dict() for f in new]), global_step=step
            )

    def write_repair(self, repair: dict[str, Any]) -> None:
        self._repairs.append(dict(repair))
        for lg in self.loggers:
            if _is(lg, "TensorBoardLogger"):
                writer = lg.experiment
                writer.add_text(
                    T.namespaced(T.REPAIRS_TAG), repair_markdown(repair), global_step=self._step
                )
                writer.add_text(T.REPAIRS_JSON_TAG, to_json([repair]), global_step=self._step)

    def write_final(self, findings: list[Finding]) -> None:
        self._log.add(findings)
        found = self._log.findings
        for lg in self.loggers:
            if _is(lg, "TensorBoardLogger"):
                writer = lg.experiment
                writer.add_text(
                    T.namespaced(T.SUMMARY_TAG), summary_markdown(found), global_step=self._step
                )
                writer.add_text(
                    T.FINAL_JSON_TAG, to_json([f.to_dict() for f in found]), global_step=self._step
                )
            elif _is(lg, "MLFlowLogger") and lg.run_id is not None:
                payload = to_json([f.to_dict() for f in found])
                lg.experiment.log_text(lg.run_id, payload, "gradvitals/findings.json")
                if self._repairs:
                    lg.experiment.log_text(
                        lg.run_id, to_json(self._repairs), "gradvitals/repairs.json"
                    )

    def close(self) -> None:
        self.closed = True


_MLFLOW_BAD = re.compile(r"[^a-zA-Z0-9_/. -]")


def _keys_for(logger: Any, metrics: dict[str, float]) -> dict[str, float]:
    """MLFlowLogger drops characters MLflow refuses (with a warning per key): replace
    them with ``_`` first."""
    if not _is(logger, "MLFlowLogger"):
        return metrics
    return {_MLFLOW_BAD.sub("_", k): v for k, v in metrics.items()}


class _ClipHandle:
    """A repair's gradient clipping, applied in ``on_before_optimizer_step``."""

    def __init__(self, clips: list[Any], clip: Any) -> None:
        self.clips, self.clip = clips, clip
        clips.append(clip)

    def remove(self) -> None:
        if self.clip in self.clips:
            self.clips.remove(self.clip)


def _first_scheduler(trainer: Any, optimizer: Any) -> Any:
    for config in getattr(trainer, "lr_scheduler_configs", None) or []:
        sched = getattr(config, "scheduler", None)
        if getattr(sched, "optimizer", None) is optimizer:
            return sched
    return None


class _Vitals:
    """The hooks, shared by both packages' callback classes."""

    def __init__(
        self,
        every: int = 20,
        samples: int = 2,
        log_dir: str | None = None,
        thresholds: dict[str, float] | None = None,
        lint: bool = True,
        console: bool = True,
        *,
        loggers: bool = True,
        sinks: Sequence[Any] = (),
        on_finding: Callable[[Finding], Any] | None = None,
        on_window: Callable[[WindowRecord, list[Finding]], Any] | None = None,
        stop_on: Iterable[Any] | str | None = None,
        repair: bool = False,
        policy: RepairPolicy | dict[str, Any] | None = None,
    ) -> None:
        """
        Args:
            every: optimizer steps per window (detectors run once per window).
            samples: steps per window on which statistics are measured.
            log_dir: also write gradvitals' own TensorBoard file there (rank 0 only).
            thresholds: overrides by name, e.g. ``{"dead_fraction": 0.6}``.
            lint: run the pre-flight lint when training starts.
            console: log findings (rank 0 only).
            loggers: write vital signs and findings through ``trainer.loggers``
                (default True).
            sinks: more outputs (``gradvitals.report``: W&B, MLflow, logging...).
            on_finding: called with each new :class:`~gradvitals.Finding`.
            on_window: called with each window record and its new findings.
            stop_on: failure modes (or ``"any"``) that stop ``fit`` through
                ``trainer.should_stop``, at the window that finds one.
            repair: repair in flight: roll back and change the optimizer from
                ``configure_optimizers`` (see ``docs/repair.md``).
            policy: a :class:`~gradvitals.RepairPolicy` (or a dict of its fields);
                implies ``repair=True``.
        """
        super().__init__()
        self.kwargs: dict[str, Any] = dict(
            every=every,
            samples=samples,
            log_dir=log_dir,
            thresholds=thresholds,
            lint=lint,
            console=console,
            on_finding=on_finding,
            on_window=on_window,
            stop_on=stop_on,
        )
        self.loggers = bool(loggers)
        self.sinks = list(sinks)
        self.repair = bool(repair) or policy is not None
        self.policy = as_policy(policy) if self.repair else None
        self.monitor: Monitor | None = None
        self._state: dict[str, Any] | None = None
        self._stepped = False
        self._clips: list[Any] = []
        self._repaired: Any = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:  # a second fit() goes on where the first stopped
            self._state = self._state or self.monitor.state_dict()
            self.monitor.close()
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        sinks = [*self.sinks, LoggersSink(trainer)] if self.loggers else list(self.sinks)
        self.monitor = Monitor(pl_module, None, scaler=scaler, sinks=sinks, **self.kwargs)
        if self.repair:
            self._attach_repair(trainer)
        if self._state is not None:
            self.monitor.load_state_dict(self._state)
            self._state = None

    def _attach_repair(self, trainer: Any) -> None:
        from gradvitals.torch._repair import attach_repair

        assert self.monitor is not None and self.policy is not None
        optimizers = list(getattr(trainer, "optimizers", None) or [])
        if not optimizers:
            raise UsageError(
                "VitalsCallback(repair=True) needs an optimizer, and configure_optimizers "
                "returned none; return one, or drop repair=True"
            )
        if len(optimizers) > 1:
            log.warning(
                "gradvitals repair: %d optimizers; repairs change the first one only",
                len(optimizers),
            )
        opt = getattr(optimizers[0], "_optimizer", optimizers[0])  # a LightningOptimizer
        policy = self.policy
        sched = _first_scheduler(trainer, opt)
        if policy.scheduler is None and sched is not None:
            policy = dataclasses.replace(policy, scheduler=sched)
        self._repaired = opt
        self._clips = []
        attach_repair(
            self.monitor, opt, policy, install_clip=lambda clip: _ClipHandle(self._clips, clip)
        )

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        if self.monitor is not None:
            self.monitor.begin_step(*_tensors(batch))

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self._stepped = True
        if self._clips and getattr(optimizer, "_optimizer", optimizer) is self._repaired:
            for clip in list(self._clips):
                clip(self._repaired, (), {})

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            monitor.observe_loss(loss)
        if self._stepped:
            self._stepped = False
            window = monitor.session.schedule.index
            monitor.step()
            if monitor.session.stop_on and monitor.session.schedule.index != window:
                # a window closed, at the same step on every rank: one collective per window
                stop = trainer.strategy.reduce_boolean_decision(monitor.should_stop, all=False)
                if stop:
                    trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.monitor.close()

    def state_dict(self) -> dict[str, Any]:
        if self.monitor is not None:
            return self.monitor.state_dict()
        return dict(self._state or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.load_state_dict(state_dict)
        else:  # restored before on_fit_start: applied when the monitor is created
            self._state = state_dict


class VitalsCallback(_Vitals, _base("lightning.pytorch", "pytorch_lightning")):  # type: ignore[misc]
    """Watch a Lightning run for vanishing/exploding gradients, dying ReLUs,
    saturation and NaNs. ``callback.monitor`` holds the findings once fit starts.

    Example::

        trainer = lightning.pytorch.Trainer(
            logger=CSVLogger("logs"),  # vital signs go through the Trainer's loggers
            callbacks=[VitalsCallback(every=20, stop_on={"nonfinite"})],
        )
        trainer.fit(model, loader)
        print(trainer.callbacks[0].monitor.report())
    """


def __getattr__(name: str) -> Any:
    if name == "PLVitalsCallback":  # imported on demand: pytorch_lightning is slow to load
        cls = type("PLVitalsCallback", (_Vitals, _base("pytorch_lightning")), {})
        cls.__doc__ = "Like :class:`VitalsCallback`, for ``pytorch_lightning`` Trainers."
        cls.__module__ = __name__
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
