"""One seeded mini-batch training run, optionally watched by gradvitals.

>>> import torch
>>> from gradvitals.lab._data import toy
>>> from gradvitals.lab._nets import mlp
>>> torch.manual_seed(0) and None
>>> data = toy("moons", n=200, seed=0)
>>> log = train(mlp(2, 16, 2, 2, "relu"), data, steps=50, lr=0.1, seed=0)
>>> log.steps, log.first_nonfinite, log.final_loss < log.losses[0]
(50, None, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradvitals.lab._data import Split
from gradvitals.lab._nets import accuracy

__all__ = ["RunLog", "train"]


@dataclass
class RunLog:
    """What happened in one run.

    Attributes:
        losses: the training loss of every step (NaN/Inf included).
        steps: optimizer steps taken.
        first_nonfinite: the first step whose loss was NaN/Inf, else None.
        reached: the first step (a multiple of ``eval_every``) at which the training
            accuracy reached ``target``, else None.
        seconds: wall time of the loop.
        monitor: the gradvitals monitor (closed), when the run was watched.
        evals: ``(step, training accuracy)`` at each evaluation.
    """

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    first_nonfinite: int | None = None
    reached: int | None = None
    seconds: float = 0.0
    monitor: Any = None
    evals: list[tuple[int, float]] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan

    @property
    def diverged(self) -> bool:
        """The loss went NaN/Inf, or ended above 10x its first value."""
        if self.first_nonfinite is not None:
            return True
        return bool(self.losses) and self.final_loss > 10 * self.losses[0]


def train(
    model: nn.Module,
    data: Split,
    *,
    steps: int,
    lr: float,
    seed: int,
    batch: int = 64,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    clip: float | None = None,
    watch: bool = False,
    log_dir: str | None = None,
    every: int = 20,
    samples: int = 2,
    target: float | None = None,
    eval_every: int = 10,
    stop_after_nonfinite: int = 0,
) -> RunLog:
    """Train ``model`` on ``data`` with cross-entropy; batches drawn with ``seed``.

    Args:
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``; ``batch=0`` is full batch.
        clip: clip the global gradient norm to this value (``clip_grad_norm_``).
        watch: attach ``gradvitals.watch(model, opt, every=..., samples=..., log_dir=...)``
            and call ``monitor.observe_loss(loss)`` right after the loss.
        target: stop once the training accuracy (checked every ``eval_every`` steps)
            reaches it; the step is ``RunLog.reached``.
        stop_after_nonfinite: steps to keep going after the first NaN/Inf loss.
    """
    import gradvitals

    x, y = data.x_train, data.y_train
    gen = torch.Generator().manual_seed(seed)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: sgd, adam")
    monitor = None
    if watch or log_dir is not None:
        monitor = gradvitals.watch(
            model, opt, every=every, samples=samples, log_dir=log_dir, console=False
        )
    log = RunLog(monitor=monitor)
    loss_fn = nn.functional.cross_entropy
    t0 = time.perf_counter()
    model.train()
    try:
        for step in range(steps):
            if batch and batch < len(x):
                idx = torch.randint(0, len(x), (batch,), generator=gen)
                xb, yb = x[idx], y[idx]
            else:
                xb, yb = x, y
            loss = loss_fn(model(xb), yb)
            if monitor is not None:
                monitor.observe_loss(loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            value = float(loss.detach())
            log.losses.append(value)
            log.steps = step + 1
            if not math.isfinite(value) and log.first_nonfinite is None:
                log.first_nonfinite = step
            if log.first_nonfinite is not None and step - log.first_nonfinite >= (
                stop_after_nonfinite
            ):
                break
            if target is not None and (step + 1) % eval_every == 0:
                acc = accuracy(model, x, y)
                log.evals.append((step + 1, acc))
                if acc >= target:
                    log.reached = step + 1
                    break
    finally:
        log.seconds = time.perf_counter() - t0
        if monitor is not None:
            monitor.close()
    return log
