r"""The labelled training-run corpus behind ``benchmarks/detection.py``.

Everything needed to *generate* one run and *label* it without gradvitals' detectors:

- :class:`RunConfig`: one training run as data (architecture, activation, init,
  optimizer, learning rate, normalization, dataset, seed...);
- :func:`sample_corpus`: the seeded list of configs (recipes that make each failure
  mode likely, plus fully random configs). A recipe is *not* a label;
- :func:`train_run`: trains one config with ``gradvitals.watch`` attached (default
  settings) and measures the outcome on the **full training set** at fixed
  checkpoints with a separate probe copy of the model, so the measurements never pass
  through gradvitals' hooks;
- :func:`label_run`: the label rules (below), applied to those measurements.

Label rules (outcome measurements only, on the full training set in train mode, i.e.
with the batch statistics training uses; ``ACC_OK`` = 0.85 training accuracy). A run
can carry several labels:

- **exploding**: the run diverged: some step's loss was NaN/Inf, or the full-set loss
  at some checkpoint exceeded 10x its initial value. Onset: the first step whose
  minibatch loss was NaN/Inf or above 10x the initial full-set loss. (A single
  minibatch spike that the full set never shows is *not* divergence; the spike is
  counted separately as ``max_loss_ratio``.)
- when the final model is finite (otherwise its statistics are meaningless):
  - **dying_relu**: some ReLU layer has >= 50% of its units never positive on the
    full training set at the end. Onset: the first checkpoint at which some ReLU
    layer had crossed 50%. Leaky ReLU and GELU units are not ReLU units here (their
    negative side still passes gradient); their never-positive fraction is recorded;
  - **saturation**: some sigmoid/tanh layer (``nn.RNN(nonlinearity="tanh")`` outputs
    included) has >= 50% of its outputs within 0.01 of an asymptote at the end.
    Onset: first crossing;
  - **vanishing**: the first/last weight-layer RMS-gradient ratio on the full set is
    below 1e-3 at initialisation, the final accuracy is below ``ACC_OK``, and the run
    is neither dying nor saturated at the end (those explain a small gradient and
    have their own label). Onset: step 0;
  - **stalled**: nothing learned and nothing moved: the full-set loss never fell
    below ``STALL_LOSS`` (0.95) x its initial value at any checkpoint, and every
    weight layer ended within ``STALL_MOTION`` (1e-3) of its initial weights
    (:math:`\|W_T - W_0\| \le 10^{-3}\|W_0\|`, weights only, biases excluded).
    Onset: step 0;
  - **diverged_plateau**: the run made progress and lost at least half of it for
    good, without blowing up: with :math:`L_0` the initial and :math:`B` the best
    full-set loss over the checkpoints, :math:`L_0 - B \ge 0.1 L_0`, the final loss
    is at least :math:`B + 0.5 (L_0 - B)`, and the run is not *exploding*. Onset: the
    first checkpoint after the best whose loss reached that level;
- **healthy**: no label and final training accuracy >= ``ACC_OK``;
- **other**: no label but accuracy below ``ACC_OK`` (slow or stuck runs that none of
  the modes describes). They count against precision when flagged, but not in
  the false-alarm rate, whose denominator is the healthy runs.

No run of the corpus has an activation on its output (``output_activation``): every
such finding on it is a false alarm, and its recall is not measured here.

Checkpoints are at steps 0, 1, 2, 4, 8, 12, 16, then every 10 steps and at the end, so
an onset after step 16 is known to within 10 steps.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Bump when training or measurement code here changes: it is part of the cache key.
CORPUS_VERSION = 3

ACC_OK = 0.85  # healthy needs at least this final training accuracy
DEAD_LABEL = 0.5  # fraction of a ReLU layer's units never positive on the full set
SAT_LABEL = 0.5  # fraction of a sigmoid/tanh layer's outputs near an asymptote
SAT_EPS = 0.01  # "near an asymptote": within this distance, in output units
VANISH_LABEL = 1e-3  # first/last RMS-gradient ratio
DIVERGE_FACTOR = 10.0  # loss above this multiple of the initial loss = diverged
STOP_AFTER_NONFINITE = 40  # steps trained after the first NaN loss (two windows)
STALL_LOSS = 0.95  # stalled: the full-set loss never fell below this x its initial value
STALL_MOTION = 1e-3  # stalled: every weight layer within this of its initial weights
PLATEAU_PROGRESS = 0.1  # diverged_plateau: progress made, as a share of the initial loss
PLATEAU_LOST = 0.5  # diverged_plateau: share of that progress lost at the end

ACTS = ("relu", "leaky_relu", "gelu", "sigmoid", "tanh")
INITS = ("default", "he", "xavier", "large_normal")
OPTS = ("sgd", "momentum", "adam")
NORMS = ("none", "batch", "layer")
DATASETS = ("digits", "breast_cancer", "wine", "moons", "circles")
ARCHS = ("mlp", "cnn", "resmlp", "rnn")


@dataclass(frozen=True)
class RunConfig:
    """One training run, as data. ``recipe`` only records which sampler drew it."""

    run_id: int
    recipe: str
    arch: str  # mlp | cnn | resmlp | rnn (cnn and rnn: digits only)
    act: str  # relu | leaky_relu | gelu | sigmoid | tanh (rnn: relu | tanh)
    init: str  # default | he | xavier | large_normal (N(0, 1) weights)
    opt: str  # sgd | momentum (SGD, 0.9) | adam
    lr: float
    norm: str  # none | batch | layer (BatchNorm / LayerNorm, GroupNorm(1) in the CNN)
    dataset: str
    depth: int  # hidden layers (mlp), conv layers (cnn), blocks (resmlp), layers (rnn)
    width: int  # hidden units / channels
    steps: int = 300
    batch: int = 64
    seed: int = 0
    n_train: int = 0  # use the first n_train examples of a stratified shuffle (0 = all)

    def key(self) -> str:
        """Content hash of everything that changes the run (not run_id or recipe)."""
        d = dataclasses.asdict(self)
        d.pop("run_id")
        d.pop("recipe")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        return (
            f"{self.arch}{self.depth}x{self.width} {self.act} init={self.init} "
            f"{self.opt} lr={self.lr:g} norm={self.norm} {self.dataset}"
        )


# -- corpus sampling ----------------------------------------------------------------------
def _pick(rng: random.Random, xs: Any) -> Any:
    return xs[rng.randrange(len(xs))]


def _arch_dataset(rng: random.Random, archs: tuple[str, ...] = ARCHS) -> tuple[str, str]:
    arch = _pick(rng, archs)
    ds = "digits" if arch in ("cnn", "rnn") else _pick(rng, DATASETS)
    return arch, ds


def _shape(rng: random.Random, arch: str, deep: bool = False) -> tuple[int, int]:
    if arch == "cnn":
        return (rng.choice([3, 4]) if deep else rng.choice([2, 3])), rng.choice([8, 16])
    if arch == "rnn":
        return rng.choice([1, 2]), rng.choice([32, 64])
    if deep:
        return rng.choice([6, 8, 10]), rng.choice([32, 64])
    return rng.choice([2, 3, 4]), rng.choice([32, 64, 128])


def _fix_rnn_act(arch: str, act: str) -> str:
    if arch != "rnn":
        return act
    return "relu" if act in ("relu", "leaky_relu", "gelu") else "tanh"


def _recipe(rng: random.Random, recipe: str) -> dict[str, Any]:
    """Draw the varying fields of one config. Recipes bias toward a failure mode."""
    if recipe == "healthy":
        arch, ds = _arch_dataset(rng)
        depth, width = _shape(rng, arch)
        act = _pick(rng, ACTS)
        init = {"relu": "he", "leaky_relu": "he", "gelu": "he"}.get(act, "xavier")
        init = _pick(rng, (init, "default"))
        opt = _pick(rng, OPTS)
        lr = rng.choice([1e-3, 3e-3, 1e-2]) if opt == "adam" else rng.choice([0.03, 0.1])
        if opt == "sgd":
            lr *= 3
        norm = _pick(rng, NORMS)
    elif recipe == "dying":  # ReLU with a large step size (the classic way units die)
        arch, ds = _arch_dataset(rng, ("mlp", "cnn", "resmlp", "mlp"))
        depth, width = _shape(rng, arch)
        act, init = "relu", _pick(rng, ("default", "he", "xavier"))
        opt = _pick(rng, OPTS)
        lr = rng.choice([0.03, 0.1, 0.3]) if opt == "adam" else rng.choice([0.5, 1.0, 2.0])
        norm = _pick(rng, ("none", "none", "layer"))
    elif recipe == "vanishing":  # deep sigmoid/tanh stacks at ordinary init
        arch, ds = _arch_dataset(rng, ("mlp", "mlp", "cnn"))
        depth, width = _shape(rng, arch, deep=True)
        act = _pick(rng, ("sigmoid", "sigmoid", "tanh"))
        init = _pick(rng, ("default", "xavier"))
        opt = _pick(rng, ("sgd", "momentum", "adam"))
        lr = rng.choice([1e-4, 1e-3]) if opt == "adam" else rng.choice([0.01, 0.05, 0.2])
        norm = "none"
    elif recipe == "exploding":  # large init or large steps
        arch, ds = _arch_dataset(rng, ("mlp", "resmlp", "rnn", "cnn"))
        depth, width = _shape(rng, arch, deep=rng.random() < 0.5)
        act = _pick(rng, ("relu", "leaky_relu", "gelu", "relu"))
        init = _pick(rng, ("large_normal", "he", "default"))
        opt = _pick(rng, ("sgd", "momentum", "sgd"))
        lr = rng.choice([0.3, 1.0, 3.0]) if init != "large_normal" else rng.choice([0.01, 0.1])
        norm = "none"
    elif recipe == "saturation":  # sigmoid/tanh driven into their tails
        arch, ds = _arch_dataset(rng, ("mlp", "mlp", "rnn", "cnn"))
        depth, width = _shape(rng, arch)
        act = _pick(rng, ("sigmoid", "tanh"))
        init = _pick(rng, ("large_normal", "large_normal", "default"))
        opt = _pick(rng, OPTS)
        if init == "large_normal":
            lr = rng.choice([1e-3, 1e-2]) if opt == "adam" else rng.choice([0.01, 0.1])
        else:
            lr = rng.choice([0.1, 0.3]) if opt == "adam" else rng.choice([3.0, 10.0])
        norm = "none"
    elif recipe == "random":
        arch, ds = _arch_dataset(rng)
        depth, width = _shape(rng, arch, deep=rng.random() < 0.3)
        act, init, opt, norm = (_pick(rng, x) for x in (ACTS, INITS, OPTS, NORMS))
        lr = rng.choice([1e-4, 1e-3, 1e-2, 0.1]) if opt == "adam" else 10 ** rng.uniform(-2, 0.5)
        lr = float(f"{lr:.2g}")
    else:
        raise ValueError(f"unknown recipe {recipe!r}")
    return {
        "arch": arch,
        "act": _fix_rnn_act(arch, act),
        "init": init,
        "opt": opt,
        "lr": lr,
        "norm": "none" if arch == "rnn" else norm,
        "dataset": ds,
        "depth": depth,
        "width": width,
    }


#: Share of the corpus drawn from each recipe.
RECIPE_MIX = {
    "healthy": 0.28,
    "dying": 0.14,
    "vanishing": 0.14,
    "exploding": 0.12,
    "saturation": 0.12,
    "random": 0.20,
}


def sample_corpus(n: int, seed: int = 0, steps: int = 300) -> list[RunConfig]:
    """``n`` seeded configs: recipes in :data:`RECIPE_MIX` proportions, in mixed order."""
    rng = random.Random(seed)
    names: list[str] = []
    for name, share in RECIPE_MIX.items():
        names += [name] * round(share * n)
    while len(names) < n:
        names.append("random")
    names = names[:n]
    rng.shuffle(names)
    out = []
    for i, r in enumerate(names):
        fields = _recipe(rng, r)
        # the CNN's full-set measurements dominate its cost: train it on 720 digits
        n_train = 720 if fields["arch"] == "cnn" else 0
        out.append(
            RunConfig(
                run_id=i,
                recipe=r,
                steps=steps,
                seed=rng.randrange(2**31),
                n_train=n_train,
                **fields,
            )
        )
    return out


# -- data --------------------------------------------------------------------------------
@functools.cache
def load_dataset(name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Standardized features (float32), labels and class count. Offline sklearn data."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    if name == "digits":
        X, y = datasets.load_digits(return_X_y=True)
    elif name == "breast_cancer":
        X, y = datasets.load_breast_cancer(return_X_y=True)
    elif name == "wine":
        X, y = datasets.load_wine(return_X_y=True)
    elif name == "moons":
        X, y = datasets.make_moons(n_samples=1000, noise=0.2, random_state=0)
    elif name == "circles":
        X, y = datasets.make_circles(n_samples=1000, noise=0.1, factor=0.5, random_state=0)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    X = StandardScaler().fit_transform(X)
    order = np.random.default_rng(0).permutation(len(y))  # so prefixes are class-mixed
    X, y = X[order], y[order]
    return (
        torch.tensor(X, dtype=torch.float32),
        torch.tensor(y, dtype=torch.long),
        int(y.max()) + 1,
    )


def inputs_for(arch: str, X: torch.Tensor) -> torch.Tensor:
    """Digits as images (N, 1, 8, 8) for the CNN, as 8 rows of 8 for the RNN."""
    if arch == "cnn":
        return X.reshape(-1, 1, 8, 8)
    if arch == "rnn":
        return X.reshape(-1, 8, 8)
    return X


# -- models ------------------------------------------------------------------------------
def make_act(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU,
        "leaky_relu": nn.LeakyReLU,
        "gelu": nn.GELU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
    }[name]()


def _norm1d(kind: str, width: int) -> list[nn.Module]:
    options: dict[str, list[nn.Module]] = {
        "none": [],
        "batch": [nn.BatchNorm1d(width)],
        "layer": [nn.LayerNorm(width)],
    }
    return options[kind]


class ResBlock(nn.Module):
    """Pre-norm residual MLP block: ``x + fc2(act(fc1(norm(x))))``."""

    def __init__(self, width: int, act: str, norm: str) -> None:
        super().__init__()
        self.norm = nn.Sequential(*_norm1d(norm, width))
        self.fc1 = nn.Linear(width, width)
        self.act = make_act(act)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class RNNClassifier(nn.Module):
    """``nn.RNN`` over the rows of a digit; the last step's output feeds a Linear head."""

    def __init__(self, n_in: int, width: int, layers: int, act: str, n_out: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(n_in, width, num_layers=layers, nonlinearity=act, batch_first=True)
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out[:, -1])


