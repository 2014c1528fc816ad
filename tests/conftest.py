"""Shared fixtures: bundled data sets (no downloads) and a tiny training loop.

Two environment variables let the suite be checked for machine independence (see
docs/testing.md):

- ``GRADVITALS_TEST_THREADS`` (default 1): torch's intra-op threads during every test.
  Another thread count splits reductions differently, as another CPU would.
- ``GRADVITALS_TEST_SEED_OFFSET`` (default 0): added to every ``torch.manual_seed(n)``
  a test (or the code under test) makes, and to the seeds of the batch orders of the
  shared training loops, so each seeded run follows another trajectory, as it would
  on a CPU whose floating-point kernels round differently.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

#: intra-op threads for every test (tiny models: more threads only contend)
THREADS = int(os.environ.get("GRADVITALS_TEST_THREADS", "1"))
#: added to the seeds of seeded runs, to simulate another machine's trajectory
SEED_OFFSET = int(os.environ.get("GRADVITALS_TEST_SEED_OFFSET", "0"))

torch.set_num_threads(THREADS)

# torch.compile's kernel cache is keyed without ATEN_CPU_CAPABILITY: kernels built under
# one capability and loaded under another compute garbage (seen: a bias gradient of
# 3.7e25 under avx2 with a cache written under avx512). One cache per capability.
_capability = os.environ.get("ATEN_CPU_CAPABILITY")
if _capability and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"gradvitals-tests-inductor-{_capability}-{getpass.getuser()}"
    )

if SEED_OFFSET:
    _manual_seed = torch.manual_seed

    def _offset_manual_seed(seed: int) -> Any:
        return _manual_seed(int(seed) + SEED_OFFSET)

    torch.manual_seed = _offset_manual_seed  # type: ignore[assignment]
    torch.random.manual_seed = _offset_manual_seed  # type: ignore[assignment]


def seeded(seed: int) -> int:
    """``seed`` shifted by ``GRADVITALS_TEST_SEED_OFFSET``: for generators and frameworks
    whose seeding does not go through ``torch.manual_seed``."""
    return seed + SEED_OFFSET


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
    g = torch.Generator().manual_seed(seeded(seed))
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


@pytest.fixture(autouse=True)
def _threads() -> None:
    """Every test starts with ``THREADS`` threads, whatever an imported module set."""
    torch.set_num_threads(THREADS)
