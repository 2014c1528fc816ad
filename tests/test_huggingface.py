"""The Hugging Face ``TrainerCallback``: a dying run found by ``Trainer.train``,
gradients read before ``max_grad_norm`` clipping, state through a resume, the loss of
every step, fp16 loss scaling undone, vital signs through ``report_to``, and repair
through the Trainer's optimizer and scheduler.

No downloads: a plain ``nn.Module`` that returns ``{"loss": ...}``, offline mode."""

from __future__ import annotations

import math
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
    scaler = defaults.pop("scaler", None)
    args = TrainingArguments(**defaults)
    trainer = Trainer(model=Regressor(), args=args, train_dataset=Rows(), callbacks=callbacks)
    if scaler is not None:  # fp16-style loss scaling, as Accelerate does on a GPU
        trainer.accelerator.scaler = scaler
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


# -- the loss of every step ----------------------------------------------------------------
class StepLosses(TrainerCallback):
    """The training loss of each optimizer step, read with .item() (the test may sync)."""

    def __init__(self) -> None:
        self.micro: list[float] = []
        self.steps: list[float] = []
        self.hook: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        def keep(module: nn.Module, inputs: Any, out: Any) -> None:
            if module.training:
                self.micro.append(float(out["loss"].detach()))

        self.hook = kw["model"].register_forward_hook(keep)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps.append(sum(self.micro) / len(self.micro))
        self.micro = []

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.hook.remove()


@pytest.mark.parametrize("accumulate", [1, 2])
def test_every_window_has_the_loss_of_every_step(tmp_path: Path, accumulate: int) -> None:
    # logging_steps=500 (the default): the Trainer logs no loss in 30 steps, and the
    # monitor still has each step's loss (the mean over micro-batches)
    cb, truth = VitalsCallback(every=4, lint=False), StepLosses()
    _train(
        tmp_path,
        [cb, truth],
        max_steps=30 // accumulate,
        learning_rate=1e-2,
        logging_steps=500,
        gradient_accumulation_steps=accumulate,
    )
    assert cb.monitor is not None and len(truth.steps) == 30 // accumulate
    for rec in cb.monitor.history:
        n = rec.step_end - rec.step_start + 1
        assert rec.loss is not None and rec.loss.count == n
        want = truth.steps[rec.step_start : rec.step_end + 1]
        assert rec.loss.mean == pytest.approx(sum(want) / n, rel=1e-5)


# -- fp16 loss scaling -----------------------------------------------------------------------
def test_fp16_scaled_gradients_give_the_findings_and_clip_norm_of_fp32(tmp_path: Path) -> None:
    # Accelerate scales the loss by the GradScaler's scale (1024 here) before backward
    # and unscales before the step. The monitor must divide it out: same findings, same
    # gradient norms, same suggested clip norm as the unscaled run (AdamW at lr=1).
    runs = {}
    for name, scaler in [
        ("fp32", None),
        ("fp16", torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=10**6)),
    ]:
        cb = VitalsCallback(every=4, lint=False, console=False)
        _train(tmp_path / name, [cb], max_steps=30, max_grad_norm=0.0, scaler=scaler)
        runs[name] = cb.monitor
        if scaler is not None:
            assert cb.monitor is not None and cb.monitor.scaler is scaler
            assert scaler.get_scale() == 1024.0  # the scaled path ran, and never overflowed
    fp32, fp16 = runs["fp32"], runs["fp16"]
    assert fp32 is not None and fp16 is not None

    def found(m: Any) -> list[tuple[str, str | None, int]]:
        return [(f.kind.value, f.layer, f.step) for f in m.findings]

    assert found(fp16) == found(fp32)
    assert ("exploding_gradient", "net.0", 2) in found(fp32)
    norms = [r.total_grad_norm for r in fp32.history]
    assert [r.total_grad_norm for r in fp16.history] == pytest.approx(norms, rel=1e-6)
    clip = [f.remedies[0].params for f in fp16.findings if f.kind.value == "exploding_gradient"]
    want = [f.remedies[0].params for f in fp32.findings if f.kind.value == "exploding_gradient"]
    assert clip[0]["max_norm"] == pytest.approx(want[0]["max_norm"], rel=1e-6)
    assert fp16.suite.clip_norm == pytest.approx(fp32.suite.clip_norm, rel=1e-6)


