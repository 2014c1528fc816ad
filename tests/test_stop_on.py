"""``stop_on`` in each framework's own way: a NaN injected into the input at step 9 ends
the run at the window that finds it (``every=4``: windows [0], [1, 2], [3..6], [7..10],
so after step 10, 11 optimizer steps); a healthy run with the same ``stop_on`` runs to
its end.

- PyTorch: ``monitor.should_stop``, checked by the user's loop;
- Lightning: ``trainer.should_stop`` (a decision reduced across ranks);
- Hugging Face: ``control.should_training_stop``;
- Keras: ``model.stop_training``. The Keras callback closes a window at the next
  batch's ``on_train_batch_begin`` (it reads Keras' loss tracker there), and ``fit``
  checks ``stop_training`` when that batch ends: Keras stops one step later.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import gradvitals

NAN_STEP, STEPS = 9, 40
WINDOW_END = 10  # the last step of the window holding NAN_STEP
STOP = {"nonfinite"}


def data(n: int = 32 * STEPS, nan: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows in step order (no shuffling); a NaN in the first row of step NAN_STEP."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = x[:, :1] * 2.0 + 1.0
    if nan:
        x[32 * NAN_STEP, 0] = float("nan")
    return x, y


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))


def assert_stopped_at_the_nan_window(findings: list[Any], steps_run: int, late: int = 0) -> None:
    assert [(f.kind.value, f.step) for f in findings] == [("nonfinite", WINDOW_END)]
    assert steps_run == WINDOW_END + 1 + late


# -- PyTorch ---------------------------------------------------------------------------------
@pytest.mark.parametrize("nan", [True, False])
def test_pytorch_loop_stops_on_monitor_should_stop(nan: bool) -> None:
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = data(nan=nan)
    monitor = gradvitals.watch(model, opt, every=4, lint=False, console=False, stop_on=STOP)
    steps = 0
    for i in range(STEPS):
        loss = (model(x[32 * i : 32 * i + 32]) - y[32 * i : 32 * i + 32]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.observe_loss(loss)
        steps += 1
        if monitor.should_stop:
            break
    monitor.close()
    if nan:
        assert_stopped_at_the_nan_window(monitor.findings, steps)
        assert monitor.session.stop_reason is monitor.findings[0]
    else:
        assert monitor.findings == [] and steps == STEPS and not monitor.should_stop


# -- Lightning -------------------------------------------------------------------------------
@pytest.mark.parametrize("nan", [True, False])
def test_lightning_fit_stops_through_trainer_should_stop(nan: bool) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from gradvitals.lightning import VitalsCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return (self.net(x) - y).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    cb = VitalsCallback(every=4, lint=False, console=False, stop_on=STOP)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=STEPS,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        trainer.fit(Module(), DataLoader(TensorDataset(*data(nan=nan)), batch_size=32))
    assert cb.monitor is not None
    if nan:
        assert_stopped_at_the_nan_window(cb.monitor.findings, trainer.global_step)
        assert trainer.should_stop
    else:
        assert cb.monitor.findings == [] and trainer.global_step == STEPS


# -- Hugging Face ----------------------------------------------------------------------------
@pytest.mark.parametrize("nan", [True, False])
def test_hf_trainer_stops_through_control(tmp_path: Path, nan: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    from gradvitals.huggingface import VitalsCallback

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net()

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": (self.net(x) - labels).pow(2).mean()}

    x, y = data(nan=nan)
    rows = [{"x": x[i], "labels": y[i]} for i in range(len(x))]

    class InOrder(Trainer):  # the rows in step order, so the NaN lands at NAN_STEP
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            return torch.utils.data.SequentialSampler(rows)

    cb = VitalsCallback(every=4, lint=False, console=False, stop_on=STOP)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=32,
        max_steps=STEPS,
        learning_rate=0.01,
        optim="sgd",
        lr_scheduler_type="constant",
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        logging_nan_inf_filter=False,
    )
    trainer = InOrder(model=Model(), args=args, train_dataset=rows, callbacks=[cb])
    trainer.train()
    assert cb.monitor is not None
    if nan:
        assert_stopped_at_the_nan_window(cb.monitor.findings, trainer.state.global_step)
    else:
        assert cb.monitor.findings == [] and trainer.state.global_step == STEPS


# -- Keras -----------------------------------------------------------------------------------
@pytest.mark.parametrize("nan", [True, False])
def test_keras_fit_stops_through_model_stop_training(nan: bool) -> None:
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from gradvitals.keras import VitalsCallback

    x, y = (t.numpy().astype("float32") for t in data(nan=nan))
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    probe = (np.nan_to_num(x[:64]), y[:64])
    cb = VitalsCallback(every=4, probe=probe, console=False, stop_on=STOP)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    steps = int(model.optimizer.iterations.numpy())
    if nan:
        assert_stopped_at_the_nan_window(cb.findings, steps, late=1)
        assert model.stop_training
    else:
        assert cb.findings == [] and steps == STEPS
