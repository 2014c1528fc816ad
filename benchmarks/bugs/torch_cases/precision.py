"""Half precision without the safeguards it needs.

``torch_fp16_adam_eps`` (https://github.com/pytorch/pytorch/issues/8860): a network
converted to half precision (``model.half()``) trained with Adam gave a NaN loss after a
few iterations; the reporter solved it by setting Adam's ``eps=1e-4`` (and clamping the
convolution outputs). https://github.com/afiaka87/glide-finetune/issues/5 explains the
mechanism: the default ``eps=1e-8`` rounds to 0 in float16 and the second-moment estimate
of small gradients underflows to 0 too, so the update divides by 0. Our program: a digits
MLP in float16 with Adam; the fix sets ``eps=1e-4``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bugs import _data
from bugs._case import BugCase, Outcome
from bugs._registry import register
from bugs.torch_cases._common import as_tensors, mlp, outcome, seed_all, train
from gradvitals.findings import Cause, FailureMode


def cross_entropy_fp32(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of float16 logits, computed in float32."""
    return F.cross_entropy(logits.float(), labels)


def run_fp16_adam_eps(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    x, x_test = x.half(), x_test.half()
    model = mlp([64, 128, 10]).half()
    eps = 1e-8 if variant == "buggy" else 1e-4  # the fix: an eps float16 can represent
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=eps)
    losses = train(model, optimizer, x, y, cross_entropy_fp32, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


register(
    BugCase(
        id="torch_fp16_adam_eps",
        url="https://github.com/pytorch/pytorch/issues/8860",
        framework="torch",
        title="NaN loss when training in half precision with Adam",
        report=(
            "After model.half(), training with Adam gave a NaN loss within a few iterations. "
            "The reporter fixed it by setting Adam's eps to 1e-4 (and clamping conv outputs): "
            "the default 1e-8 is 0 in float16, so tiny second moments divide by zero."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.LOW_PRECISION_OVERFLOW,
        first_remedy="fix_precision",
        repairable=False,
        run=run_fp16_adam_eps,
        note="digits MLP on CPU in float16; the reporter's network was a 5-layer CNN on GPU",
    )
)
