"""A new failure mode is one detector module plus one registry entry.

This file is that module: it defines a toy mode ("the loss stopped moving") with its
detector, registers it, and shows the finding flow through detection, the console, the
TensorBoard text and the HTML report, with no other file edited.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import gradvitals
from gradvitals.detectors import EdgeTrigger, Thresholds
from gradvitals.findings import Finding
from gradvitals.remedies import ModeSpec, get_mode, register_mode, remedies_for, unregister_mode
from gradvitals.stats import WindowRecord


class ToyMode(str, Enum):
    FLAT_LOSS = "flat_loss"


class FlatLossDetector:
    """Fires when the window's loss equals the previous window's to 6 digits."""

    kind = ToyMode.FLAT_LOSS

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.trigger = EdgeTrigger(patience=2, recover=1)
        self.last: float | None = None

    def update(self, record: WindowRecord) -> list[Finding]:
        loss = record.loss.mean if record.loss is not None and record.loss.count else math.nan
        flat = self.last is not None and abs(loss - self.last) < 1e-6
        self.last = loss
        if not self.trigger.observe("model", flat):
            return []
        return [Finding(self.kind, None, record.step, f"the loss stayed at {loss:.4g}")]  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger.state_dict(), "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trigger.load_state_dict(state["trigger"])
        self.last = state["last"]

    def rearm(self, forget_history: bool = False) -> None:
        self.trigger.reset()


@pytest.fixture
def toy_mode() -> Iterator[ModeSpec]:
    spec = register_mode(
        ModeSpec(
            ToyMode.FLAT_LOSS,
            urgency=5,
            summary="the loss stopped moving",
            detector=FlatLossDetector,
            run_order=50,
            remedies=("lower_lr",),
        )
    )
    yield spec
    unregister_mode(ToyMode.FLAT_LOSS)


def _run(log_dir: Path, lr: float) -> gradvitals.torch.Monitor:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    with gradvitals.watch(model, opt, every=4, log_dir=str(log_dir), lint=False) as mon:
        for _ in range(24):
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.observe_loss(loss)
    return mon


def test_a_toy_mode_flows_through_detection_console_tensorboard_and_html(
    toy_mode: ModeSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gradvitals.report import read_run, write_report

    with caplog.at_level(logging.WARNING, logger="gradvitals"):
        mon = _run(tmp_path / "flat", lr=0.0)  # lr 0: the loss never moves
    flat = [f for f in mon.findings if f.kind is ToyMode.FLAT_LOSS]
    assert len(flat) == 1 and flat[0].remedies[0].key == "lower_lr"
    assert "flat_loss" in caplog.text and "the loss stayed at" in caplog.text
    run = read_run(tmp_path / "flat")
    # lr 0 is also what the built-in stalled mode finds; the toy finding flows alongside
    assert [f.kind for f in run.findings if f.kind is ToyMode.FLAT_LOSS] == [ToyMode.FLAT_LOSS]
    page = write_report(tmp_path / "flat", tmp_path / "flat.html")
    html = Path(page).read_text()
    assert "flat_loss" in html and "the loss stayed at" in html


def test_the_toy_mode_is_quiet_on_a_run_that_learns(toy_mode: ModeSpec, tmp_path: Path) -> None:
    mon = _run(tmp_path / "learns", lr=0.05)
    assert mon.findings == [] and len(mon.history) > 4


def test_the_registry_knows_the_toy_mode_only_while_registered(toy_mode: ModeSpec) -> None:
    assert get_mode("flat_loss") is toy_mode
    assert [r.key for r in remedies_for(ToyMode.FLAT_LOSS)] == ["lower_lr"]
    assert "flat_loss" in gradvitals.DetectorSuite().state_dict()
    unregister_mode(ToyMode.FLAT_LOSS)
    assert "flat_loss" not in gradvitals.DetectorSuite().state_dict()
    with pytest.raises(ValueError, match="no failure mode 'flat_loss' is registered"):
        get_mode("flat_loss")
