"""Initial weights that keep the network from learning.

``torch_zero_init`` (https://github.com/udacity/deep-learning-v2-pytorch/blob/master/weight-initialization/weight_initialization_exercise.ipynb):
the course's weight-initialization exercise trains the same MLP with every weight set to
0 (and to 1): all hidden units compute the same thing, receive the same gradient and stay
identical, and the network barely learns; random initialization fixes it. Our program: a
ReLU MLP on digits (256 and 128 hidden units, Adam, as in the exercise) with all weights
and biases 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bugs import _data
from bugs._case import BugCase, Outcome
from bugs._registry import register
from bugs.torch_cases._common import as_tensors, mlp, outcome, seed_all, train
from gradvitals.findings import Cause, FailureMode


def run_zero_init(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    model = mlp([64, 256, 128, 10])
    if variant == "buggy":
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.constant_(m.weight, 0.0)
                nn.init.constant_(m.bias, 0.0)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = train(model, optimizer, x, y, F.cross_entropy, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


register(
    BugCase(
        id="torch_zero_init",
        url=(
            "https://github.com/udacity/deep-learning-v2-pytorch/blob/master/"
            "weight-initialization/weight_initialization_exercise.ipynb"
        ),
        framework="torch",
        title="All weights initialised to zero: the network barely learns",
        report=(
            "The course exercise sets every weight to the same constant (0, then 1): all "
            "units of a layer compute and receive the same thing, so the network cannot "
            "learn distinct features and its accuracy stays near chance. Random "
            "initialization fixes it."
        ),
        symptom=FailureMode.STALLED,
        cause=Cause.BAD_INIT,
        first_remedy="reinit",
        repairable=True,
        run=run_zero_init,
        note="digits instead of FashionMNIST; course material rather than a bug report",
    )
)