def build_model(cfg: RunConfig, n_in: int, n_out: int) -> nn.Module:
    w = cfg.width
    if cfg.arch == "mlp":
        layers: list[nn.Module] = []
        d = n_in
        for _ in range(cfg.depth):
            layers += [nn.Linear(d, w), *_norm1d(cfg.norm, w), make_act(cfg.act)]
            d = w
        return nn.Sequential(*layers, nn.Linear(d, n_out))
    if cfg.arch == "resmlp":
        blocks = [ResBlock(w, cfg.act, cfg.norm) for _ in range(cfg.depth)]
        return nn.Sequential(
            nn.Linear(n_in, w),
            *blocks,
            *_norm1d(cfg.norm, w),
            make_act(cfg.act),
            nn.Linear(w, n_out),
        )
    if cfg.arch == "cnn":
        layers = []
        c = 1
        for i in range(cfg.depth):
            stride = 2 if i == 1 else 1  # 8x8 -> 4x4 after the second conv
            norm: dict[str, list[nn.Module]] = {
                "none": [],
                "batch": [nn.BatchNorm2d(w)],
                "layer": [nn.GroupNorm(1, w)],
            }
            layers += [nn.Conv2d(c, w, 3, stride=stride, padding=1), *norm[cfg.norm]]
            layers.append(make_act(cfg.act))
            c = w
        return nn.Sequential(
            *layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * w, n_out)
        )
    if cfg.arch == "rnn":
        return RNNClassifier(8, w, cfg.depth, cfg.act, n_out)
    raise ValueError(f"unknown arch {cfg.arch!r}; choose from {', '.join(ARCHS)}")


