"""Non-finite values in the data: NaN pixels in a few inputs, NaN labels in a few targets.

``torch_nan_inputs`` (https://github.com/prs-eth/Marigold/issues/111): training printed
``loss=nan`` from some step on, whatever the learning rate. Another user found that it
happened exactly when an input batch held NaN values, and the maintainers' answer was to
check the data (inputs and ground truth) for NaN. Our program: digits with 1% of the
training images carrying a few NaN pixels (unreadable pixels); the fix drops those rows.

``torch_nan_targets`` (https://github.com/pyg-team/pytorch_geometric/pull/8001): the
Papers100M example produced NaN losses because some training nodes had NaN labels; the
pull request makes sure no batch carries a NaN label. Our program: a regression on the
diabetes measurements with 2% of the training targets missing (NaN); the fix drops them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bugs import _data
from bugs._case import BugCase, Outcome
from bugs._registry import register
from bugs.torch_cases._common import as_tensors, mlp, outcome, seed_all, train
from gradvitals.findings import Cause, FailureMode


def run_nan_inputs(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    xtr, ytr, xte, yte = _data.digits(seed)
    rng = np.random.default_rng(seed)
    bad_rows = rng.choice(len(xtr), size=len(xtr) // 100, replace=False)
    for r in bad_rows:  # a few unreadable pixels in 1% of the images
        xtr[r, rng.choice(64, size=3, replace=False)] = np.nan
    if variant == "fixed":  # the fix: drop the rows that hold a NaN before training
        keep = ~np.isnan(xtr).any(axis=1)
        xtr, ytr = xtr[keep], ytr[keep]
    x, y, x_test, y_test = as_tensors(xtr, ytr, xte, yte)

    model = mlp([64, 128, 10])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = train(model, optimizer, x, y, F.cross_entropy, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


def mse_of_column(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a one-column output against a vector of targets."""
    return F.mse_loss(out.squeeze(1), target)


def run_nan_targets(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    xtr, ytr, xte, yte = _data.diabetes(seed, standardize=True)
    rng = np.random.default_rng(seed)
    ytr[rng.choice(len(ytr), size=len(ytr) // 50, replace=False)] = np.nan  # missing labels
    if variant == "fixed":  # the fix: no batch may carry a NaN label
        keep = ~np.isnan(ytr)
        xtr, ytr = xtr[keep], ytr[keep]
    x, y, x_test, y_test = as_tensors(xtr, ytr, xte, yte)

    model = mlp([10, 64, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = train(model, optimizer, x, y, mse_of_column, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "r2", steps=steps)


register(
    BugCase(
        id="torch_nan_inputs",
        url="https://github.com/prs-eth/Marigold/issues/111",
        framework="torch",
        title="loss=nan during training; the input batch contained NaN values",
        report=(
            "Training shows loss=nan and lowering the learning rate does not help. A user "
            "traced it to input batches that contained NaN values, and the maintainers "
            "advised checking the inputs and ground truth for NaN; cleaning the data fixed it."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.NONFINITE_INPUT,
        first_remedy="clean_inputs",
        repairable=True,
        run=run_nan_inputs,
        note="digits MLP instead of a diffusion U-Net; 1% of the images get 3 NaN pixels",
    )
)

register(
    BugCase(
        id="torch_nan_targets",
        url="https://github.com/pyg-team/pytorch_geometric/pull/8001",
        framework="torch",
        title="NaN losses from NaN labels in a batch (Papers100M example)",
        report=(
            "The Papers100M training example produced NaN losses because some nodes in a "
            "batch carried NaN labels. The fix makes sure no training batch contains a NaN "
            "label."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.NONFINITE_TARGET,
        first_remedy="clean_targets",
        repairable=True,
        run=run_nan_targets,
        metric="r2",
        note="a diabetes regression MLP instead of a GNN; 2% of the training targets are NaN",
    )
)
