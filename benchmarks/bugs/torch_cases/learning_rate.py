"""Learning rates too large for the model: divergence to NaN, dead ReLUs, exploding LSTMs.

``torch_lr_warmup_nan`` (https://github.com/karpathy/nanoGPT/issues/136): training ran
fine, then the loss became NaN after about 2000 iterations (nanoGPT's default warm-up
reaches the peak learning rate at iteration 2000). Reducing the learning rate fixed it, as the reporter
confirmed. Our program: a digits MLP with SGD, momentum and a linear warm-up to a peak
learning rate 10x too high.

``torch_lr_dying_relu`` (https://github.com/dangitstam/topic-rnn/pull/9): the fix for
dying ReLUs in this project was a smaller learning rate. Our program: a 4-layer ReLU MLP
with SGD at a learning rate 10x too high.

``torch_lstm_clip`` (https://github.com/Marcovaldong/lstmp.pytorch/issues/2): an LSTM's
cross-entropy became NaN after about 1200 iterations, suspected to be exploding
gradients; the reporter's conclusion for long sequences: clip the gradients to a max norm
of 1.0. Our program: an LSTM summing a 60-step sequence, SGD at learning rate 0.3; the
fix clips the gradient norm at 1.0. Our first re-derivation (30 steps, lr 1.0) diverged
to NaN without the clip, but the clipped fix still moved the output layer by 0.4-1.7x
its own norm per step; at lr 0.3 on 30 steps the unclipped run no longer fails, so the
longer sequence (the report's setting: "long sequences") makes the bug.

``torch_relu_swap_large_init`` (https://github.com/MichalDanielDobrzanski/DeepLearningPython/issues/13):
replacing the sigmoid of the book's network (N(0, 1) weights and biases, learning rate
3.0, quadratic cost) by a ReLU left the accuracy stuck at 9.5% from the first epoch. The
answer: use a learning rate of 0.01 and initialise weights and biases to a much smaller
value (x0.1); the network then reaches 96.8%. Our program: the same 64-30-10 network on
digits, ReLU after both layers as in the modified code.
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


def run_lr_warmup_nan(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 400
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    model = mlp([64, 128, 128, 10], act=nn.LeakyReLU)
    peak = 2.0 if variant == "buggy" else 0.2
    optimizer = torch.optim.SGD(model.parameters(), lr=peak, momentum=0.9)
    warmup = 200  # linear warm-up, then constant
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.01 + 0.99 * min(1.0, s / warmup)
    )
    losses = train(
        model, optimizer, x, y, F.cross_entropy, watch, steps=steps, seed=seed, scheduler=scheduler
    )
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


class SequenceSum(nn.Module):
    """LSTM over a sequence of scalars; the last hidden state predicts a number."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.rnn = nn.LSTM(1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        return self.out(h[:, -1]).squeeze(1)


