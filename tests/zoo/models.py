"""Tiny real architectures, random init (no downloads), and synthetic data they can learn.

Every builder seeds ``torch`` itself, so two calls give the same weights. Sizes are
chosen for speed on one CPU thread (a training step takes milliseconds), not accuracy.

- token data: :func:`markov_tokens` (next-token prediction), :func:`bag_of_words`
  (sequence classification); image data: :func:`digit_images` (scikit-learn's digits);
- Hugging Face: :func:`gpt2`, :func:`bert_classifier` (built from configs);
- vision: :class:`ResNet` / :func:`resnet18` (torchvision's BasicBlock net), :class:`ViT`;
- recurrent: :class:`RNNLM` (embedding -> ``nn.LSTM`` / ``nn.GRU`` -> linear);
- nanoGPT-shaped: :class:`GPTConfig`, :class:`GPT` (hand-written causal attention).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GPT",
    "RNNLM",
    "BasicBlock",
    "GPTConfig",
    "ResNet",
    "ViT",
    "bag_of_words",
    "bert_classifier",
    "digit_images",
    "gpt2",
    "left_padded",
    "markov_tokens",
    "resnet18",
]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs only: never reach the network

# -- data ----------------------------------------------------------------------------------


def markov_tokens(
    n_seq: int, seq_len: int, vocab: int, *, p_follow: float = 0.9, seed: int = 0
) -> torch.Tensor:
    """Token sequences ``(n_seq, seq_len)`` from a fixed successor table.

    Token ``t+1`` is ``succ[t]`` with probability ``p_follow``, else uniform over the
    vocabulary. A bigram model reaches a loss of about
    ``-(p ln p + (1 - p) ln((1 - p) / V))`` (0.74 nats for p = 0.9, V = 64), far below the
    uniform ``ln V`` (4.16) the random init starts at: the loss falls within tens of steps.
    """
    g = torch.Generator().manual_seed(seed)
    succ = torch.randperm(vocab, generator=g)
    seq = torch.empty(n_seq, seq_len, dtype=torch.long)
    seq[:, 0] = torch.randint(0, vocab, (n_seq,), generator=g)
    for t in range(1, seq_len):
        follow = torch.rand(n_seq, generator=g) < p_follow
        noise = torch.randint(0, vocab, (n_seq,), generator=g)
        seq[:, t] = torch.where(follow, succ[seq[:, t - 1]], noise)
    return seq


def bag_of_words(
    n: int, seq_len: int, vocab: int, *, p_low: float = 0.8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence classification by a bag-of-words rule: ``(ids (n, seq_len), labels (n,))``.

    Label 1 sequences draw each token from the lower half of the vocabulary with
    probability ``p_low``, label 0 ones with ``1 - p_low``; token 0 is kept as a [CLS]
    slot at position 0. Counting low tokens separates the classes almost surely.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    half = vocab // 2
    p = torch.where(labels == 1, p_low, 1.0 - p_low)[:, None].expand(n, seq_len)
    low = torch.rand(n, seq_len, generator=g) < p
    lo = torch.randint(1, half, (n, seq_len), generator=g)
    hi = torch.randint(half, vocab, (n, seq_len), generator=g)
    ids = torch.where(low, lo, hi)
    ids[:, 0] = 0
    return ids, labels


@functools.cache
def digit_images(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 digits, ``(N, 1, size, size)`` standardised, and labels (bundled)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    img = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    if size != 8:
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
    img = (img - img.mean()) / img.std()
    return img, torch.tensor(y)


def left_padded(
    ids: torch.Tensor, n_pad: int, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad a batch for generation-style training: ``(ids, targets, pad_mask)``.

    The first ``n_pad`` positions of every row become ``pad_id`` with ``pad_mask`` False
    and target -1 (ignored); the rest is the next-token task on what remains.

    >>> x, y, mask = left_padded(torch.arange(6).view(1, 6), n_pad=2)
    >>> x.tolist(), y.tolist(), mask.tolist()
    ([[0, 0, 2, 3, 4]], [[-1, -1, 3, 4, 5]], [[False, False, True, True, True]])
    """
    x = ids[:, :-1].clone()
    y = ids[:, 1:].clone()
    x[:, :n_pad] = pad_id
    y[:, :n_pad] = -1
    pad_mask = torch.ones_like(x, dtype=torch.bool)
    pad_mask[:, :n_pad] = False
    return x, y, pad_mask


# -- Hugging Face ------------------------------------------------------------------------


