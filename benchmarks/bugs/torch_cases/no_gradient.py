"""Nothing reaches the parameters: a loss cut from the graph, an optimizer holding the
parameters of another model instance.

``torch_loss_from_item`` (https://github.com/isayev/ReLeaSE/issues/39): after the user
replaced a tensor term of the loss by ``.item()`` / ``.detach().numpy()`` values (to get
around a CUDA-to-numpy error), every layer's ``.grad`` was None and the weights stopped
updating. The maintainer: those calls detach the loss from the computational graph, so
there is nothing to backpropagate; keep the loss a tensor. Our program: a digits classifier
whose loss is computed from ``.item()`` values and wrapped back into
``torch.tensor(..., requires_grad=True)`` so that ``backward()`` runs without an error.

``torch_optimizer_stale_model`` (https://github.com/spro/practical-pytorch/issues/9): with
``optimizer.step()`` in place of the tutorial's manual update, the loss went up and down
without decreasing. The author found the model was instantiated twice, once before the
optimizer was built and once again before the training loop, so the optimizer held the
first instance's parameters; building the optimizer after the last instantiation fixed
it. Our program: a small RNN classifier of token sequences built twice.
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


def run_loss_from_item(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    model = mlp([64, 128, 10])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tap = watch(model, optimizer) if watch else NULL_TAP
    losses = []
    for idx in _data.batch_indices(len(x), 32, steps=steps, seed=seed):
        log_probs = F.log_softmax(model(x[idx]), dim=1)
        picked = log_probs[torch.arange(len(idx)), y[idx]]
        if variant == "buggy":  # python floats: the graph is gone
            value = -sum(p.item() for p in picked) / len(idx)
            loss = torch.tensor(value, requires_grad=True)
        else:  # the fix: keep the loss a tensor of the graph
            loss = -picked.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tap.observe(loss)
        losses.append(loss.item())
    tap.close()
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


class RNNClassifier(nn.Module):
    """Embedding -> tanh RNN -> last hidden state -> 2 logits."""

    def __init__(self, vocab: int = 12, hidden: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.rnn = nn.RNN(16, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(tokens))
        return self.out(h[:, -1])


def run_optimizer_stale_model(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    tokens, labels = as_tensors(*_data.token_sequences(seed))
    x, y, x_test, y_test = tokens[:1000], labels[:1000], tokens[1000:], labels[1000:]
    rnn = RNNClassifier()
    optimizer = torch.optim.Adam(rnn.parameters(), lr=3e-3)
    if variant == "buggy":
        rnn = RNNClassifier()  # instantiated again: the optimizer holds the old one
    else:  # the fix: build the optimizer from the instance that is trained
        optimizer = torch.optim.Adam(rnn.parameters(), lr=3e-3)
    losses = train(rnn, optimizer, x, y, F.cross_entropy, watch, steps=steps, seed=seed)
    return outcome(losses, rnn, x_test, y_test, "accuracy", steps=steps)


register(
    BugCase(
        id="torch_loss_from_item",
        url="https://github.com/isayev/ReLeaSE/issues/39",
        framework="torch",
        title="Loss built from .item()/.numpy() values: grads are None, weights never update",
        report=(
            "After replacing a tensor term of the loss by .item() (and .detach().numpy()) "
            "values, every layer's grad was None and the weights stopped updating. The "
            "maintainer explained that this detaches the loss from the computational graph, "
            "leaving nothing to backpropagate; the loss must stay a tensor."
        ),
        symptom=FailureMode.STALLED,
        cause=Cause.NO_GRADIENT,
        first_remedy="fix_graph",
        repairable=False,
        run=run_loss_from_item,
        note="a supervised digits classifier instead of a policy-gradient generator",
    )
)

register(
    BugCase(
        id="torch_optimizer_stale_model",
        url="https://github.com/spro/practical-pytorch/issues/9",
        framework="torch",
        title="Model instantiated twice: the optimizer updates the old instance",
        report=(
            "With optimizer.step() the loss went up and down without decreasing. The model "
            "had been instantiated twice, the optimizer built from the first instance and "
            "the second one trained; moving the optimizer below the second instantiation "
            "fixed it."
        ),
        symptom=FailureMode.STALLED,
        cause=Cause.NO_GRADIENT,
        first_remedy="fix_graph",
        repairable=False,
        run=run_optimizer_stale_model,
        note="an RNN over synthetic token sequences instead of names by language; Adam",
    )
)
