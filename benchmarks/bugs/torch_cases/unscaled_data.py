"""Inputs and targets far from unit scale.

``torch_cubic_unscaled`` (https://discuss.pytorch.org/t/neural-network-could-not-learn-on-this-type-of-data-why/96648/5):
a one-hidden-layer network could not learn ``y = x**3`` for ``x`` from 1 to 3999 (targets
up to 6e10). The accepted answer normalizes the input and the target (subtract the mean,
divide by the standard deviation), trains on that, and un-normalizes the predictions
afterwards; the same network then fits the curve. Our program: the thread's network and
data, Adam at 1e-3, full batch, 80% of the points for training.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from bugs._case import BugCase, Outcome
from bugs._registry import register
from bugs.torch_cases._common import mlp, outcome, seed_all, train
from gradvitals.findings import Cause, FailureMode


def run_cubic_unscaled(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 500
    seed_all(seed)
    x = torch.arange(1, 4000, dtype=torch.float32).unsqueeze(1)
    y = x**3
    if variant == "fixed":  # the fix: standardize the input and the target
        x = (x - x.mean()) / x.std()
        y = (y - y.mean()) / y.std()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train_rows, test_rows = perm[:3200], perm[3200:]
    model = mlp([1, 50, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    full_batch = itertools.repeat(train_rows, steps)  # every step: the whole training set
    losses = train(
        model, optimizer, x, y, F.mse_loss, watch, steps=steps, seed=seed, batches=full_batch
    )
    return outcome(losses, model, x[test_rows], y[test_rows], "r2", steps=steps)


register(
    BugCase(
        id="torch_cubic_unscaled",
        url=(
            "https://discuss.pytorch.org/t/"
            "neural-network-could-not-learn-on-this-type-of-data-why/96648/5"
        ),
        framework="torch",
        title="A network cannot learn y = x^3 on raw inputs up to 4000",
        report=(
            "A small network could not learn y = x**3 for x from 1 to 3999: the targets "
            "reach 6e10 and the loss does not come down. The answer normalizes both the "
            "input and the target, trains on the normalized values and un-normalizes the "
            "predictions; the same network then fits the data."
        ),
        symptom=FailureMode.STALLED,
        cause=Cause.UNSCALED_DATA,
        first_remedy="normalize_data",
        repairable=False,
        run=run_cubic_unscaled,
        steps=500,
        metric="r2",
        note="R² is measured on 20% held-out points; 500 full-batch steps instead of 1000",
    )
)
