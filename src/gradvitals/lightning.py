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
  ``accumulate_grad_batches``), and ``on_train_batch_end`` then closes the step and
  records the loss;
- ``state_dict``/``load_state_dict``: detector state, findings and the step count go
  into Lightning checkpoints, so a resumed run keeps its patience counters.

Under DDP every rank decides on statistics combined across ranks and only rank 0
logs (see ``docs/scale-out.md``). Install with ``pip install gradvitals[lightning]``.

``VitalsCallback`` subclasses ``lightning.pytorch.Callback`` (or
``pytorch_lightning.Callback`` when only that is installed); ``PLVitalsCallback``
subclasses ``pytorch_lightning.Callback`` for Trainers from that package.
"""

from __future__ import annotations

import importlib
from typing import Any

from gradvitals.torch import Monitor

__all__ = ["VitalsCallback"]  # and PLVitalsCallback, built on first access


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
    ) -> None:
        """
        Args:
            every: optimizer steps per window (detectors run once per window).
            samples: steps per window on which statistics are measured.
            log_dir: write TensorBoard vital signs there (rank 0 only).
            thresholds: overrides by name, e.g. ``{"dead_fraction": 0.6}``.
            lint: run the pre-flight lint when training starts.
            console: log findings (rank 0 only).
        """
        super().__init__()
        self.kwargs: dict[str, Any] = dict(
            every=every,
            samples=samples,
            log_dir=log_dir,
            thresholds=thresholds,
            lint=lint,
            console=console,
        )
        self.monitor: Monitor | None = None
        self._state: dict[str, Any] | None = None
        self._stepped = False

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:  # a second fit() goes on where the first stopped
            self._state = self._state or self.monitor.state_dict()
            self.monitor.close()
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.monitor = Monitor(pl_module, None, scaler=scaler, **self.kwargs)
        if self._state is not None:
            self.monitor.load_state_dict(self._state)
            self._state = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        if self.monitor is not None:
            self.monitor.begin_step(*_tensors(batch))

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self._stepped = True

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self.monitor is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.monitor.observe_loss(loss)
        if self._stepped:
            self._stepped = False
            self.monitor.step()

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

        trainer = lightning.pytorch.Trainer(callbacks=[VitalsCallback(every=20)])
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
