"""Forward ops that turn finite inputs into NaN: softmax over an all ``-inf`` row, the
gradient of ``sqrt`` at 0.

``torch_mha_all_padded`` (https://github.com/pytorch/pytorch/issues/40932): with
``nn.MultiheadAttention``, one example of a batch was all padding, so its
``key_padding_mask`` row was all True; the row was filled with ``-inf`` before the softmax,
which gave NaN, then NaN parameters ("nan loss encountered"). The report points to
fairseq's workaround: fill masked positions with a large finite negative number instead of
``-inf``. Our program: a token-counting classifier with 1% empty sequences; the fix passes
an additive float mask of -1e8. (In PyTorch 2.x the ``need_weights=False`` path returns
zeros for a fully masked row; the default ``need_weights=True`` path still gives NaN.)

``torch_attention_inf_mask`` (https://github.com/sooftware/kospeech/issues/37): a
hand-written Transformer's loss became NaN after backpropagation. The answer: masking
attention scores with ``-np.inf`` puts NaN into the outputs and gradients (rows of padded
positions are masked entirely); use a bounded constant such as ``-1e9``. Our program: one
hand-written self-attention layer whose mask hides padded query rows entirely.

``torch_sqrt_zero_norm`` (https://github.com/pytorch/pytorch/issues/6394): writing a norm
by hand as ``sqrt(x**2)`` gave a NaN gradient where its argument is 0, although the value
is fine; the maintainers: the derivative of ``sqrt`` at 0 is infinite, ``norm()`` has a
special case, hand-written formulas do not; users add an epsilon under the square root (as
https://github.com/mpariente/pytorch_stoi/issues/7 did). Our program: a metric-learning
embedding of the digits trained with a batch-hard triplet loss on a hand-written pairwise
distance matrix, whose diagonal is exactly 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bugs import _data
from bugs._case import BugCase, Outcome
from bugs._registry import register
from bugs.torch_cases._common import as_tensors, mlp, outcome, seed_all, train
from gradvitals.findings import Cause, FailureMode


class MHAClassifier(nn.Module):
    """Embedding -> nn.MultiheadAttention -> masked mean pool -> 2 logits."""

    def __init__(self, vocab: int, max_len: int, finite_mask: bool, d: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Parameter(0.1 * torch.randn(max_len, d))
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.head = nn.Linear(d, 2)
        self.finite_mask = finite_mask

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == 0  # (B, T)
        h = self.emb(tokens) + self.pos
        mask = pad.float() * -1e8 if self.finite_mask else pad  # fixed: finite fill
        a, _ = self.attn(h, h, h, key_padding_mask=mask)  # need_weights=True, the default
        keep = (~pad).unsqueeze(-1).float()
        pooled = (a * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(pooled)


class HandAttention(nn.Module):
    """One self-attention layer written out, with a query-and-key padding mask."""

    def __init__(self, d: int, fill: float) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.fill = fill

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        scores = self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(h.shape[-1])  # (B, T, T)
        mask = ~(valid[:, :, None] & valid[:, None, :])  # padded query rows: all masked
        attn = scores.masked_fill(mask, self.fill).softmax(-1)
        return attn @ self.v(h)


class HandAttentionClassifier(nn.Module):
    def __init__(self, vocab: int, max_len: int, fill: float, d: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Parameter(0.1 * torch.randn(max_len, d))
        self.attn = HandAttention(d, fill)
        self.head = nn.Linear(d, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        valid = tokens != 0
        a = self.attn(self.emb(tokens) + self.pos, valid)
        keep = valid.unsqueeze(-1).float()
        return self.head((a * keep).sum(1) / keep.sum(1).clamp(min=1.0))


def _train_tokens(
    model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, watch: Any, steps: int, seed: int
) -> Outcome:
    x, y, x_test, y_test = tokens[:1000], labels[:1000], tokens[1000:], labels[1000:]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = train(model, optimizer, x, y, F.cross_entropy, watch, steps=steps, seed=seed)
    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps)


def run_mha_all_padded(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    seed_all(seed)
    tokens, labels = as_tensors(*_data.token_sequences(seed, empty=0.01))
    model = MHAClassifier(12, 12, finite_mask=variant == "fixed")
    return _train_tokens(model, tokens, labels, watch, steps or 300, seed)


def run_attention_inf_mask(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    seed_all(seed)
    tokens, labels = as_tensors(*_data.token_sequences(seed))
    fill = float("-inf") if variant == "buggy" else -1e9
    model = HandAttentionClassifier(12, 12, fill)
    return _train_tokens(model, tokens, labels, watch, steps or 300, seed)


def pairwise_distances(e: torch.Tensor, eps_inside_sqrt: bool) -> torch.Tensor:
    """Euclidean distances between all rows of ``e``, written by hand (diagonal = 0)."""
    d2 = ((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)
    return torch.sqrt(d2 + 1e-12) if eps_inside_sqrt else torch.sqrt(d2)


def batch_hard_triplet(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """For each anchor: hardest positive minus hardest negative distance, plus a margin."""
    same = labels[:, None] == labels[None, :]
    hardest_pos = (dist * same.float()).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def run_sqrt_zero_norm(variant: str, watch: Any, steps: int, seed: int) -> Outcome:
    steps = steps or 300
    seed_all(seed)
    x, y, x_test, y_test = as_tensors(*_data.digits(seed))
    model = mlp([64, 64, 16])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dist = pairwise_distances(embeddings, eps_inside_sqrt=variant == "fixed")
        return batch_hard_triplet(dist, labels, margin=0.5)

    losses = train(model, optimizer, x, y, triplet_loss, watch, steps=steps, seed=seed, batch=64)

    def nearest_centroid(inputs: torch.Tensor) -> torch.Tensor:
        train = model(x)
        centroids = torch.stack([train[y == k].mean(0) for k in range(10)])
        return -torch.cdist(model(inputs), centroids)

    return outcome(losses, model, x_test, y_test, "accuracy", steps=steps, predict=nearest_centroid)


register(
    BugCase(
        id="torch_mha_all_padded",
        url="https://github.com/pytorch/pytorch/issues/40932",
        framework="torch",
        title="MultiheadAttention: an all-True key_padding_mask row gives NaN loss",
        report=(
            "One example of a batch was all padding, so its key_padding_mask row was all "
            "True; MultiheadAttention filled the whole row with -inf before the softmax and "
            "the parameters became NaN. The workaround the report cites (fairseq) fills "
            "masked positions with a large finite negative value instead of -inf."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.UNSTABLE_OP,
        first_remedy="guard_op",
        repairable=True,
        run=run_mha_all_padded,
        note="token-counting classifier on synthetic sequences; 1% of them are empty",
    )
)

register(
    BugCase(
        id="torch_attention_inf_mask",
        url="https://github.com/sooftware/kospeech/issues/37",
        framework="torch",
        title="Hand-written Transformer: loss becomes NaN after backpropagation",
        report=(
            "The Transformer's loss became NaN right after backpropagation. The answer "
            "showed that masked_fill with -np.inf puts NaN into the outputs and gradients "
            "(fully masked rows), and that implementations use a bounded constant such as "
            "-1e9 instead."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.UNSTABLE_OP,
        first_remedy="guard_op",
        repairable=False,
        run=run_attention_inf_mask,
        note="one hand-written attention layer on synthetic token sequences",
    )
)

register(
    BugCase(
        id="torch_sqrt_zero_norm",
        url="https://github.com/pytorch/pytorch/issues/6394",
        framework="torch",
        title="sqrt written by hand gives a NaN gradient at 0",
        report=(
            "A norm written by hand with sqrt produced NaN gradients where its argument was "
            "exactly 0, while norm() did not. The maintainers explained that the derivative "
            "of sqrt at 0 is infinite and only norm() special-cases it; the fix is to add a "
            "small epsilon under the square root (or to use norm())."
        ),
        symptom=FailureMode.NONFINITE,
        cause=Cause.UNSTABLE_OP,
        first_remedy="guard_op",
        repairable=False,
        run=run_sqrt_zero_norm,
        note="digits embedding with a batch-hard triplet loss; pairwise distances by hand",
    )
)
