"""The Hugging Face ``TrainerCallback``: a dying run found by ``Trainer.train``,
gradients read before ``max_grad_norm`` clipping, and state through a resume.

No downloads: a plain ``nn.Module`` that returns ``{"loss": ...}``, offline mode."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from gradvitals.huggingface import VitalsCallback  # noqa: E402


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {"loss": (out - labels).pow(2).mean(), "logits": out}


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 32 * 40) -> None:
        g = torch.Generator().manual_seed(100)
        self.x = torch.randn(n, 8, generator=g)
        w = torch.randn(8, 1, generator=torch.Generator().manual_seed(7))
        self.y = self.x @ w * 10 + 5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Logs(TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        self.logs.append(dict(logs or {}))


def _train(tmp: Path, callbacks: list[Any], max_steps: int, **kw: Any) -> Trainer:
    defaults: dict[str, Any] = dict(
        output_dir=str(tmp),
        per_device_train_batch_size=32,
        max_steps=max_steps,
        learning_rate=1.0,
        optim="adamw_torch",
        weight_decay=0.0,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    defaults.update(kw)
    args = TrainingArguments(**defaults)
    trainer = Trainer(model=Regressor(), args=args, train_dataset=Rows(), callbacks=callbacks)
    trainer.train()
    return trainer


def test_a_dying_run_is_found(tmp_path: Path) -> None:
    cb = VitalsCallback(every=4, lint=False)
    _train(tmp_path, [cb], max_steps=30, max_grad_norm=0.0)  # AdamW at lr=1, no clipping
    assert cb.monitor is not None and cb.monitor.closed
    assert cb.monitor.step_count == 30
    # Adam at lr=1: the gradients explode, and the dead units are nested under that root
    kinds = {(g.kind.value, g.layer) for f in cb.monitor.findings for g in f.walk()}
    assert ("dying_relu", "net.3") in kinds
    assert list(cb.monitor.history[-1].layers) == ["net.0", "net.2", "net.4"]
    assert cb.monitor.history[-1].loss is not None


def test_a_healthy_run_stays_quiet(tmp_path: Path) -> None:
    cb = VitalsCallback(every=4, lint=False)
    _train(tmp_path, [cb], max_steps=30, learning_rate=1e-2)
    assert cb.monitor is not None and cb.monitor.step_count == 30
    assert cb.monitor.findings == []
    assert any(r.sites for r in cb.monitor.history)  # it was watching


def test_gradients_are_read_before_clipping(tmp_path: Path) -> None:
    # one step per window: the monitor's total gradient norm is the Trainer's logged
    # pre-clip grad_norm, though max_grad_norm clips the gradient 1000-fold
    cb, logs = VitalsCallback(every=1, samples=1, lint=False), Logs()
    _train(tmp_path, [cb, logs], max_steps=3, learning_rate=1e-3, optim="sgd", max_grad_norm=1e-3)
    assert cb.monitor is not None
    logged = [d["grad_norm"] for d in logs.logs if "grad_norm" in d]
    sampled = [r for r in cb.monitor.history if any(x.n_samples for x in r.layers.values())]
    seen = [rec.total_grad_norm for rec in sampled]
    assert len(logged) == len(seen) == 3
    assert seen == pytest.approx(logged, rel=1e-4)
    assert min(seen) > 1.0  # far above max_grad_norm
    for rec in sampled:  # the step taken is lr x the clipped gradient
        for lay in rec.layers.values():
            assert lay.update_norm < 1e-3 * lay.grad_norm


def test_state_survives_a_checkpoint_resume(tmp_path: Path) -> None:
    cb = VitalsCallback(every=4, lint=False)
    _train(tmp_path, [cb], max_steps=20, max_grad_norm=0.0, save_strategy="steps", save_steps=20)
    saved = cb.state()["attributes"]["saved_state"]
    assert saved["findings"] and saved["step_count"] == 20

    fresh = VitalsCallback(every=4, lint=False)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=32,
        max_steps=24,
        learning_rate=1.0,
        max_grad_norm=0.0,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        restore_callback_states_from_checkpoint=True,
    )
    trainer = Trainer(model=Regressor(), args=args, train_dataset=Rows(), callbacks=[fresh])
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-20"))
    restored = next(c for c in trainer.callback_handler.callbacks if isinstance(c, VitalsCallback))
    assert restored.monitor is not None and restored.monitor.step_count == 24
    state = restored.monitor.state_dict()
    assert [f["step"] for f in state["findings"][: len(saved["findings"])]] == [
        f["step"] for f in saved["findings"]
    ]
