"""Odd models and odd training loops: watching never changes training, never stays behind.

Each case trains a tiny model for a dozen steps twice from the same seed, once plain
and once under ``gradvitals.watch(model, opt, every=3, samples=2)``, and checks three
guarantees:

1. the two runs are **bitwise identical**: every parameter and buffer (``torch.equal``)
   and the global RNG state;
2. ``monitor.close()`` leaves **no hook behind**: module forward, forward-pre, backward
   and backward-pre hooks, the parameters' tensor and post-accumulate-grad hooks, the
   global module hooks and the optimizers' step pre/post hooks are back to their count
   before ``watch`` (the user's own hooks stay);
3. the monitor was **never disabled**. The suite runs under ``GRADVITALS_STRICT=1``, so
   an internal error raises here instead of switching the monitor off; nothing is caught.

It also checks that the watched run measured something (a window with sampled layers),
so a case cannot pass by never installing a hook.

Cases known to break the monitor today are ``xfail(strict=True)`` with the error they
raise: when one is fixed, its mark must go.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import gradvitals

STEPS = 12
B, D_IN, CLASSES = 16, 8, 3


@dataclass
class Setup:
    """One built case: the model, its optimizers (the first is watched), one step."""

    model: nn.Module
    opts: list[torch.optim.Optimizer]
    step: Callable[[int], torch.Tensor]  # trains one step, returns the loss
    #: tensors hooked by the user (beyond the parameters) whose hooks are counted
    extra: list[torch.Tensor] = field(default_factory=list)


def batch(i: int, *, n: int = B, d: int = D_IN, dtype: torch.dtype = torch.float32) -> Any:
    """The i-th batch: fixed by i alone (its own generator, not the global RNG)."""
    g = torch.Generator().manual_seed(1000 + i)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return x, y


def mlp(d_in: int = D_IN, width: int = 16, d_out: int = CLASSES) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.Tanh(),
        nn.Linear(width, d_out),
    )


def plain_step(
    model: nn.Module,
    opts: list[torch.optim.Optimizer],
    loss_of: Callable[[int], torch.Tensor],
) -> Callable[[int], torch.Tensor]:
    def step(i: int) -> torch.Tensor:
        for o in opts:
            o.zero_grad()
        loss = loss_of(i)
        loss.backward()
        for o in opts:
            o.step()
        return loss

    return step


def classifier_setup(model: nn.Module, opt: torch.optim.Optimizer | None = None) -> Setup:
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def loss_of(i: int) -> torch.Tensor:
        x, y = batch(i)
        return F.cross_entropy(model(x), y)

    return Setup(model, [opt], plain_step(model, [opt], loss_of))


# -- structured outputs ------------------------------------------------------------------
Out = namedtuple("Out", ["logits", "value"])


class Heads(nn.Module):
    """Two heads; the output is packed as a dict, a tuple or a namedtuple."""

    def __init__(self, pack: str) -> None:
        super().__init__()
        self.pack = pack
        self.body = nn.Sequential(nn.Linear(D_IN, 16), nn.ReLU())
        self.cls = nn.Linear(16, CLASSES)
        self.reg = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> Any:
        h = self.body(x)
        logits, value = self.cls(h), self.reg(h)
        if self.pack == "dict":
            return {"logits": logits, "value": value}
        if self.pack == "tuple":
            return logits, value
        return Out(logits, value)


def heads(pack: str) -> Callable[[], Setup]:
    def make() -> Setup:
        model = Heads(pack)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)

        def loss_of(i: int) -> torch.Tensor:
            x, y = batch(i)
            out = model(x)
            logits, value = (out["logits"], out["value"]) if pack == "dict" else out
            return F.cross_entropy(logits, y) + value.pow(2).mean()

        return Setup(model, [opt], plain_step(model, [opt], loss_of))

    return make


# -- shared modules and tied weights ------------------------------------------------------
class Reused(nn.Module):
    """One Linear (and one Tanh) applied three times in one forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.block, self.out = nn.Linear(D_IN, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x))
        for _ in range(3):
            h = self.act(self.block(h))
        return self.out(h)


class Tied(nn.Module):
    """A language-model shape: the output projection is the embedding matrix."""

    def __init__(self, vocab: int = 20, d: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mix = nn.Sequential(nn.Linear(d, d), nn.GELU())
        self.proj = nn.Linear(d, vocab, bias=False)
        self.proj.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.mix(self.emb(ids)))


def tied() -> Setup:
    model = Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def loss_of(i: int) -> torch.Tensor:
        ids = torch.randint(0, 20, (B, 5), generator=torch.Generator().manual_seed(i))
        logits = model(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, 20), ids[:, 1:].reshape(-1))

    return Setup(model, [opt], plain_step(model, [opt], loss_of))


