"""An activation after the last layer that the loss does not expect.

``torch_relu_before_ce`` (https://github.com/pytorch/tutorials/issues/1526): the
"Learn the Basics" tutorial's network ended with ``nn.ReLU()`` after the logits layer and
was trained with ``nn.CrossEntropyLoss``; the issue asked to remove the final ReLU, and
the fix (https://github.com/pytorch/tutorials/pull/1644) removed it because the loss was
not computed correctly with it. Our program: the same kind of MLP on digits, SGD.

``torch_softmax_before_ce`` (https://github.com/MicrosoftDocs/ml-basics/issues/48): the
course's PyTorch model put a softmax on its last layer and trained with
``CrossEntropyLoss``, which expects logits (it applies log-softmax itself); the maintainer
fixed the notebook. Our program: a digits MLP ending
in ``nn.Softmax(dim=1)``, SGD.
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


def _train_classifier(
    out_act: Callable[[], nn.Module] | None, watch: Any, steps: int, seed: int
) -> Outcome:
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    model = mlp([64, 128, 128, 10], out_act=out_act)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = train(model, optimizer, x, y, F.cross_entropy, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


def run_relu_before_ce(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    return _train_classifier(nn.ReLU if variant == "buggy" else None, watch, steps or 300, seed)


def _softmax() -> nn.Module:
    return nn.Softmax(dim=1)


def run_softmax_before_ce(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    out_act = _softmax if variant == "buggy" else None
    return _train_classifier(out_act, watch, steps or 300, seed)


register(
    BugCase(
        id="torch_relu_before_ce",
        url="https://github.com/pytorch/tutorials/issues/1526",
        framework="torch",
        title="Tutorial model ends with a ReLU after the logits, before CrossEntropyLoss",
        report=(
            "The beginner tutorial's network applied nn.ReLU() to its logits and trained "
            "with CrossEntropyLoss, so the loss was not computed correctly (negative logits "
            "are clipped to 0). The merged fix removed the final ReLU."
        ),
        symptom=FailureMode.DYING_RELU,
        cause=Cause.OUTPUT_ACTIVATION,
        first_remedy="remove_output_activation",
        repairable=False,
        run=run_relu_before_ce,
        note="digits instead of FashionMNIST; SGD at lr 0.1",
    )
)

register(
    BugCase(
        id="torch_softmax_before_ce",
        url="https://github.com/MicrosoftDocs/ml-basics/issues/48",
        framework="torch",
        title="Softmax on the last layer, then CrossEntropyLoss",
        report=(
            "The course's PyTorch classifier ended with a softmax and was trained with "
            "CrossEntropyLoss, which expects logits and applies log-softmax itself, so the "
            "probabilities went through a second softmax. The maintainer fixed the notebook "
            "so that the model outputs logits."
        ),
        symptom=FailureMode.STALLED,
        cause=Cause.OUTPUT_ACTIVATION,
        first_remedy="remove_output_activation",
        repairable=False,
        run=run_softmax_before_ce,
        note=(
            "digits instead of penguins; SGD at lr 0.1. The report states no symptom: we "
            "label it stalled because the doubly-squashed loss barely moves"
        ),
    )
)