def run_lstm_clip(
    variant: str,
    watch: Any,
    steps: int,
    seed: int,
    *,
    lr: float = 0.3,
    length: int = 60,
    hidden: int = 32,
) -> Outcome:
    steps = steps or 500
    seed_all(seed)
    g = torch.Generator().manual_seed(seed)
    seq = torch.randn(1280, length, 1, generator=g)
    target = seq.sum((1, 2)) / length**0.5  # unit variance
    x, y, x_test, y_test = seq[:1024], target[:1024], seq[1024:], target[1024:]
    model = SequenceSum(hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    tap = watch(model, optimizer) if watch else NULL_TAP
    losses = []
    for idx in _data.batch_indices(len(x), 32, steps=steps, seed=seed):
        loss = F.mse_loss(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        if variant == "fixed":  # the fix: clip the gradient norm at 1.0
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        tap.observe(loss)
        losses.append(loss.item())
    tap.close()
    return outcome(losses, model, x_test, y_test, "r2", steps=steps)


def quadratic_cost(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The book's cost: half the squared distance to the one-hot labels, batch mean."""
    target = F.one_hot(labels, 10).float()
    return 0.5 * ((out - target) ** 2).sum(1).mean()


def run_relu_swap_large_init(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 2000
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    model = mlp([64, 30, 10], out_act=nn.ReLU)  # ReLU everywhere, as in the modified code
    scale = 1.0 if variant == "buggy" else 0.1  # the fix: 10x smaller initial values
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, scale)
            nn.init.normal_(m.bias, 0.0, scale)
    lr = 3.0 if variant == "buggy" else 0.01  # ... and a learning rate of 0.01
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = train(model, optimizer, x, y, quadratic_cost, watch, steps=steps, seed=seed, batch=10)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


def run_lr_dying_relu(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 400
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    model = mlp([64, 64, 64, 64, 64, 10])
    lr = 0.5 if variant == "buggy" else 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = train(model, optimizer, x, y, F.cross_entropy, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


register(
    BugCase(
        id="torch_lr_warmup_nan",
        url="https://github.com/karpathy/nanoGPT/issues/136",
        framework="torch",
        title="Loss becomes NaN after ~2000 iterations; a lower learning rate fixes it",
        report=(
            "Training progressed normally and then the loss became NaN after about 2000 "
            "iterations. The suggested fix, reducing the learning rate, worked, as the "
            "reporter confirmed."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.LEARNING_RATE,
        first_remedy="lower_lr",
        repairable=True,
        run=run_lr_warmup_nan,
        steps=400,
        note="digits MLP with SGD, momentum and a 200-step warm-up instead of a GPT",
    )
)

register(
    BugCase(
        id="torch_lr_dying_relu",
        url="https://github.com/dangitstam/topic-rnn/pull/9",
        framework="torch",
        title="Dying ReLUs; fixed with a smaller learning rate",
        report=(
            "ReLU units died during training. The fix in the pull request was a smaller "
            "learning rate."
        ),
        symptom=FailureMode.DYING_RELU,
        cause=Cause.LEARNING_RATE,
        first_remedy="lower_lr",
        repairable=True,
        run=run_lr_dying_relu,
        steps=400,
        note="a 4x64 ReLU MLP on digits instead of a topic RNN",
    )
)

register(
    BugCase(
        id="torch_lstm_clip",
        url="https://github.com/Marcovaldong/lstmp.pytorch/issues/2",
        framework="torch",
        title="LSTM loss goes to NaN after n iterations; clip the gradients",
        report=(
            "An LSTM's cross-entropy loss turned NaN after about 1200 iterations and the "
            "reporter suspected exploding gradients. Their resolution for long sequences was "
            "to clip the gradients to a max norm of 1.0."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.LEARNING_RATE,
        first_remedy="clip_grad_norm",
        repairable=True,
        run=run_lstm_clip,
        steps=500,
        metric="r2",
        note=(
            "a 32-unit LSTM regressing the sum of a 60-step sequence, SGD at lr 0.3: at "
            "lr 1.0 the clipped fix still moved the output layer by its own norm per step, "
            "and at 0.3 a 30-step sequence no longer fails unclipped"
        ),
    )
)

register(
    BugCase(
        id="torch_relu_swap_large_init",
        url="https://github.com/MichalDanielDobrzanski/DeepLearningPython/issues/13",
        framework="torch",
        title="Sigmoid replaced by ReLU: accuracy stuck at 9.5%",
        report=(
            "After replacing the sigmoid by a ReLU in the book's network (N(0, 1) weights and "
            "biases, learning rate 3.0), the accuracy stayed at 9.5% every epoch. The answer: "
            "use a learning rate of 0.01 and initialise weights and biases 10x smaller; the "
            "network then reaches 96.8%."
        ),
        symptom=FailureMode.DYING_RELU,
        cause=Cause.LEARNING_RATE,
        first_remedy="lower_lr",
        repairable=False,
        run=run_relu_swap_large_init,
        steps=2000,
        note=(
            "digits instead of MNIST; the answer changes both the learning rate (named "
            "first, hence the cause) and the initial scale, so lowering the lr alone may "
            "not be enough"
        ),
    )
)