@torch.no_grad()
def init_model(model: nn.Module, init: str, act: str) -> None:
    """Re-initialise weight matrices (Linear, Conv, RNN); biases to 0 except ``default``."""
    if init == "default":
        return
    # kaiming gain per activation (GELU as ReLU; sigmoid has no entry: linear gain)
    nl: Any = {"relu": "relu", "gelu": "relu", "leaky_relu": "leaky_relu"}.get(act, act)
    for name, p in model.named_parameters():
        if p.ndim < 2:
            if "bias" in name:
                p.zero_()
            continue
        if init == "he":
            nn.init.kaiming_normal_(p, nonlinearity=nl if nl != "sigmoid" else "linear")
        elif init == "xavier":
            nn.init.xavier_normal_(p)
        elif init == "large_normal":
            nn.init.normal_(p, 0.0, 1.0)
        else:
            raise ValueError(f"unknown init {init!r}; choose from {', '.join(INITS)}")


def make_optimizer(cfg: RunConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.opt == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)
    if cfg.opt == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    if cfg.opt == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.opt!r}; choose from {', '.join(OPTS)}")


# -- outcome measurements (never through gradvitals) ------------------------------------
def checkpoints(steps: int) -> list[int]:
    """Steps at which the probe measures the model: dense early, then every 10."""
    early = [0, 1, 2, 4, 8, 12, 16]
    return sorted({s for s in early if s < steps} | set(range(20, steps, 10)) | {steps})