# -- report_to ---------------------------------------------------------------------------------
def _event_scalars(root: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.compat.proto import event_pb2

    from gradvitals.report._records import iter_records

    out: dict[str, list[tuple[int, float]]] = {}
    for path in root.rglob("events.out.tfevents.*"):
        for raw in iter_records(path):
            event = event_pb2.Event.FromString(raw)
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return {k: sorted(v) for k, v in out.items()}


def test_vital_signs_reach_the_report_to_integrations(tmp_path: Path) -> None:
    cb = VitalsCallback(every=4, lint=False, console=False)
    _train(tmp_path, [cb], max_steps=30, max_grad_norm=0.0, report_to=["tensorboard"])
    assert cb.monitor is not None and cb.monitor.findings
    assert [type(c).__name__ for c in cb.integrations] == ["TensorBoardCallback"]
    assert len(list((tmp_path / "runs").rglob("events.out.tfevents.*"))) == 1  # none after the end
    scalars = _event_scalars(tmp_path / "runs")
    # the Trainer's global_step counts finished steps: a window's last step + 1
    history = cb.monitor.history
    got = scalars["train/gradvitals/loss/train"]
    assert [s for s, _ in got] == [r.step + 1 for r in history]
    assert [v for _, v in got] == pytest.approx([r.loss.mean for r in history], rel=1e-5)
    counts = [v for _, v in scalars["train/gradvitals/findings_count"]]
    assert counts == [sum(f.step <= r.step for f in cb.monitor.findings) for r in history]
    ours = {t for t in scalars if "gradvitals/" in t}
    assert ours == {f"train/gradvitals/{t}" for r in history for t in r.scalars()} | {
        "train/gradvitals/findings_count"
    }


def test_report_to_false_keeps_the_integrations_clean(tmp_path: Path) -> None:
    cb = VitalsCallback(every=4, lint=False, console=False, report_to=False)
    _train(tmp_path, [cb], max_steps=8, learning_rate=1e-2, report_to=["tensorboard"])
    assert cb.integrations == []
    assert not [t for t in _event_scalars(tmp_path / "runs") if "gradvitals" in t]


# -- repair --------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_a_failing_run_is_repaired_through_the_trainers_optimizer(
    tmp_path: Path, schedule: str
) -> None:
    cb = VitalsCallback(every=4, lint=False, console=False, repair=True)
    trainer = _train(tmp_path, [cb], max_steps=40, max_grad_norm=0.0, lr_scheduler_type=schedule)
    monitor = cb.monitor
    assert monitor is not None
    (rep,) = monitor.repairs
    assert (rep["kind"], rep["action"]) == ("exploding_gradient", "lower_lr")
    assert rep["rollback_step"] < rep["step"] and rep["healthy_after"] is True
    assert all(f.step <= rep["step"] and not f.final for f in monitor.findings)
    assert math.isfinite(monitor.history[-1].loss.mean)
    # the scheduler was scaled too, so its next step did not undo the lower rate
    assert trainer.lr_scheduler.base_lrs == pytest.approx([0.1, 0.1])
    if schedule == "constant":
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_a_healthy_run_with_repair_is_untouched(tmp_path: Path) -> None:
    plain = _train(tmp_path / "a", [VitalsCallback(every=4, lint=False)], 20, learning_rate=1e-2)
    cb = VitalsCallback(every=4, lint=False, repair=True)
    repaired = _train(tmp_path / "b", [cb], 20, learning_rate=1e-2)
    assert cb.monitor is not None and cb.monitor.repairs == [] and cb.monitor.findings == []
    a, b = plain.model.state_dict(), repaired.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_model_without_a_loss_falls_back_to_the_logged_loss(tmp_path: Path) -> None:
    # the loss is computed outside the model (a custom compute_loss): the forward hook
    # sees none, and the loss comes from on_log, every logging_steps=2 steps
    class Logits(Regressor):
        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.net(x)}

    class OwnLoss(Trainer):
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kw: Any):  # type: ignore[no-untyped-def]
            labels = inputs.pop("labels")
            out = model(**inputs, labels=labels)
            loss = (out["logits"] - labels).pow(2).mean()
            return (loss, out) if return_outputs else loss

    cb, logs = VitalsCallback(every=4, lint=False), Logs()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=32,
        max_steps=12,
        learning_rate=1e-2,
        logging_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
    )
    OwnLoss(model=Logits(), args=args, train_dataset=Rows(), callbacks=[cb, logs]).train()
    assert cb.monitor is not None
    logged = [d["loss"] for d in logs.logs if "loss" in d]
    assert len(logged) == 6
    seen = [rec.loss.count for rec in cb.monitor.history if rec.loss is not None]
    assert sum(seen) == len(logged)


def test_a_restored_callback_keeps_the_functions_and_sinks_of_the_one_it_replaces(
    tmp_path: Path,
) -> None:
    cb = VitalsCallback(every=4, lint=False)
    _train(tmp_path, [cb], max_steps=8, learning_rate=1e-2, save_strategy="steps", save_steps=8)
    windows: list[int] = []
    fresh = VitalsCallback(
        every=4, lint=False, on_window=lambda rec, found: windows.append(rec.step)
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=32,
        max_steps=16,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        restore_callback_states_from_checkpoint=True,
    )
    trainer = Trainer(model=Regressor(), args=args, train_dataset=Rows(), callbacks=[fresh])
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-8"))
    restored = next(c for c in trainer.callback_handler.callbacks if isinstance(c, VitalsCallback))
    assert restored is not fresh and restored.restored  # the Trainer rebuilt it from JSON
    assert restored.monitor is not None and restored.monitor.step_count == 16
    assert windows and windows == [r.step for r in restored.monitor.history if r.step >= 8]
