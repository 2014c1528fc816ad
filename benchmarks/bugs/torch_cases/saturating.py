"""Deep stacks of saturating activations.

``torch_deep_sigmoid`` (https://github.com/phlippe/uvadlc_notebooks/issues/119): in the
course's activation-function tutorial (Tutorial 3), the MLP with sigmoid activations
(hidden sizes 512, 256, 256, 128, SGD with momentum) hardly trains while ReLU-family
networks reach good accuracy. The author confirmed that many sigmoid runs keep failing
even when trained longer (the early layers only learn when their gradients happen not to
cancel out), while better initialization, normalization or Adam make the MLP train; the
tutorial's ReLU-family networks train as they are.
Our program: the same MLP on digits; the fix swaps sigmoid for ReLU with He init.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bugs import _data
from bugs._case import BugCase, Outcome
from bugs._registry import register
from bugs.torch_cases._common import as_tensors, mlp, outcome, seed_all, train
from gradvitals.findings import Cause, FailureMode


def run_deep_sigmoid(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    act: Callable[[], nn.Module] = nn.Sigmoid if variant == "buggy" else nn.ReLU
    model = mlp([64, 512, 256, 256, 128, 10], act=act)
    if variant == "fixed":  # the fix: ReLU with He initialisation
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    losses = train(model, optimizer, x, y, F.cross_entropy, watch, steps=steps, seed=seed, batch=64)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


register(
    BugCase(
        id="torch_deep_sigmoid",
        url="https://github.com/phlippe/uvadlc_notebooks/issues/119",
        framework="torch",
        title="Tutorial's deep sigmoid MLP barely trains; ReLU-family networks do",
        report=(
            "In the activation-functions tutorial the sigmoid MLP reached a very poor test "
            "accuracy. The author confirmed that many sigmoid runs keep failing even with "
            "longer training, as the early layers barely learn. The tutorial's ReLU-family "
            "networks train well, as do sigmoid ones with better init, normalization or Adam."
        ),
        symptom=FailureMode.VANISHING_GRADIENT,
        cause=Cause.SATURATING_ACTIVATION,
        first_remedy="relu_he",
        repairable=False,
        run=run_deep_sigmoid,
        note="digits instead of FashionMNIST, 300 steps of batch 64",
    )
)
