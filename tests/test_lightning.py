"""The Lightning callback: a dying run found in ``Trainer.fit``, correct update ratios
under gradient accumulation, detector state through a checkpoint resume, vital signs
through the Trainer's loggers, and repair through ``configure_optimizers``' optimizer."""

from __future__ import annotations

import csv
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from gradvitals.lightning import VitalsCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*LeafSpec.*:FutureWarning", "ignore:.*dataloader is not resumable.*"
)


class Regressor(pl.LightningModule):
    """An MLP whose ``training_step`` calls its layers, not ``self(x)``."""

    def __init__(self, lr: float = 1.0, adam: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
        )
        self.lr = lr
        self.adam = adam

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return (self.net(x) - y).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.adam:
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _loader(n: int = 32 * 40) -> DataLoader:
    g = torch.Generator().manual_seed(100)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 1, generator=torch.Generator().manual_seed(7))
    return DataLoader(TensorDataset(x, x @ w * 10 + 5), batch_size=32)


def _fit(
    model: pl.LightningModule,
    cb: VitalsCallback,
    max_steps: int,
    ckpt_path: str | None = None,
    **kw: Any,
) -> pl.Trainer:
    kw.setdefault("logger", False)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kw,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*max_steps.*")
        warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
        trainer.fit(model, _loader(), ckpt_path=ckpt_path)
    return trainer


def test_a_dying_run_is_found(caplog: pytest.LogCaptureFixture) -> None:
    cb = VitalsCallback(every=4, lint=False)
    with caplog.at_level(logging.WARNING, logger="gradvitals"):
        _fit(Regressor(lr=1.0), cb, max_steps=30)
    assert cb.monitor is not None and cb.monitor.closed
    assert cb.monitor.step_count == 30
    # Adam at lr=1: the gradients explode, and the dead units are nested under that root
    kinds = {(g.kind.value, g.layer) for f in cb.monitor.findings for g in f.walk()}
    assert ("dying_relu", "net.3") in kinds
    assert cb.monitor.findings[0].kind.value in caplog.text
    # names are the LightningModule's, and every window has sites: one per call position
    assert list(cb.monitor.history[-1].layers) == ["net.0", "net.2", "net.4"]
    assert all(set(r.sites) <= {"net.1", "net.3"} for r in cb.monitor.history)


def test_a_healthy_run_stays_quiet() -> None:
    cb = VitalsCallback(every=4, lint=False)
    _fit(Regressor(lr=1e-2), cb, max_steps=30)
    assert cb.monitor is not None and cb.monitor.step_count == 30
    assert cb.monitor.findings == []
    assert any(r.sites for r in cb.monitor.history)  # it was watching


def test_update_ratio_is_that_of_the_whole_accumulated_step() -> None:
    # SGD without momentum: ||dw|| = lr * ||g|| for the gradient summed over both
    # micro-batches; the monitor reads g after the second one, before any clipping
    cb = VitalsCallback(every=2, lint=False)
    _fit(Regressor(lr=1e-3, adam=False), cb, max_steps=6, accumulate_grad_batches=2)
    assert cb.monitor is not None and cb.monitor.step_count == 6
    layers = [lay for rec in cb.monitor.history for lay in rec.layers.values() if lay.n_samples]
    assert layers
    for lay in layers:
        assert lay.update_norm == pytest.approx(1e-3 * lay.grad_norm, rel=1e-4)


def test_state_survives_a_checkpoint_resume(tmp_path: Path) -> None:
    cb = VitalsCallback(every=4, lint=False)
    trainer = _fit(Regressor(lr=1.0), cb, max_steps=30)
    path = str(tmp_path / "run.ckpt")
    trainer.save_checkpoint(path)
    saved = cb.state_dict()
    assert saved["findings"]

    ckpt = torch.load(path, weights_only=False)
    assert ckpt["callbacks"][cb.state_key] == saved

    resumed = VitalsCallback(every=4, lint=False)
    _fit(Regressor(lr=1.0), resumed, max_steps=30, ckpt_path=path)  # nothing left to run
    assert resumed.state_dict() == saved

    more = VitalsCallback(every=4, lint=False)
    _fit(Regressor(lr=1.0), more, max_steps=34, ckpt_path=path)
    assert more.monitor is not None and more.monitor.step_count == 34
    state = more.state_dict()
    assert state["findings"][: len(saved["findings"])] == saved["findings"]


def test_init_args_are_simple_and_typed() -> None:
    import inspect

    sig = inspect.signature(VitalsCallback.__init__)
    assert list(sig.parameters)[1:] == [
        "every",
        "samples",
        "log_dir",
        "thresholds",
        "lint",
        "console",
        "loggers",
        "sinks",
        "on_finding",
        "on_window",
        "stop_on",
        "repair",
        "policy",
    ]
    assert all(
        sig.parameters[n].kind is inspect.Parameter.KEYWORD_ONLY for n in list(sig.parameters)[7:]
    )
    cb = VitalsCallback(thresholds={"dead_fraction": 0.6})
    assert cb.state_dict() == {}


