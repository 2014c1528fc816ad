"""Losses written in a numerically unsafe way: ``log(softmax(x))``, ``log`` of a sigmoid
probability that rounded to exactly 0 or 1.

``torch_log_of_softmax`` (https://github.com/pytorch/pytorch/issues/1620): a loss written
as ``NLLLoss(torch.log(Softmax(x)))`` sometimes gave NaN gradients where
``NLLLoss(LogSoftmax(x))`` gave correct ones, on inputs with large values. When one logit
is ~100 below the largest, its softmax probability underflows to 0, ``log`` gives
``-inf`` and the backward pass multiplies 0 by infinity. The fix is ``log_softmax``
(``nn.LogSoftmax``, or ``cross_entropy`` on the logits). Our program: a two-class MLP on
the raw breast-cancer measurements (up to ~4000, not rescaled), so that logits are large.

``torch_bce_log_zero`` (https://github.com/NVIDIA/apex/issues/358): a hand-written focal
(binary cross-entropy) loss ``y*log(p) + (1-y)*log(1-p)`` gave NaN. The answer showed it
is NaN in FP32 too as soon as a prediction is exactly 0 or 1 (``0 * log(0)``), and
suggested adding an epsilon inside the logs (``log(p + eps)``). Our program: an MLP on the
breast-cancer measurements whose confident predictions round to exactly 1.0.

``torch_masked_mean_empty`` (https://github.com/MhLiao/DB/issues/14): the masked L1 loss
``(|pred - gt| * mask).sum() / mask.sum()`` becomes NaN when a batch's mask is all zero;
the maintainer agreed and fixed it. Our program: a
digits classifier with an auxiliary regression head whose target (the image's ink) is
known for only 10% of the images, so some batches carry no auxiliary target; our fix skips
the term when the mask is empty (the issue does not show the maintainer's exact change).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bugs import _data
from bugs._case import NULL_TAP, BugCase, Outcome
from bugs._registry import register
from bugs.torch_cases._common import as_tensors, mlp, outcome, seed_all, train
from gradvitals.findings import Cause, FailureMode


def nll_of_log_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reported loss: ``log`` of a softmax, which underflows to ``log(0) = -inf``."""
    return F.nll_loss(torch.log(torch.softmax(logits, dim=1)), labels)


def nll_of_fused_log_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The fix: the fused, stable ``log_softmax``."""
    return F.nll_loss(F.log_softmax(logits, dim=1), labels)


def run_log_of_softmax(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.breast_cancer(seed, standardize=False))
    model = mlp([30, 64, 2])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nll_of_log_softmax if variant == "buggy" else nll_of_fused_log_softmax
    losses = train(model, optimizer, x, y, loss_fn, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


def run_bce_log_zero(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    xtr, ytr, xte, yte = _data.breast_cancer(seed)
    x, y, x_test, y_test = as_tensors(xtr, ytr.astype("float32"), xte, yte)
    model = mlp([30, 64, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    eps = 1e-7 if variant == "fixed" else 0.0  # the fix: an epsilon inside the logs

    def bce(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(out.squeeze(1))
        return -(t * torch.log(p + eps) + (1 - t) * torch.log(1 - p + eps)).mean()

    losses = train(model, optimizer, x, y, bce, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


class TwoHeads(nn.Module):
    """A shared trunk with a 10-class head and a scalar regression head."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(64, 128), nn.ReLU())
        self.cls = nn.Linear(128, 10)
        self.reg = nn.Linear(128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.cls(h), self.reg(h).squeeze(1)


def masked_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, guard: bool
) -> torch.Tensor:
    """Mean absolute error over the rows where ``mask`` is 1."""
    count = mask.sum()
    if guard and count.item() == 0:  # the fix: no labelled row, no auxiliary loss
        return (pred * 0).sum()
    return ((pred - target).abs() * mask).sum() / count


def run_masked_mean_empty(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    xtr, ytr, xte, yte = _data.digits(seed)
    x, y, x_test, y_test = as_tensors(xtr, ytr, xte, yte)
    ink = x.mean(1)  # auxiliary target, known for 10% of the images only
    g = torch.Generator().manual_seed(seed)
    known = (torch.rand(len(x), generator=g) < 0.1).float()
    model = TwoHeads()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tap = watch(model, optimizer) if watch else NULL_TAP
    losses = []
    for idx in _data.batch_indices(len(x), 16, steps=steps, seed=seed):
        logits, aux = model(x[idx])
        aux_loss = masked_l1(aux, ink[idx], known[idx], guard=variant == "fixed")
        loss = F.cross_entropy(logits, y[idx]) + aux_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tap.observe(loss)
        losses.append(loss.item())
    tap.close()
    return outcome(
        losses, model, x_test, y_test, "accuracy", steps=steps, predict=lambda t: model(t)[0]
    )


register(
    BugCase(
        id="torch_log_of_softmax",
        url="https://github.com/pytorch/pytorch/issues/1620",
        framework="torch",
        title="torch.log(Softmax(x)) gives NaN gradients where LogSoftmax does not",
        report=(
            "A loss written as NLLLoss(torch.log(Softmax(x))) sometimes produced NaN "
            "gradients on inputs with large values, while NLLLoss(LogSoftmax(x)) was fine. "
            "A probability that underflows to 0 makes log return -inf; the fix is the fused, "
            "stable log_softmax."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.UNSTABLE_LOSS,
        first_remedy="stable_loss",
        repairable=False,
        run=run_log_of_softmax,
        note="a two-class MLP on the raw (unscaled) breast-cancer measurements, Adam at 3e-3",
    )
)

register(
    BugCase(
        id="torch_bce_log_zero",
        url="https://github.com/NVIDIA/apex/issues/358",
        framework="torch",
        title="Hand-written BCE/focal loss: log(p) of a prediction that is exactly 0 or 1",
        report=(
            "A hand-written focal loss of sigmoid probabilities returned NaN. The answer "
            "showed that it is NaN in FP32 too as soon as a prediction is exactly 0 or 1 "
            "(0 times log 0), and that adding a small epsilon inside the logs fixes it."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.UNSTABLE_LOSS,
        first_remedy="guard_op",
        repairable=False,
        run=run_bce_log_zero,
        note="gamma = 0 (plain BCE) on the breast-cancer measurements",
    )
)

register(
    BugCase(
        id="torch_masked_mean_empty",
        url="https://github.com/MhLiao/DB/issues/14",
        framework="torch",
        title="Masked L1 loss divides by mask.sum(), which can be 0",
        report=(
            "The L1 loss is summed over a mask and divided by mask.sum(); when a batch's "
            "mask is all zero this is 0/0 and the loss is NaN. The maintainer agreed and "
            "fixed the empty-mask case."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.UNSTABLE_LOSS,
        first_remedy="guard_op",
        repairable=True,
        run=run_masked_mean_empty,
        note="an auxiliary ink-regression head on digits, its target known for 10% of rows",
    )
)
