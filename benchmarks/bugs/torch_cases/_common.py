"""Shared plumbing of the PyTorch cases: tensors, seeding, small MLPs, the standard
training loop and the outcome.

:func:`train` is the plain supervised loop (forward, ``zero_grad``, ``backward``,
``step``) that most cases run unchanged: their bug is in the model, the data, the
initialization, the optimizer's settings or the loss function. A case whose bug lives in
the loop itself (a missing ``zero_grad``, a hand-written update, a loss rebuilt from
``.item()``, the learning rate set inside the loop, clipping added by the fix) writes its
loop out in its own file instead.

>>> import torch
>>> import torch.nn.functional as F
>>> from torch import nn
>>> model = mlp([4, 8, 3])
>>> [type(m).__name__ for m in model]
['Linear', 'ReLU', 'Linear']
>>> x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
>>> o = outcome([1.0, 0.5], model, x, y, "accuracy", steps=2)
>>> o.metric_name, o.nonfinite, o.final_loss
('accuracy', False, 0.75)
>>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
>>> losses = train(model, optimizer, x, y, F.cross_entropy, None, steps=3, seed=0, batch=4)
>>> len(losses), all(v > 0 for v in losses)
(3, True)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from bugs import _data
from bugs._case import NULL_TAP, Outcome, Tap, final_loss

__all__ = [
    "as_tensors",
    "attach",
    "evaluate",
    "finite_params",
    "mlp",
    "outcome",
    "seed_all",
    "train",
]


def seed_all(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def as_tensors(*arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
    """numpy -> torch, keeping int64 labels and float32 features/targets."""
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def mlp(
    sizes: Sequence[int],
    act: Callable[[], nn.Module] = nn.ReLU,
    out_act: Callable[[], nn.Module] | None = None,
) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``act`` between them (and ``out_act`` after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    if out_act is not None:
        layers.append(out_act())
    return nn.Sequential(*layers)


def finite_params(model: nn.Module) -> bool:
    """Every parameter is finite."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def attach(watch: Any, model: nn.Module, optimizer: Any, scheduler: Any = None) -> Tap:
    """The runner's tap on ``model`` (:data:`~bugs._case.NULL_TAP` when unwatched); a
    ``scheduler`` is handed over so that a repair can act on it."""
    if not watch:
        return NULL_TAP
    if scheduler is None:
        return watch(model, optimizer)
    return watch(model, optimizer, scheduler=scheduler)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Any,
    y: torch.Tensor,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    watch: Any,
    *,
    steps: int,
    seed: int,
    batch: int = 32,
    scheduler: Any = None,
    batches: Iterable[Any] | None = None,
) -> list[float]:
    """The standard supervised loop; returns the training loss of every step.

    Each step takes the next minibatch ``idx`` of
    :func:`~bugs._data.batch_indices` (``batch`` rows, ``steps`` of them, shuffled by
    ``seed``; ``batches`` replaces them, e.g. the same full batch every step) and runs
    ``loss = loss_fn(model(x[idx]), y[idx])``, ``optimizer.zero_grad()``,
    ``loss.backward()``, ``optimizer.step()``, then ``scheduler.step()`` if given. The
    runner's ``watch`` is attached before the first step (:func:`attach`), sees every
    loss and is closed after the last.
    """
    tap = attach(watch, model, optimizer, scheduler)
    if batches is None:
        batches = _data.batch_indices(len(x), batch, steps=steps, seed=seed)
    losses = []
    for idx in batches:
        loss = loss_fn(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        tap.observe(loss)
        losses.append(loss.item())
    tap.close()
    return losses


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor], x: Any, y: torch.Tensor, metric: str
) -> float:
    """Held-out accuracy (argmax of the logits; one column = sign of the logit) or R²;
    NaN when a prediction is not finite."""
    out = predict(x).float()
    if not bool(torch.isfinite(out).all()):
        return float("nan")
    if metric == "accuracy":
        pred = (
            (out.reshape(-1) > 0).long() if out.ndim == 1 or out.shape[-1] == 1 else out.argmax(-1)
        )
        return float((pred == y.reshape(-1)).float().mean())
    out, y = out.reshape(-1), y.float().reshape(-1)
    ss_res = float(((out - y) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot


def outcome(
    losses: Sequence[float],
    model: nn.Module,
    x_test: Any,
    y_test: torch.Tensor,
    metric: str,
    *,
    steps: int,
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Outcome:
    """The :class:`Outcome` of a finished run (the model is put in eval mode)."""
    model.eval()
    value = evaluate(predict or model, x_test, y_test, metric)
    nonfinite = (
        not all(math.isfinite(v) for v in losses)
        or not finite_params(model)
        or not math.isfinite(value)
    )
    return Outcome(
        final_loss=final_loss(losses),
        metric=value,
        metric_name=metric,
        nonfinite=nonfinite,
        steps=len(losses) if losses else steps,
    )
