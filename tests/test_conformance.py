"""One set of scripted scenarios, run through every adapter (the torchmetrics idea).

Every adapter (plain PyTorch, Lightning, Hugging Face ``Trainer``, Keras) trains the
same tiny regression net on the same data for the same scenarios, and must give the
same verdict: the same failure kind, in the same site, closed in the same window.
A new adapter gets these tests by adding one ``run_<adapter>`` function to ``ADAPTERS``;
a new mode by adding a scenario.

The net: ``hidden`` (Linear/Dense 8 -> 32) + ReLU + ``out`` (32 -> 1), MSE, SGD, batch
32, windows of every=8 steps with the 1, 2, 4 warm-up: [0], [1, 2], [3..6], [7..14]...
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import gradvitals

STEPS = 24
BATCH = 32
EVERY = 8
NAN_STEP = 5  # inside window [3..6]


@dataclass(frozen=True)
class Scenario:
    name: str
    lr: float
    hidden_bias: float = 0.0  # -50: every hidden unit is dead from step 0
    nan_step: int | None = None  # the batch of this step holds a NaN


SCENARIOS = {
    "healthy": Scenario("healthy", lr=0.01),
    "dead_at_init": Scenario("dead_at_init", lr=0.01, hidden_bias=-50.0),
    "nan_batch": Scenario("nan_batch", lr=0.01, nan_step=NAN_STEP),
}

#: (kind, step of the window that finds it); the site is checked per adapter
EXPECTED: dict[str, list[tuple[str, int]]] = {
    "healthy": [],
    "dead_at_init": [("dying_relu", 2)],  # dead in windows [0] and [1, 2]: patience 2
    "nan_batch": [("nonfinite", 6)],  # the window [3..6] holding step 5
}


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS * BATCH, 8)).astype("float32")
    w = rng.standard_normal((8, 1)).astype("float32")
    return x, (x @ w).astype("float32")


def batches(sc: Scenario) -> tuple[np.ndarray, np.ndarray]:
    x, y = data()
    if sc.nan_step is not None:
        x = x.copy()
        x[sc.nan_step * BATCH] = np.nan
    return x, y


def torch_net(sc: Scenario) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(hidden=nn.Linear(8, 32), act=nn.ReLU(), out=nn.Linear(32, 1)))
    with torch.no_grad():
        net.hidden.bias.fill_(sc.hidden_bias)  # type: ignore[union-attr]
    return net


@dataclass
class Verdict:
    findings: list[tuple[str, str | None, int]]  # (kind, layer, step)
    windows: int
    disabled: bool
    layers_watched: set[str]


def _verdict(collector: Any) -> Verdict:
    last = collector.history[-1] if collector.history else None
    return Verdict(
        findings=[(f.kind.value, f.layer, f.step) for f in collector.findings],
        windows=len(collector.history),
        disabled=collector.disabled,
        layers_watched=set(last.layers) if last is not None else set(),
    )


# -- the adapters ---------------------------------------------------------------------
def run_torch(sc: Scenario, tmp: Path) -> Verdict:
    net = torch_net(sc)
    opt = torch.optim.SGD(net.parameters(), lr=sc.lr)
    x, y = map(torch.from_numpy, batches(sc))
    with gradvitals.watch(net, opt, every=EVERY, lint=False, console=False) as mon:
        for t in range(STEPS):
            xb, yb = x[t * BATCH : (t + 1) * BATCH], y[t * BATCH : (t + 1) * BATCH]
            loss = nn.functional.mse_loss(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.observe_loss(loss)
    return _verdict(mon)


def run_lightning(sc: Scenario, tmp: Path) -> Verdict:
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from gradvitals.lightning import VitalsCallback

    class Module(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch_net(sc)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            xb, yb = batch
            return nn.functional.mse_loss(self.net(xb), yb)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=sc.lr)

    x, y = map(torch.from_numpy, batches(sc))
    cb = VitalsCallback(every=EVERY, lint=False, console=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=STEPS,
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False))
    assert cb.monitor is not None
    v = _verdict(cb.monitor)
    # the LightningModule holds the net as ``net``: names gain that prefix
    v.findings = [(k, (la or "").removeprefix("net.") or None, s) for k, la, s in v.findings]
    v.layers_watched = {n.removeprefix("net.") for n in v.layers_watched}
    return v


def run_huggingface(sc: Scenario, tmp: Path) -> Verdict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    from gradvitals.huggingface import VitalsCallback

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch_net(sc)

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.net(x)
            return {"loss": nn.functional.mse_loss(out, labels), "logits": out}

    x, y = map(torch.from_numpy, batches(sc))

    class Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"x": x[i], "labels": y[i]}

    class InOrder(Trainer):  # the scenarios fix which batch comes when
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            return torch.utils.data.SequentialSampler(self.train_dataset)

    cb = VitalsCallback(every=EVERY, lint=False, console=False)
    args = TrainingArguments(
        output_dir=str(tmp),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=sc.lr,
        optim="sgd",
        weight_decay=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        InOrder(model=Model(), args=args, train_dataset=Rows(), callbacks=[cb]).train()
    assert cb.monitor is not None
    v = _verdict(cb.monitor)
    v.findings = [(k, (la or "").removeprefix("net.") or None, s) for k, la, s in v.findings]
    v.layers_watched = {n.removeprefix("net.") for n in v.layers_watched}
    return v


def run_keras(sc: Scenario, tmp: Path) -> Verdict:
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    from gradvitals.keras import VitalsCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(
                32,
                activation="relu",
                name="hidden",
                bias_initializer=keras.initializers.Constant(sc.hidden_bias),
            ),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile(keras.optimizers.SGD(sc.lr), "mse")
    x, y = batches(sc)
    clean_x, clean_y = data()
    cb = VitalsCallback(probe=(clean_x[:256], clean_y[:256]), every=EVERY, samples=2, console=False)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    v = _verdict(cb)
    # Keras measures ``hidden``'s post-activation output; PyTorch its ReLU module ``act``
    v.findings = [(k, "act" if la == "hidden" else la, s) for k, la, s in v.findings]
    return v


ADAPTERS: dict[str, Callable[[Scenario, Path], Verdict]] = {
    "torch": run_torch,
    "lightning": run_lightning,
    "huggingface": run_huggingface,
    "keras": run_keras,
}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Verdict]:
    """Every adapter through every scenario, once per module."""
    out = {}
    for a, run in ADAPTERS.items():
        for s, sc in SCENARIOS.items():
            try:
                out[a, s] = run(sc, tmp_path_factory.mktemp(f"{a}-{s}"))
            except pytest.skip.Exception:
                continue
    return out


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_every_adapter_gives_the_same_verdict(
    verdicts: dict[tuple[str, str], Verdict], adapter: str, scenario: str
) -> None:
    if (adapter, scenario) not in verdicts:
        pytest.skip(f"{adapter} is not installed")
    v = verdicts[adapter, scenario]
    assert not v.disabled  # watched the whole time
    assert v.windows >= 4 and v.layers_watched >= {"hidden", "out"}
    assert [(k, s) for k, _, s in v.findings] == EXPECTED[scenario]
    if scenario == "dead_at_init":
        assert [la for _, la, _ in v.findings] == ["act"]


@pytest.mark.slow
def test_adapters_agree_on_window_counts(verdicts: dict[tuple[str, str], Verdict]) -> None:
    counts = {a: v.windows for (a, s), v in verdicts.items() if s == "healthy"}
    assert len(set(counts.values())) == 1, counts


# -- a state_dict round trip in the middle of an episode -------------------------------
def test_torch_state_round_trip_mid_episode_keeps_the_patience_counter() -> None:
    """Stop after window [0] (one dead window of two), resume in a fresh monitor: the
    finding comes at the same step as without the interruption."""
    sc = SCENARIOS["dead_at_init"]
    net = torch_net(sc)
    opt = torch.optim.SGD(net.parameters(), lr=sc.lr)
    x, y = map(torch.from_numpy, batches(sc))

    def steps(mon: Any, start: int, stop: int) -> None:
        for t in range(start, stop):
            xb, yb = x[t * BATCH : (t + 1) * BATCH], y[t * BATCH : (t + 1) * BATCH]
            loss = nn.functional.mse_loss(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.observe_loss(loss)

    first = gradvitals.watch(net, opt, every=EVERY, lint=False, console=False)
    steps(first, 0, 1)
    state = first.state_dict()
    first.close()
    assert state["detectors"]["dying_relu"]["masks"] and first.findings == []
    second = gradvitals.watch(net, opt, every=EVERY, lint=False, console=False)
    second.load_state_dict(state)
    steps(second, 1, 8)
    second.close()
    assert [(f.kind.value, f.layer, f.step) for f in second.findings] == [("dying_relu", "act", 2)]


def test_keras_state_round_trip_mid_episode_keeps_the_patience_counter() -> None:
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    from gradvitals.keras import VitalsCallback

    sc = SCENARIOS["dead_at_init"]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(
                32,
                activation="relu",
                name="hidden",
                bias_initializer=keras.initializers.Constant(-50.0),
            ),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile(keras.optimizers.SGD(sc.lr), "mse")
    x, y = batches(sc)
    probe = (x[:256], y[:256])
    first = VitalsCallback(probe=probe, every=EVERY, samples=2, console=False)
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0, callbacks=[first])
    state = first.state_dict()
    assert state["detectors"]["dying_relu"]["masks"] and first.findings == []
    second = VitalsCallback(probe=probe, every=EVERY, samples=2, console=False)
    second.load_state_dict(state)
    model.fit(
        x[BATCH : 8 * BATCH], y[BATCH : 8 * BATCH], batch_size=BATCH, verbose=0, callbacks=[second]
    )
    assert [(f.kind.value, f.layer, f.step) for f in second.findings] == [
        ("dying_relu", "hidden", 2)
    ]