def _unit_stats(name: str, out: torch.Tensor, kind: str) -> dict[str, float]:
    """Per-layer outcome numbers of one full-set forward pass."""
    if out.ndim == 3:  # RNN output (N, T, H): units are the last dim
        dims: tuple[int, ...] = (0, 1)
    else:  # (N, C) or (N, C, H, W): units are dim 1
        dims = tuple(d for d in range(out.ndim) if d != 1)
    if kind == "zero_floor":  # never-positive fraction over every example and position
        positive = out.amax(dim=dims) > 0
        return {"never_positive": float(1.0 - positive.float().mean())}
    # sigmoid: within eps of 0 or 1; tanh: within eps of -1 or 1
    sat = (out < SAT_EPS) | (out > 1 - SAT_EPS) if kind == "sigmoid" else out.abs() > 1 - SAT_EPS
    return {"saturation": float(sat.float().mean())}


def _site_kinds(model: nn.Module) -> dict[str, tuple[nn.Module, str, str]]:
    """Modules whose outputs are measured: name -> (module, activation, stat kind)."""
    sites: dict[str, tuple[nn.Module, str, str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.GELU)):
            act = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu"}[type(m)]
            sites[name] = (m, act, "zero_floor")
        elif isinstance(m, nn.Sigmoid):
            sites[name] = (m, "sigmoid", "sigmoid")
        elif isinstance(m, nn.Tanh):
            sites[name] = (m, "tanh", "tanh")
        elif isinstance(m, nn.RNN):
            act = m.nonlinearity
            sites[name] = (m, act, "zero_floor" if act == "relu" else "tanh")
    return sites


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.RNN))]