def gpt2(vocab: int = 64, n_positions: int = 32, seed: int = 0) -> nn.Module:
    """``GPT2LMHeadModel`` from a 2-layer, 32-wide config (Conv1D layers, tied lm_head)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg)


def bert_classifier(
    vocab: int = 64, max_len: int = 32, num_labels: int = 2, seed: int = 0
) -> nn.Module:
    """``BertForSequenceClassification`` from a 2-layer, 32-wide config (GELU, tanh pooler)."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_len,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    cfg.num_labels = num_labels  # 1: regression (MSE), else classification (cross-entropy)
    torch.manual_seed(seed)
    return BertForSequenceClassification(cfg)


# -- vision --------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: conv-BN-ReLU-conv-BN, plus the shortcut, ReLU.

    One ``ReLU(inplace=True)`` module is called twice per forward, as in torchvision.
    """

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet layout with a CIFAR-style stem (3x3, stride 1, no max-pool).

    Small images (8x8 or 16x16) would vanish under the ImageNet stem's 4x reduction.
    """

    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (16, 32, 64, 128),
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        c = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if i == 0 else 2
            layer = [BasicBlock(c, w, stride)] + [BasicBlock(w, w) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            c = w
        self.n_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(c, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10, in_channels: int = 1, seed: int = 0) -> ResNet:
    """ResNet-18 (2-2-2-2 BasicBlocks) at a quarter of the width: 16-32-64-128 channels."""
    torch.manual_seed(seed)
    return ResNet((2, 2, 2, 2), (16, 32, 64, 128), in_channels, num_classes)


class MLP(nn.Module):
    """The transformer feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-LN encoder block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    """A small Vision Transformer: conv patch embedding, [CLS] token, 2 pre-LN blocks."""

    def __init__(
        self,
        image: int = 16,
        patch: int = 4,
        in_channels: int = 1,
        dim: int = 32,
        depth: int = 2,
        heads: int = 2,
        mlp_ratio: int = 2,
        num_classes: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        n_patches = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head: nn.Module = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, C, H', W') -> (B, N, C)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


# -- recurrent -----------------------------------------------------------------------------


class RNNLM(nn.Module):
    """A word-level language model: embedding -> ``nn.LSTM`` or ``nn.GRU`` -> linear."""

    def __init__(
        self,
        kind: str = "lstm",
        vocab: int = 64,
        n_embd: int = 32,
        n_hidden: int = 64,
        n_layers: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.embed = nn.Embedding(vocab, n_embd)
        self.rnn = rnn(n_embd, n_hidden, n_layers, batch_first=True)
        self.head = nn.Linear(n_hidden, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(idx))  # (B, T, n_hidden)
        return self.head(out)  # (B, T, vocab)


# -- nanoGPT-shaped ------------------------------------------------------------------------


@dataclass
class GPTConfig:
    block_size: int = 32  # longest context
    vocab_size: int = 64  # tokens
    n_layer: int = 2  # transformer blocks
    n_head: int = 2  # attention heads per block
    n_embd: int = 32  # residual-stream width
    dropout: float = 0.0  # dropout on attention weights and residual branches
    bias: bool = True  # biases in Linear layers and LayerNorms


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, written out (no fused kernel).

    ``pad_mask`` (B, T), True for real tokens, hides padded keys too. With left padding
    this has the classic bug: a padded query at position 0 may see only padded keys, so
    its row is all ``-inf`` and softmax returns NaN.
    """

    bias: torch.Tensor  # (1, 1, block_size, block_size) lower-triangular: the causal mask

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v at once
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.n_embd = cfg.n_head, cfg.n_embd
        causal = torch.tril(torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool))
        self.register_buffer("bias", causal.view(1, 1, cfg.block_size, cfg.block_size))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, n_embd
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
        allowed = self.bias[:, :, :T, :T]
        if pad_mask is not None:
            allowed = allowed & pad_mask[:, None, None, :]  # hide padded keys
        att = att.masked_fill(~allowed, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = att @ v  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class GPTMLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = GPTMLP(cfg)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), pad_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's model: token + position embeddings, pre-LN blocks, tied ``lm_head``."""

    def __init__(self, cfg: GPTConfig, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer["wte"].weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        pad_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _, T = idx.size()  # batch, sequence length
        tr: Any = self.transformer
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = tr.drop(tr.wte(idx) + tr.wpe(pos))  # (B, T, n_embd)
        for block in tr.h:
            x = block(x, pad_mask)
        logits = self.lm_head(tr.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss

    def configure_optimizers(
        self, weight_decay: float, learning_rate: float, betas: tuple[float, float]
    ) -> torch.optim.AdamW:
        """AdamW with two groups: matrices decay, biases and LayerNorm gains do not."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)
