"""Gradients that accumulate across steps because nobody zeroes them.

``torch_no_zero_grad`` (https://github.com/IBM/aihwkit/issues/446): the library's first
examples never called ``opt.zero_grad()``; over 10 iterations the loss went down, then up
again. Adding ``opt.zero_grad()`` at each iteration made it decrease steadily. Our
program: a digits MLP trained with plain SGD, without ``zero_grad``.

``torch_manual_update_no_zero`` (https://github.com/greebear/pytorch-learning/issues/1): a
linear-regression demo that updates ``w`` and ``b`` by hand did not decrease its loss
reliably, even with a learning rate of 1e-6, because it never zeroed ``w.grad`` and
``b.grad``; the fix adds ``w.grad.data.zero_()`` and ``b.grad.data.zero_()``. Our
program: the same hand-written loop on ``y = 2x + 3 + noise``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bugs import _data
from bugs._case import NULL_TAP, BugCase, Outcome
from bugs._registry import register
from bugs.torch_cases._common import as_tensors, mlp, outcome, seed_all
from gradvitals.findings import Cause, FailureMode


def run_no_zero_grad(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    model = mlp([64, 128, 10])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tap = watch(model, optimizer) if watch else NULL_TAP
    losses = []
    for idx in _data.batch_indices(len(x), 32, steps=steps, seed=seed):
        if variant == "fixed":
            optimizer.zero_grad()  # the fix; the buggy loop never clears .grad
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        tap.observe(loss)
        losses.append(loss.item())
    tap.close()
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


class Line(nn.Module):
    """``y = x w + b`` with the two tensors as parameters, as in the demo."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(1, 1))
        self.b = nn.Parameter(torch.zeros(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.b


def _line_batch(g: torch.Generator, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, generator=g) * 5
    return x, 2 * x + 3 + torch.randn(n, 1, generator=g)


def run_manual_update_no_zero(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 1000
    seed_all(seed)
    g = torch.Generator().manual_seed(seed)
    model = Line()
    lr = 0.02
    tap = watch(model, None) if watch else NULL_TAP
    losses = []
    for _ in range(steps):
        x, y = _line_batch(g)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        w_grad, b_grad = model.w.grad, model.b.grad
        assert w_grad is not None and b_grad is not None
        with torch.no_grad():  # the hand-written SGD step of the demo
            model.w.sub_(lr * w_grad)
            model.b.sub_(lr * b_grad)
        if variant == "fixed":  # the fix: zero the gradients after the update
            w_grad.zero_()
            b_grad.zero_()
        tap.step()
        tap.observe(loss)
        losses.append(loss.item())
    tap.close()
    x_test, y_test = _line_batch(torch.Generator().manual_seed(seed + 1), n=200)
    return outcome(losses, model, x_test, y_test, "r2", steps=steps)


register(
    BugCase(
        id="torch_no_zero_grad",
        url="https://github.com/IBM/aihwkit/issues/446",
        framework="torch",
        title="Examples miss opt.zero_grad(): the loss decreases, then increases",
        report=(
            "The first examples never called opt.zero_grad(), so the loss went down and "
            "then up again over the iterations. Adding opt.zero_grad() at every iteration "
            "made the loss decrease steadily."
        ),
        symptom=FailureMode.EXPLODING_GRADIENT,
        cause=Cause.MISSING_ZERO_GRAD,
        first_remedy="zero_grad",
        repairable=True,
        run=run_no_zero_grad,
        note=(
            "a digits MLP with SGD instead of an analog linear layer; repairable because a "
            "monitor could zero the gradients in the optimizer's post-step hook"
        ),
    )
)

register(
    BugCase(
        id="torch_manual_update_no_zero",
        url="https://github.com/greebear/pytorch-learning/issues/1",
        framework="torch",
        title="Hand-written linear regression: gradients never zeroed",
        report=(
            "A linear-regression demo that updates w and b by hand did not decrease its loss "
            "reliably, even with a learning rate of 1e-6. It never zeroed w.grad and b.grad; "
            "adding the two zero_() calls after each update fixed it."
        ),
        symptom=FailureMode.EXPLODING_GRADIENT,
        cause=Cause.MISSING_ZERO_GRAD,
        first_remedy="zero_grad",
        repairable=False,
        run=run_manual_update_no_zero,
        steps=1000,
        metric="r2",
        note="no optimizer object: the monitor counts steps through tap.step()",
    )
)