# -- activation checkpointing -------------------------------------------------------------
class Checkpointed(nn.Module):
    """A checkpointed block with dropout: the recomputation must replay the same mask."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.stem = nn.Linear(D_IN, 16)
        self.block = nn.Sequential(
            nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 16), nn.ReLU()
        )
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # requires grad: the reentrant variant needs a grad-requiring input
        h = checkpoint(self.block, h, use_reentrant=self.reentrant)
        return self.head(h)


# -- the user's own hooks -----------------------------------------------------------------
def user_hooks() -> Setup:
    model = mlp()
    s = classifier_setup(model)
    model[0].register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))
    model[1].register_forward_hook(lambda m, inp, out: out + 0.0)  # returns a new tensor
    model[2].register_full_backward_hook(lambda m, gin, gout: (gin[0] * 0.9,))
    model[2].register_full_backward_pre_hook(lambda m, gout: None)
    head = model[4]
    assert isinstance(head, nn.Linear)
    head.weight.register_hook(lambda g: g * 0.5)
    head.bias.register_post_accumulate_grad_hook(lambda p: None)
    s.opts[0].register_step_pre_hook(lambda opt, args, kwargs: None)
    s.opts[0].register_step_post_hook(lambda opt, args, kwargs: None)
    return s


# -- attention ----------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Linear(D_IN, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        h = h + a
        h = h + self.ff(h)
        return self.head(h.mean(1))


def attention() -> Setup:
    model = Attention()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_of(i: int) -> torch.Tensor:
        x, y = batch(i, n=B * 4)
        return F.cross_entropy(model(x.reshape(B, 4, D_IN)), y[:B])

    return Setup(model, [opt], plain_step(model, [opt], loss_of))


class Encoder(nn.Module):
    """nn.TransformerEncoder with nested tensors: its eval fast path packs padded batches."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Linear(D_IN, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.enc(self.emb(x), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.head((h * keep).sum(1) / keep.sum(1))


