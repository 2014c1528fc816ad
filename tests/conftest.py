"""Shared fixtures: bundled data sets (no downloads) and a tiny training loop."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

torch.set_num_threads(1)  # tiny models: threads only contend

# An internal error raises instead of switching the monitor off, so that no test passes
# because the monitor went blind (subprocesses, e.g. the distributed workers, inherit it).
os.environ["GRADVITALS_STRICT"] = "1"


@functools.cache
def digits() -> tuple[Any, Any]:
    """scikit-learn's 8x8 digits, 1797 x 64 in [0, 1], 10 classes (bundled)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


@functools.cache
def tabular(name: str) -> tuple[Any, Any]:
    """A bundled scikit-learn table: 'breast_cancer', 'wine' (raw features)."""
    from sklearn import datasets

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return torch.tensor(np.asarray(x), dtype=torch.float32), torch.tensor(y)


def standardize(x: Any) -> Any:
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def mlp(
    act: Callable[[], nn.Module], depth: int, width: int, d_in: int = 64, d_out: int = 10
) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), act()]
        d = width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def train(
    model: nn.Module,
    opt: Any,
    data: tuple[Any, Any],
    *,
    steps: int = 200,
    batch: int = 64,
    seed: int = 1,
    watch: dict[str, Any] | None = None,
    loss_fn: Callable[..., Any] | None = None,
    xform: Callable[[Any, int], Any] | None = None,
) -> Any:
    """Train with a seeded batch order; returns the monitor (or None if watch is None)."""
    import gradvitals

    x, y = data
    g = torch.Generator().manual_seed(seed)
    loss_fn = loss_fn or nn.functional.cross_entropy
    monitor = gradvitals.watch(model, opt, console=False, **watch) if watch is not None else None
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb = x[idx] if xform is None else xform(x[idx], step)
        loss = loss_fn(model(xb), y[idx])
        if monitor is not None:
            monitor.observe_loss(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if monitor is not None:
        monitor.close()
    return monitor


def kinds(monitor: Any) -> set[tuple[str, str | None]]:
    return {(f.kind.value, f.layer) for f in monitor.findings}


@pytest.fixture(autouse=True)
def _quiet_gradvitals_logger() -> None:
    logging.getLogger("gradvitals").setLevel(logging.WARNING)
