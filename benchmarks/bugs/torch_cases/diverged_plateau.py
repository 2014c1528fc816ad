"""Runs knocked off their basin by too large a step: the loss jumps and stays high.

``torch_resume_lr_jump`` (https://github.com/MIC-DKFZ/nnUNet/issues/197): after training
to the end of its polynomial learning-rate schedule, the user raised the maximum number of
epochs and resumed; the loss jumped up at the resume point and did not come back down
for a long time. The maintainer: the learning rate is tied to the progress in epochs,
so raising the maximum makes it jump back up from almost zero; keep the schedule (or
train with the larger maximum from the start). Our program: a digits MLP with nnU-Net's
optimizer (SGD, Nesterov momentum 0.99), poly schedule and nonlinearity (LeakyReLU,
slope 0.01), lr0 0.1, resumed after a planned 300 steps with the maximum raised 4x to
1200, so that the learning rate jumps back to 0.77 lr0; the fix keeps the learning rate
where the first schedule ended. The report does not say by how much the maximum was
raised. With plain ReLUs and a 2x raise (our first re-derivation) the jump only hurt
when lr0 was so large that half the first layer's units died before the resume, in the
fixed program too; with LeakyReLU and a 2x raise the jump (0.54 lr0) costs only
1-6 accuracy points.

``torch_spike_no_recovery`` (https://github.com/stas00/ml-engineering/issues/32): loss
spikes that do not fully recover are common at scale; the maintainer's practice is to
roll back to a checkpoint 10-100 steps before the spike and lower the learning rate (or
change the data). Our program: a digits MLP with Adam at 0.05, whose loss spikes and
settles well above its best; the fix trains at a 10x lower learning rate.
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


def poly_lr(lr0: float, step: int, total: int) -> float:
    """nnU-Net's schedule: ``lr0 * (1 - step / total) ** 0.9``."""
    return lr0 * (1 - step / total) ** 0.9


def run_resume_lr_jump(
    variant: str, watch: Any, steps: int, seed: int, *, lr0: float = 0.1, grow: int = 4
) -> Outcome:
    """``grow``: how many times the resumed maximum exceeds the first run's plan."""
    steps = steps or 1200
    first = max(1, steps // grow)  # the first run's planned length
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    model = mlp([64, 128, 128, 10], act=lambda: nn.LeakyReLU(0.01))  # nnU-Net's nonlinearity
    optimizer = torch.optim.SGD(model.parameters(), lr=lr0, momentum=0.99, nesterov=True)
    tap = watch(model, optimizer) if watch else NULL_TAP
    losses = []
    for step, idx in enumerate(_data.batch_indices(len(x), 32, steps=steps, seed=seed)):
        if step < first:
            lr = poly_lr(lr0, step, first)
        elif variant == "buggy":  # resumed with the maximum raised: the lr jumps back up
            lr = poly_lr(lr0, step, steps)
        else:  # the fix: keep the schedule where it ended
            lr = poly_lr(lr0, first - 1, first)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tap.observe(loss)
        losses.append(loss.item())
    tap.close()
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


register(
    BugCase(
        id="torch_resume_lr_jump",
        url="https://github.com/MIC-DKFZ/nnUNet/issues/197",
        framework="torch",
        title="Resuming with more epochs: the poly learning rate jumps back up",
        report=(
            "After raising the maximum number of epochs and resuming a finished training, "
            "the loss jumped up at the resume point and stayed high. The maintainer "
            "explained that the poly learning rate is tied to epoch progress and jumps back "
            "up from almost zero; the schedule must be kept (or the longer run planned from "
            "the start)."
        ),
        symptom=FailureMode.DIVERGED_PLATEAU,
        cause=Cause.LEARNING_RATE,
        first_remedy="lower_lr",
        repairable=True,
        run=run_resume_lr_jump,
        steps=1200,
        note=(
            "LeakyReLU digits MLP; lr0 = 0.1 instead of nnU-Net's 0.01, which this small MLP "
            "tolerates, and the maximum raised 4x (300 -> 1200 steps): with ReLUs and a 2x "
            "raise the jump hurt only at an lr0 that killed half the first layer's units "
            "in the fixed program too"
        ),
    )
)


def run_spike_no_recovery(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 400
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    model = mlp([64, 128, 128, 128, 10])
    lr = 0.05 if variant == "buggy" else 0.005
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = train(model, optimizer, x, y, F.cross_entropy, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


register(
    BugCase(
        id="torch_spike_no_recovery",
        url="https://github.com/stas00/ml-engineering/issues/32",
        framework="torch",
        title="Loss spikes that do not fully recover",
        report=(
            "Training loss spiked and settled above its earlier level instead of recovering. "
            "The maintainer's practice: roll back to a checkpoint some 10-100 steps before "
            "the spike and lower the learning rate (or change the data), watching the "
            "gradient norm."
        ),
        symptom=FailureMode.DIVERGED_PLATEAU,
        cause=Cause.LEARNING_RATE,
        first_remedy="lower_lr",
        repairable=True,
        run=run_spike_no_recovery,
        steps=400,
        note="a 3x128 digits MLP with Adam at lr 0.05 instead of a large language model",
    )
)