def _weight_grad_rms(m: nn.Module) -> float:
    gs = [p.grad for n, p in m.named_parameters() if "weight" in n and p.grad is not None]
    if not gs:
        return float("nan")
    sq = sum(float(g.double().pow(2).sum()) for g in gs)
    return math.sqrt(sq / sum(g.numel() for g in gs))


def measure(probe: nn.Module, X: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Outcome numbers of the probe (a copy of the trained model) on the full set.

    One train-mode pass (normalization uses the whole set's batch statistics, as
    training does) gives the activations, the loss, the accuracy and the gradient
    ratio; the labels use these. Eval-mode loss and accuracy are recorded too.
    """
    sites = _site_kinds(probe)
    layers: dict[str, dict[str, Any]] = {}
    handles = []
    for name, (m, act, kind) in sites.items():

        def hook(
            mod: nn.Module, inp: Any, out: Any, name: str = name, act: str = act, kind: str = kind
        ) -> None:
            o = out[0] if isinstance(out, tuple) else out
            layers[name] = {"act": act, **_unit_stats(name, o.detach(), kind)}

        handles.append(m.register_forward_hook(hook))
    probe.train()
    probe.zero_grad(set_to_none=True)
    with torch.enable_grad():
        logits = probe(X)
        loss = F.cross_entropy(logits, y)
        loss.backward()
    for h in handles:
        h.remove()
    acc = float((logits.detach().argmax(1) == y).float().mean())
    wl = _weight_layers(probe)
    first, last = _weight_grad_rms(wl[0]), _weight_grad_rms(wl[-1])
    ratio = first / last if last > 0 else float("nan")
    probe.eval()
    with torch.no_grad():
        logits_eval = probe(X)
        loss_eval = float(F.cross_entropy(logits_eval, y))
        acc_eval = float((logits_eval.argmax(1) == y).float().mean())
    probe.zero_grad(set_to_none=True)
    return {
        "loss": float(loss.detach()),
        "acc": acc,
        "loss_eval": loss_eval,
        "acc_eval": acc_eval,
        "grad_ratio": ratio,
        "layers": layers,
    }


def weight_motion(model: nn.Module, w0: dict[str, torch.Tensor]) -> float:
    r"""The largest relative distance of a weight tensor from its initial value,
    :math:`\max_l \|W_l - W_{l,0}\| / \|W_{l,0}\|` (NaN when a weight is not finite).

    >>> m = nn.Linear(2, 2); w0 = {"weight": m.weight.detach().clone()}
    >>> weight_motion(m, w0)
    0.0
    """
    worst = 0.0
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in w0:
                ref = float(w0[n].double().norm())
                d = float((p.detach().double() - w0[n].double()).norm())
                if not math.isfinite(d):
                    return float("nan")
                worst = max(worst, d / ref if ref > 0 else d)
    return worst


# -- one run -----------------------------------------------------------------------------
def train_run(cfg: RunConfig) -> dict[str, Any]:
    """Train ``cfg`` with gradvitals watching (defaults); measure outcomes on the side.

    Returns a JSON-able dict: the config, per-step losses and epoch boundaries (what
    loss-only tools see), checkpoint measurements, gradvitals' window records and
    findings, and the wall time.
    """
    import gradvitals

    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    X0, y, n_out = load_dataset(cfg.dataset)
    if cfg.n_train:
        X0, y = X0[: cfg.n_train], y[: cfg.n_train]
    X = inputs_for(cfg.arch, X0)
    model = build_model(cfg, X0.shape[1] if cfg.arch not in ("cnn", "rnn") else 8, n_out)
    init_model(model, cfg.init, cfg.act)
    probe = build_model(cfg, X0.shape[1] if cfg.arch not in ("cnn", "rnn") else 8, n_out)
    opt = make_optimizer(cfg, model.parameters())
    monitor = gradvitals.watch(model, opt, console=False)

    ckpts = set(checkpoints(cfg.steps))
    measures: list[dict[str, Any]] = []
    losses: list[float] = []
    batch_idx: list[int] = []  # batch index within its epoch (what Lightning passes)
    epoch_ends: list[int] = []  # step counts at which an epoch ended
    gen = torch.Generator().manual_seed(cfg.seed)
    n = X.shape[0]
    bs = min(cfg.batch, n)
    step, first_bad = 0, None

    w0 = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}

    def probe_now() -> None:
        probe.load_state_dict(model.state_dict())
        measures.append(
            {"step": step, **measure(probe, X, y), "weight_motion": weight_motion(model, w0)}
        )

    done = False
    while not done:
        perm = torch.randperm(n, generator=gen)
        for bi, start in enumerate(range(0, n - bs + 1, bs)):
            if step in ckpts:
                probe_now()
            idx = perm[start : start + bs]
            model.train()
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            monitor.observe_loss(loss)
            value = float(loss.detach())
            losses.append(value)
            batch_idx.append(bi)
            step += 1
            if first_bad is None and not math.isfinite(value):
                first_bad = step - 1
            stop = first_bad is not None and step - first_bad >= STOP_AFTER_NONFINITE
            if step >= cfg.steps or stop:
                done = True
                break
        epoch_ends.append(step)
    probe_now()
    monitor.close()
    return {
        "config": dataclasses.asdict(cfg),
        "losses": losses,
        "batch_idx": batch_idx,
        "epoch_ends": epoch_ends,
        "measures": measures,
        "history": [r.to_dict() for r in monitor.history],
        "findings": [  # roots and the consequences nested under them
            {"kind": f.kind.value, "step": f.step, "layer": f.layer, "root": f is root}
            for root in monitor.findings
            for f in root.walk()
        ],
        "preflight": [{"kind": f.kind.value, "layer": f.layer} for f in monitor.preflight],
        "train_seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


# -- labels ------------------------------------------------------------------------------
def _first(steps: list[int]) -> int | None:
    return min(steps) if steps else None


def label_run(run: dict[str, Any]) -> dict[str, Any]:
    """Apply the label rules of the module docstring to one run's measurements.

    Returns ``{"labels": [...], "onset": {label: step}, "class": healthy|failing|other,
    "final_acc": ..., ...}``.
    """
    ms = run["measures"]
    losses = run["losses"]
    init_loss = ms[0]["loss"]
    final = ms[-1]
    labels: list[str] = []
    onset: dict[str, int] = {}

    def blown(v: float) -> bool:
        return not math.isfinite(v) or v > DIVERGE_FACTOR * init_loss

    nonfinite = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    diverged = [m["step"] for m in ms if blown(m["loss"])]
    if nonfinite or diverged:
        labels.append("exploding")
        # onset: the first step whose minibatch loss shows it
        first_seen = [i for i, v in enumerate(losses) if blown(v)]
        onset["exploding"] = min(first_seen + nonfinite + diverged)
    # a model that ended non-finite cannot be judged for the other modes
    assessable = math.isfinite(final["loss"])
    dying = sat = False
    if assessable:

        def crossed(stat: str, thr: float, acts: tuple[str, ...], m: dict[str, Any]) -> bool:
            return any(
                lay.get(stat, 0.0) >= thr for lay in m["layers"].values() if lay["act"] in acts
            )

        dying = crossed("never_positive", DEAD_LABEL, ("relu",), final)
        if dying:
            labels.append("dying_relu")
            onset["dying_relu"] = min(
                m["step"] for m in ms if crossed("never_positive", DEAD_LABEL, ("relu",), m)
            )
        sat = crossed("saturation", SAT_LABEL, ("sigmoid", "tanh"), final)
        if sat:
            labels.append("saturation")
            onset["saturation"] = min(
                m["step"] for m in ms if crossed("saturation", SAT_LABEL, ("sigmoid", "tanh"), m)
            )
        r0 = ms[0]["grad_ratio"]
        if (
            math.isfinite(r0)
            and r0 < VANISH_LABEL
            and final["acc"] < ACC_OK
            and not dying
            and not sat
        ):
            labels.append("vanishing")
            onset["vanishing"] = 0
    if assessable:
        losses_ck = [m["loss"] for m in ms]
        motion = final.get("weight_motion", float("nan"))
        if (
            min(losses_ck) >= STALL_LOSS * init_loss
            and math.isfinite(motion)
            and motion <= STALL_MOTION
        ):
            labels.append("stalled")
            onset["stalled"] = 0
        best_i = min(range(len(ms)), key=lambda i: ms[i]["loss"])
        best = ms[best_i]["loss"]
        gained = init_loss - best
        level = best + PLATEAU_LOST * gained
        if (
            "exploding" not in labels
            and gained >= PLATEAU_PROGRESS * init_loss
            and final["loss"] >= level
        ):
            labels.append("diverged_plateau")
            onset["diverged_plateau"] = next(m["step"] for m in ms[best_i:] if m["loss"] >= level)
    if labels:
        klass = "failing"
    elif final["acc"] >= ACC_OK:
        klass = "healthy"
    else:
        klass = "other"

    def worst(stat: str, acts: tuple[str, ...]) -> float:
        vals = [v.get(stat, 0.0) for v in final["layers"].values() if v["act"] in acts]
        return max(vals) if vals else float("nan")

    return {
        "labels": labels,
        "onset": onset,
        "class": klass,
        "assessable": assessable,
        "final_acc": final["acc"],
        "init_loss": init_loss,
        "max_loss_ratio": max(
            (v / init_loss for v in losses if math.isfinite(v)), default=float("nan")
        ),
        "init_grad_ratio": ms[0]["grad_ratio"],
        "final_grad_ratio": final["grad_ratio"],
        "max_dead": worst("never_positive", ("relu",)),
        "max_never_positive_other": worst("never_positive", ("leaky_relu", "gelu")),
        "max_saturation": worst("saturation", ("sigmoid", "tanh")),
        "weight_motion": final.get("weight_motion", float("nan")),
        "min_loss_ratio": min(m["loss"] for m in ms) / init_loss if init_loss else float("nan"),
        "final_loss_ratio": final["loss"] / init_loss if init_loss else float("nan"),
    }


def to_jsonable(x: Any) -> Any:
    """Numpy scalars and arrays to plain Python (NaN stays NaN: json writes ``NaN``)."""
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x