def test_pytorch_lightning_namespace_has_its_own_class() -> None:
    ptl = pytest.importorskip("pytorch_lightning")
    from gradvitals.lightning import PLVitalsCallback

    assert issubclass(PLVitalsCallback, ptl.Callback)
    assert issubclass(VitalsCallback, pl.Callback)

    class Legacy(ptl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return (self.net(x) - y).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    cb = PLVitalsCallback(every=2, lint=False)
    trainer = ptl.Trainer(
        accelerator="cpu",
        max_steps=4,
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(Legacy(), _loader())
    assert cb.monitor is not None and cb.monitor.step_count == 4


# -- outputs through trainer.loggers ------------------------------------------------------
def _csv_rows(trainer: pl.Trainer) -> list[dict[str, str]]:
    path = Path(trainer.logger.log_dir) / "metrics.csv"
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_vital_signs_go_through_the_trainers_csv_logger(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    cb = VitalsCallback(every=4, lint=False, console=False)
    trainer = _fit(Regressor(lr=1.0), cb, max_steps=30, logger=CSVLogger(tmp_path))
    assert cb.monitor is not None
    history, findings = cb.monitor.history, cb.monitor.findings
    assert findings  # the dying run of test_a_dying_run_is_found
    rows = [r for r in _csv_rows(trainer) if r.get("gradvitals/findings_count")]
    assert [int(r["step"]) for r in rows] == [rec.step for rec in history]
    losses = [(int(r["step"]), float(r["gradvitals/loss/train"])) for r in rows]
    want = [(rec.step, rec.loss.mean) for rec in history]
    assert [s for s, _ in losses] == [s for s, _ in want]
    assert [v for _, v in losses] == pytest.approx([v for _, v in want], rel=1e-6, nan_ok=True)
    counts = [int(float(r["gradvitals/findings_count"])) for r in rows]
    assert counts == [sum(f.step <= rec.step for f in findings) for rec in history]
    assert counts[0] < counts[-1] == len(findings)
    for rec, row in zip(history, rows, strict=True):  # every statistic, namespaced
        for tag, value in rec.scalars().items():
            assert float(row[f"gradvitals/{tag}"]) == pytest.approx(value, rel=1e-6)


def test_loggers_false_keeps_the_trainers_loggers_clean(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    cb = VitalsCallback(every=4, lint=False, console=False, loggers=False)
    trainer = _fit(Regressor(lr=1e-2), cb, max_steps=12, logger=CSVLogger(tmp_path))
    assert cb.monitor is not None and cb.monitor.history
    path = Path(trainer.logger.log_dir) / "metrics.csv"
    assert not path.exists() or "gradvitals/" not in path.read_text()


def test_tensorboard_logger_gets_findings_as_text_for_gradvitals_report(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    from gradvitals.report import read_run

    cb = VitalsCallback(every=4, lint=False, console=False)
    trainer = _fit(Regressor(lr=1.0), cb, max_steps=20, logger=TensorBoardLogger(tmp_path))
    assert cb.monitor is not None and cb.monitor.findings
    run = read_run(trainer.logger.log_dir)
    assert run.run_info["adapter"] == "lightning"
    assert [(f.kind, f.layer, f.step) for f in run.findings] == [
        (f.kind, f.layer, f.step) for f in cb.monitor.findings
    ]
    assert [s for s, _ in run.scalars["loss/train"]] == [r.step for r in cb.monitor.history]


# -- repair ---------------------------------------------------------------------------------
def test_a_failing_run_is_repaired_through_the_trainers_optimizer() -> None:
    cb = VitalsCallback(every=4, lint=False, console=False, repair=True)
    trainer = _fit(Regressor(lr=1.0), cb, max_steps=40)
    monitor = cb.monitor
    assert monitor is not None
    (rep,) = monitor.repairs
    assert (rep["kind"], rep["action"]) == ("exploding_gradient", "lower_lr")
    assert rep["rollback_step"] < rep["step"] and "lr 1 -> 0.1" in rep["reason"]
    assert rep["healthy_after"] is True
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1)
    assert all(f.step <= rep["step"] and not f.final for f in monitor.findings)
    assert math.isfinite(monitor.history[-1].loss.mean)


def test_repair_clips_where_lightning_has_the_gradients() -> None:
    # Lightning's optimizer.step(closure) runs backward inside the step, after any
    # step pre-hook: the clip must act in on_before_optimizer_step. SGD without
    # momentum: each update is lr x the clipped gradient, so its norm is lr x 1.0.
    from gradvitals import RepairPolicy

    policy = RepairPolicy(actions={"exploding_gradient": ["clip_grad_norm"]}, clip_norm=1.0)
    cb = VitalsCallback(every=4, lint=False, console=False, policy=policy)
    _fit(Regressor(lr=0.3, adam=False), cb, max_steps=24)
    monitor = cb.monitor
    assert monitor is not None
    (rep,) = monitor.repairs
    assert rep["action"] == "clip_grad_norm" and rep["healthy_after"] is True
    after = [
        r for r in monitor.history if r.step_start > rep["step"] and r.layers["net.0"].n_samples
    ]
    assert after
    for rec in after:
        update = math.sqrt(sum(lay.update_norm**2 for lay in rec.layers.values() if lay.n_samples))
        assert rec.total_grad_norm > 10.0  # far above the threshold: the clip acted
        assert update == pytest.approx(0.3 * 1.0, rel=1e-5)


def test_a_healthy_run_with_repair_is_untouched() -> None:
    plain = Regressor(lr=1e-2)
    _fit(plain, VitalsCallback(every=4, lint=False, console=False), max_steps=20)
    watched = Regressor(lr=1e-2)
    cb = VitalsCallback(every=4, lint=False, console=False, repair=True)
    _fit(watched, cb, max_steps=20)
    assert cb.monitor is not None and cb.monitor.repairs == [] and cb.monitor.findings == []
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b)