def encoder() -> Setup:
    model = Encoder()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    lengths = torch.tensor([6, 3, 5, 1] * (B // 4))
    pad = torch.arange(6).unsqueeze(0) >= lengths.unsqueeze(1)  # True = padding

    def loss_of(i: int) -> torch.Tensor:
        x, y = batch(i, n=B * 6)
        return F.cross_entropy(model(x.reshape(B, 6, D_IN), pad), y[:B])

    train = plain_step(model, [opt], loss_of)
    assert model.enc.use_nested_tensor  # the eval passes below take the nested-tensor path

    def step(i: int) -> torch.Tensor:
        loss = train(i)
        model.eval()  # the fast path: nested tensors inside, fused kernels, no grad
        with torch.no_grad():
            x, _ = batch(100 + i, n=B * 6)
            assert torch.isfinite(model(x.reshape(B, 6, D_IN), pad)).all()
        model.train()
        return loss

    return Setup(model, [opt], step)


# -- optimizers ---------------------------------------------------------------------------
def lbfgs() -> Setup:
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4, history_size=5)

    def step(i: int) -> torch.Tensor:
        x, y = batch(i)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        return opt.step(closure)  # type: ignore[no-any-return]

    return Setup(model, [opt], step)


def two_optimizers() -> Setup:
    model = mlp()
    body = [p for m in list(model)[:4] for p in m.parameters()]
    opts: list[torch.optim.Optimizer] = [
        torch.optim.SGD(body, lr=0.05, momentum=0.9),
        torch.optim.Adam(model[4].parameters(), lr=1e-2),
    ]

    def loss_of(i: int) -> torch.Tensor:
        x, y = batch(i)
        return F.cross_entropy(model(x), y)

    return Setup(model, opts, plain_step(model, opts, loss_of))


def param_group_added() -> Setup:
    """The head trains from step 5 on: optimizer.add_param_group mid-training."""
    model = mlp()
    opt = torch.optim.SGD([p for m in list(model)[:4] for p in m.parameters()], lr=0.05)
    s = classifier_setup(model, opt)
    train = s.step

    def step(i: int) -> torch.Tensor:
        if i == 5:
            opt.add_param_group({"params": list(model[4].parameters()), "lr": 0.1})
        return train(i)

    return Setup(model, [opt], step)


# -- memory formats, eval passes, dtypes --------------------------------------------------
class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def channels_last() -> Setup:
    model = SmallCNN().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def loss_of(i: int) -> torch.Tensor:
        x, y = batch(i, d=3 * 6 * 6)
        x = x.reshape(B, 3, 6, 6).contiguous(memory_format=torch.channels_last)
        return F.cross_entropy(model(x), y)

    return Setup(model, [opt], plain_step(model, [opt], loss_of))


def eval_between_steps(context: Callable[[], Any]) -> Callable[[], Setup]:
    """Dropout and BatchNorm; an eval pass under ``context()`` after every step."""

    def make() -> Setup:
        model = nn.Sequential(
            nn.Linear(D_IN, 16),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(16, CLASSES),
        )
        s = classifier_setup(model)
        train = s.step

        def step(i: int) -> torch.Tensor:
            loss = train(i)
            model.eval()
            with context():
                model(batch(100 + i)[0])
            model.train()
            return loss

        return Setup(model, s.opts, step)

    return make


def float64() -> Setup:
    model = mlp().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def loss_of(i: int) -> torch.Tensor:
        x, y = batch(i, dtype=torch.float64)
        return F.cross_entropy(model(x), y)

    return Setup(model, [opt], plain_step(model, [opt], loss_of))


class Complex(nn.Module):
    """Complex weights (as in signal processing nets), a modulus nonlinearity, real logits."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = nn.Linear(D_IN, 16, dtype=torch.cfloat)
        self.lin2 = nn.Linear(16, CLASSES, dtype=torch.cfloat)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.lin1(z)
        h = h * torch.sigmoid(h.abs())
        return self.lin2(h).abs()


def complex_params() -> Setup:
    model = Complex()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_of(i: int) -> torch.Tensor:
        x, y = batch(i)
        z = torch.complex(x, x.flip(1))
        return F.cross_entropy(model(z), y)

    return Setup(model, [opt], plain_step(model, [opt], loss_of))


# -- sparse gradients ---------------------------------------------------------------------
class Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8, sparse=True)
        self.head = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, CLASSES))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).mean(1))


def sparse_embedding(optimizer: str) -> Callable[[], Setup]:
    def make() -> Setup:
        model = Bag()
        opts: list[torch.optim.Optimizer]
        if optimizer == "sgd":
            opts = [torch.optim.SGD(model.parameters(), lr=0.1)]
        else:  # SparseAdam takes only sparse gradients: the dense head gets Adam
            opts = [
                torch.optim.SparseAdam(list(model.emb.parameters()), lr=1e-2),
                torch.optim.Adam(model.head.parameters(), lr=1e-2),
            ]

        def loss_of(i: int) -> torch.Tensor:
            g = torch.Generator().manual_seed(i)
            ids = torch.randint(0, 30, (B, 4), generator=g)
            return F.cross_entropy(model(ids), torch.randint(0, CLASSES, (B,), generator=g))

        return Setup(model, opts, plain_step(model, opts, loss_of))

    return make


def requires_grad_toggled() -> Setup:
    """The first layer is frozen at step 4 and unfrozen at step 8 (gradual unfreezing)."""
    model = mlp()
    s = classifier_setup(model)
    train = s.step

    def step(i: int) -> torch.Tensor:
        if i in (4, 8):
            model[0].requires_grad_(i == 8)
        return train(i)

    return Setup(model, s.opts, step)


# -- mixture of experts -------------------------------------------------------------------
class MoE(nn.Module):
    """Top-1 routing; the gate's bias sends every token to expert 0, so expert 1 is
    called on an empty batch (0 rows), as happens to unlucky experts in real MoEs."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(D_IN, 2)
        with torch.no_grad():
            self.gate.bias.copy_(torch.tensor([50.0, -50.0]))
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(D_IN, 16), nn.ReLU(), nn.Linear(16, D_IN)) for _ in range(2)
        )
        self.head = nn.Linear(D_IN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.gate(x).softmax(-1)
        top = probs.argmax(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            idx = (top == e).nonzero().squeeze(1)
            out = out.index_add(0, idx, expert(x[idx]) * probs[idx, e : e + 1])
        return self.head(out)


# -- torch.func ---------------------------------------------------------------------------
def per_sample_grads() -> Setup:
    """DP-SGD style: per-sample gradients with vmap(grad(...)), clipped, averaged."""
    from torch.func import functional_call, grad, vmap

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def loss_one(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> Any:
        out = functional_call(model, params, (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))

    def step(i: int) -> torch.Tensor:
        x, y = batch(i)
        params = {k: v.detach() for k, v in model.named_parameters()}
        grads = per_sample(params, x, y)
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
        scale = (1.0 / norms).clamp(max=1.0)
        opt.zero_grad()
        for k, p in model.named_parameters():
            p.grad = (grads[k] * scale.view(-1, *[1] * (grads[k].ndim - 1))).mean(0)
        opt.step()
        with torch.no_grad():
            return F.cross_entropy(model(x), y)

    return Setup(model, [opt], step)


# -- the harness --------------------------------------------------------------------------
def hook_count(s: Setup) -> int:
    """Every hook a watcher could leave on the model, its tensors or its optimizers."""
    from torch.nn.modules import module as module_globals

    n = 0
    for m in s.model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks)
        n += len(m._backward_hooks) + len(m._backward_pre_hooks)
    for t in [*s.model.parameters(), *s.extra]:
        n += len(getattr(t, "_post_accumulate_grad_hooks", None) or {})
        n += len(t._backward_hooks or {})
    for o in s.opts:
        n += len(o._optimizer_step_pre_hooks) + len(o._optimizer_step_post_hooks)
    for name in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    ):
        n += len(getattr(module_globals, name, {}))
    return n


def run(make: Callable[[], Setup], watched: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    s = make()
    before = hook_count(s)
    monitor = (
        gradvitals.watch(s.model, s.opts[0], every=3, samples=2, console=False) if watched else None
    )
    for i in range(STEPS):
        loss = s.step(i)
        if monitor is not None:
            monitor.observe_loss(loss)
            assert not monitor.disabled, f"the monitor switched itself off at step {i}"
    if monitor is not None:
        assert monitor.step_count == STEPS
        assert hook_count(s) > before or monitor.history  # it did watch
        monitor.close()
        assert not monitor.disabled
        assert hook_count(s) == before, "hooks left behind after close()"
        sampled = [r for r in monitor.history if any(x.n_samples for x in r.layers.values())]
        assert sampled, "no window measured any layer"
    state = [t.detach().clone() for t in s.model.state_dict(keep_vars=True).values()]
    return state, torch.get_rng_state()


CASES: dict[str, Callable[[], Setup]] = {
    "dict_output": heads("dict"),
    "tuple_output": heads("tuple"),
    "namedtuple_output": heads("namedtuple"),
    "module_reused_in_one_forward": lambda: classifier_setup(Reused()),
    "tied_weights": tied,
    "checkpoint_non_reentrant": lambda: classifier_setup(Checkpointed(reentrant=False)),
    "checkpoint_reentrant": lambda: classifier_setup(Checkpointed(reentrant=True)),
    "user_hooks": user_hooks,
    "multihead_attention": attention,
    "transformer_nested_tensor_eval": encoder,
    "lbfgs_closure": lbfgs,
    "two_optimizers": two_optimizers,
    "add_param_group_mid_training": param_group_added,
    "channels_last": channels_last,
    "eval_under_no_grad": eval_between_steps(torch.no_grad),
    "eval_under_inference_mode": eval_between_steps(torch.inference_mode),
    "float64": float64,
    "complex_parameters": complex_params,
    "sparse_embedding_sgd": sparse_embedding("sgd"),
    "sparse_embedding_sparse_adam": sparse_embedding("sparse_adam"),
    "requires_grad_toggled": requires_grad_toggled,
    "moe_expert_with_empty_batch": lambda: classifier_setup(MoE()),
    "torch_func_per_sample_grads": per_sample_grads,
}

#: cases that break the monitor today: (exception type, what goes wrong)
#: cases that broke the monitor, by name -> (the exception, the bug); all fixed now, the
#: mechanism stays for the next one
KNOWN: dict[str, tuple[type[BaseException], str]] = {}


def _params() -> list[Any]:
    out = []
    for name in CASES:
        marks = []
        if name in KNOWN:
            exc, reason = KNOWN[name]
            marks.append(pytest.mark.xfail(strict=True, raises=exc, reason=reason))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_watching_an_odd_model_is_invisible_and_leaves_nothing(name: str) -> None:
    plain, rng_plain = run(CASES[name], watched=False)
    watched, rng_watched = run(CASES[name], watched=True)
    assert len(plain) == len(watched)
    for i, (a, b) in enumerate(zip(plain, watched, strict=True)):
        assert torch.equal(a, b), f"state entry {i} differs: watching changed training"
    assert torch.equal(rng_plain, rng_watched), "watching drew from the global RNG"


# -- what the monitor sees inside a checkpointed block ------------------------------------
def _sites_seen(reentrant: bool | None) -> set[str]:
    torch.manual_seed(0)
    model = Checkpointed(reentrant=bool(reentrant))
    if reentrant is None:  # the same model without checkpointing: the reference
        model.forward = lambda x: model.head(model.block(model.stem(x)))  # type: ignore[method-assign]
    s = classifier_setup(model)
    monitor = gradvitals.watch(model, s.opts[0], every=3, samples=2, console=False)
    for i in range(6):
        monitor.observe_loss(s.step(i))
    monitor.close()
    return {name for r in monitor.history for name in r.sites}


def test_the_reference_sites_of_the_checkpointed_block() -> None:
    # block.0 is a Linear fed by the stem (its input is watched); block.1 and block.4 are ReLUs
    assert _sites_seen(None) == {"block.0", "block.1", "block.4"}


def test_non_reentrant_checkpointing_adds_no_sites() -> None:
    assert _sites_seen(False) == _sites_seen(None)


def test_reentrant_checkpointing_adds_no_sites() -> None:
    assert _sites_seen(True) == _sites_seen(None)
