"""Hugging Face ``Trainer``: ``Trainer(..., callbacks=[VitalsCallback()])``.

Wiring only; the :class:`~gradvitals.torch.Monitor` does the work. Where it hooks in:

- ``on_train_begin``: watch the model with ``optimizer=None`` (the Trainer's optimizer
  is Accelerate's wrapper; steps are counted here instead);
- gradients are read by per-parameter hooks as soon as they are complete, i.e. after
  the last micro-batch's backward and **before** ``max_grad_norm`` clipping. (At
  ``on_pre_optimizer_step`` they are already clipped.) On a sampled step the weights
  are copied at the step's first forward, which makes the update ratio that of the
  whole step;
- ``on_step_end`` (once per optimizer step, after ``gradient_accumulation_steps``
  micro-batches) closes the step; ``on_log`` records the logged training loss;
- findings and TensorBoard files come from the world's process zero only
  (``state.is_world_process_zero``); under DDP every rank decides on statistics
  combined across ranks (see ``docs/scale-out.md``);
- with ``TrainingArguments(restore_callback_states_from_checkpoint=True)``, detector
  state, findings and the step count are restored from the checkpoint.

fp16 with a gradient scaler: the hooks see scaled gradients (their ratios, which the
detectors use, are unaffected; absolute norms are not). bf16 needs no scaler.
Install with ``pip install gradvitals[transformers]``.
"""

from __future__ import annotations

import json
from typing import Any

try:
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState
except ImportError as e:  # pragma: no cover
    raise ImportError(
        "gradvitals.huggingface needs transformers: pip install 'gradvitals[transformers]'"
    ) from e

from gradvitals.torch import Monitor

__all__ = ["VitalsCallback"]


class VitalsCallback(TrainerCallback, ExportableState):
    """Watch a ``Trainer`` run for vanishing/exploding gradients, dying ReLUs,
    saturation and NaNs. ``callback.monitor`` holds the findings once training starts.

    Args:
        every: optimizer steps per window (detectors run once per window).
        samples: steps per window on which statistics are measured.
        log_dir: write TensorBoard vital signs there (process zero only).
        thresholds: overrides by name, e.g. ``{"dead_fraction": 0.6}``.
        lint: run the pre-flight lint when training starts.
        console: log findings (process zero only).
    """

    def __init__(
        self,
        every: int = 20,
        samples: int = 2,
        log_dir: str | None = None,
        thresholds: dict[str, float] | None = None,
        lint: bool = True,
        console: bool = True,
    ) -> None:
        self.options: dict[str, Any] = dict(
            every=every,
            samples=samples,
            log_dir=log_dir,
            thresholds=thresholds,
            lint=lint,
            console=console,
        )
        self.monitor: Monitor | None = None
        self.saved_state: dict[str, Any] | None = None  # restored by the Trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        kw: dict[str, Any] = dict(self.options)
        if not state.is_world_process_zero:
            kw.update(console=False, log_dir=None)
        self.monitor = Monitor(kwargs["model"], None, **kw)
        if self.saved_state:
            self.monitor.load_state_dict(self.saved_state)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.step()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if self.monitor is not None and logs and "loss" in logs:
            self.monitor.observe_loss(float(logs["loss"]))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.close()

    def state(self) -> dict[str, Any]:
        """For ``trainer_state.json``: the init args and the monitor's state (as JSON)."""
        saved = self.monitor.state_dict() if self.monitor is not None else self.saved_state
        # trainer_state.json is written with json.dumps: numpy scalars become numbers
        saved = json.loads(json.dumps(saved, default=_plain))
        return {"args": dict(self.options), "attributes": {"saved_state": saved}}


def _plain(x: Any) -> Any:
    return x.tolist() if hasattr(x, "tolist") else str(x)
