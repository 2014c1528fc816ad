"""Model and optimizer surgery for in-flight repair: one function per action.

Every function keeps the optimizer consistent with the model:

- parameters keep their identity (re-initialisations write in place), so optimizer
  state stays attached to them; the state of re-initialised weights is reset (whole
  tensors are dropped and rebuilt lazily by the optimizer, rows are zeroed);
- new parameters (``add_norm``) join the parameter group of the layer they follow,
  so the number of groups, and hence any LR scheduler, is unchanged.

Randomness comes from the caller's ``torch.Generator``, never the global RNG.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> swap_activations(model, ("relu",), lambda old: nn.LeakyReLU(0.01))
['1']
>>> model[1]
LeakyReLU(negative_slope=0.01)
>>> find_incoming(model, "1", 8, "output")[0]
'0'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from gradvitals.torch._sites import activation_name_for_module

__all__ = [
    "GradClip",
    "StepGuard",
    "affine_before",
    "attention_modules",
    "find_incoming",
    "he_gain",
    "hidden_activations",
    "insert_norm",
    "norms_between",
    "reinit_layer",
    "reinit_rows",
    "reset_norm_rows",
    "reset_optimizer_state",
    "scale_lr",
    "scheduler_suspected",
    "swap_activations",
    "unmask_empty_rows",
    "xavier_gain",
]

#: the layers repair re-initialises by output rows: weight (out, in, ...) only, so not
#: ConvTranspose (in, out, ...) nor transformers' Conv1D (in, out)
_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
)
_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def _out_dim(m: nn.Module) -> int:
    if isinstance(m, nn.Linear):
        return int(m.out_features)
    return int(getattr(m, "out_channels", -1))


def _mul(v: Any, f: float) -> Any:
    return v * f if isinstance(v, (int, float, torch.Tensor)) and not isinstance(v, bool) else v


# -- learning rate and clipping ---------------------------------------------------------
def scale_lr(optimizer: torch.optim.Optimizer, factor: float, scheduler: Any = None) -> str:
    """Multiply every group's learning rate by ``factor``, and the scheduler's bases.

    Scales the group keys ``lr``, ``initial_lr``, ``max_lr`` and ``min_lr`` where
    present, and on the scheduler (and the schedulers inside a ``SequentialLR`` or
    ``ChainedScheduler``) ``base_lrs``, ``max_lrs``, ``_last_lr`` and ``eta_min``.

    Returns:
        ``"lr 0.5 -> 0.05"`` for the first group (plus the count of other groups).
    """
    old = optimizer.param_groups[0].get("lr", float("nan"))
    for g in optimizer.param_groups:
        for key in _LR_KEYS:
            v = g.get(key)
            if isinstance(v, torch.Tensor):
                v.mul_(factor)
            elif v is not None:
                g[key] = _mul(v, factor)
    if scheduler is not None:
        _scale_scheduler(scheduler, factor, depth=0)
    new = optimizer.param_groups[0].get("lr", float("nan"))
    more = len(optimizer.param_groups) - 1
    extra = f" (and {more} more group{'s' if more > 1 else ''})" if more else ""
    return f"lr {float(old):.3g} -> {float(new):.3g}{extra}"


def _scale_scheduler(s: Any, factor: float, depth: int) -> None:
    for attr in ("base_lrs", "max_lrs", "_last_lr"):
        vals = getattr(s, attr, None)
        if isinstance(vals, list):
            setattr(s, attr, [_mul(v, factor) for v in vals])
    eta = getattr(s, "eta_min", None)
    if isinstance(eta, (int, float)) and not isinstance(eta, bool):
        s.eta_min = eta * factor
    for inner in getattr(s, "_schedulers", None) or []:
        if depth < 4:
            _scale_scheduler(inner, factor, depth + 1)


def scheduler_suspected(optimizer: torch.optim.Optimizer) -> bool:
    """True when an LR scheduler was built on ``optimizer`` (it sets ``initial_lr``)."""
    return any("initial_lr" in g for g in optimizer.param_groups)


class GradClip:
    """An optimizer step pre-hook that clips the global gradient norm at ``max_norm``.

    It runs after your training loop's own clipping (and after ``GradScaler.step``
    unscaled the gradients) and only ever shortens a gradient: when your threshold is
    tighter than ``max_norm`` it never triggers, so the effective threshold is the
    smaller of the two.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.zeros(2)); opt = torch.optim.SGD([w], lr=1.0)
    >>> clip = GradClip(1.0); handle = clip.install(opt)
    >>> w.grad = torch.tensor([3.0, 4.0]); opt.step()
    >>> [round(v, 2) for v in w.tolist()]
    [-0.6, -0.8]
    """

    def __init__(self, max_norm: float) -> None:
        self.max_norm = float(max_norm)
        self.handle: Any = None

    def install(self, optimizer: torch.optim.Optimizer) -> Any:
        self.handle = optimizer.register_step_pre_hook(self)
        return self.handle

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, self.max_norm)


class StepGuard:
    """An optimizer step pre-hook that skips steps whose gradients are not finite.

    Like an AMP ``GradScaler`` does for inf gradients: the gradients are dropped
    (``p.grad = None``), so the optimizer leaves every parameter as it is, and the
    poisoned batch is skipped instead of the whole run being slowed down. Costs one
    host sync per step; used only once repair found a non-finite batch.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2)); opt = torch.optim.SGD([w], lr=1.0)
    >>> guard = StepGuard(); handle = guard.install(opt)
    >>> w.grad = torch.tensor([float("nan"), 1.0]); opt.step()
    >>> w.tolist(), guard.skipped
    ([1.0, 1.0], 1)
    """

    def __init__(self) -> None:
        self.skipped = 0
        self.handle: Any = None

    def install(self, optimizer: torch.optim.Optimizer) -> Any:
        self.handle = optimizer.register_step_pre_hook(self)
        return self.handle

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            return
        dense = [g for g in grads if g is not None and g.layout is torch.strided]
        ok = (
            bool(torch.stack([torch.isfinite(n) for n in torch._foreach_norm(dense)]).all())
            if dense
            else True
        )
        if not ok:
            for p in params:
                p.grad = None
            self.skipped += 1


def _open_empty_rows(mask: Any) -> Any:
    """``mask`` with every row that masks all of its keys (last dim) opened up.

    A bool mask (True: masked) loses those rows' True values; an additive float mask
    gets 0 where a row was all ``-inf``. Softmax over a row shifted by one constant is
    the softmax of the unshifted row, so this is what a finite fill (``-1e9``) gives.
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() == 0 or mask.shape[-1] == 0:
        return mask
    if mask.dtype == torch.bool:
        return mask & ~mask.all(-1, keepdim=True)
    if mask.is_floating_point():
        return mask.masked_fill(torch.isneginf(mask).all(-1, keepdim=True), 0.0)
    return mask


def unmask_empty_rows(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Forward pre-hook (``with_kwargs=True``) for ``nn.MultiheadAttention``.

    A query whose keys are all masked (``key_padding_mask`` row of a fully padded
    sequence, or an ``attn_mask`` row) makes softmax over all ``-inf``: NaN, which
    poisons the weights at the next step. The hook opens those rows, so they attend to
    every key; every other row is computed exactly as before. A row masked only by the
    two masks together is not seen.

    >>> import torch
    >>> mha = torch.nn.MultiheadAttention(4, 1, batch_first=True)
    >>> x = torch.randn(2, 3, 4); pad = torch.tensor([[False, True, True], [True] * 3])
    >>> bool(mha(x, x, x, key_padding_mask=pad)[0].isnan().any())
    True
    >>> h = mha.register_forward_pre_hook(unmask_empty_rows, with_kwargs=True)
    >>> out = mha(x, x, x, key_padding_mask=pad)[0]
    >>> bool(out.isfinite().all())
    True
    """
    given = list(args)
    for pos, key in ((3, "key_padding_mask"), (5, "attn_mask")):
        if key in kwargs:
            kwargs[key] = _open_empty_rows(kwargs[key])
        elif len(given) > pos:
            given[pos] = _open_empty_rows(given[pos])
    return tuple(given), kwargs


# -- where things are -------------------------------------------------------------------
def attention_modules(model: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """The ``nn.MultiheadAttention`` modules named in ``names`` or inside them."""
    found: dict[str, nn.Module] = {}
    named = dict(model.named_modules())
    for name in names:
        top = named.get(name)
        if top is None:
            continue
        for sub, m in top.named_modules(prefix=name):
            if isinstance(m, nn.MultiheadAttention):
                found.setdefault(sub, m)
    return list(found.items())


def _has_affine_after(mods: Sequence[tuple[str, nn.Module]], i: int) -> bool:
    return any(isinstance(m, _AFFINE) for _, m in mods[i + 1 :])


def hidden_activations(model: nn.Module) -> dict[str, str]:
    """Activation modules followed by a Linear/Conv (in registration order): name -> kind.

    The last activation of a model (an output sigmoid for ``BCELoss``, say) is not
    hidden and is never swapped.
    """
    mods = list(model.named_modules())
    out: dict[str, str] = {}
    for i, (name, m) in enumerate(mods):
        kind = activation_name_for_module(m)
        if kind and kind != "identity" and name and _has_affine_after(mods, i):
            out[name] = kind
    return out


def find_incoming(
    model: nn.Module, name: str, units: int, role: str = "output"
) -> tuple[str, nn.Module] | None:
    """The Linear/Conv layer whose outputs are the units of site ``name``.

    The nearest affine layer registered before the site with ``units`` outputs. For an
    ``"input"`` site (a Linear/Conv whose input is watched) that is the affine layer
    before it whose outputs feed it.
    """
    mods = list(model.named_modules())
    idx = next((i for i, (n, _) in enumerate(mods) if n == name), None)
    if idx is None:
        return None
    for n, m in reversed(mods[:idx]):
        if isinstance(m, _AFFINE) and _out_dim(m) == units:
            if role == "input" and n == name:
                continue
            return n, m
    return None


def affine_before(model: nn.Module, name: str) -> tuple[str, nn.Module] | None:
    """The nearest Linear/Conv layer registered before module ``name``."""
    mods = list(model.named_modules())
    idx = next((i for i, (n, _) in enumerate(mods) if n == name), None)
    if idx is None:
        return None
    for n, m in reversed(mods[:idx]):
        if isinstance(m, _AFFINE):
            return n, m
    return None


def norms_between(model: nn.Module, first: str, last: str, units: int) -> list[nn.Module]:
    """Normalization layers with ``units`` features registered between two modules."""
    mods = list(model.named_modules())
    names = [n for n, _ in mods]
    if first not in names or last not in names:
        return []
    i, j = names.index(first), names.index(last)
    out: list[nn.Module] = []
    for _, m in mods[i + 1 : j]:
        w = getattr(m, "weight", None)
        if isinstance(m, _NORMS) and isinstance(w, torch.Tensor) and w.shape[0] == units:
            out.append(m)
    return out


# -- module swaps -----------------------------------------------------------------------
def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> int:
    # find every registration first: ``new`` may contain ``old`` (a wrapper)
    slots = [
        (parent, child_name)
        for parent in model.modules()
        for child_name, child in parent.named_children()
        if child is old
    ]
    for parent, child_name in slots:
        setattr(parent, child_name, new)
    return len(slots)


def swap_activations(
    model: nn.Module, kinds: Iterable[str], make: Callable[[nn.Module], nn.Module]
) -> list[str]:
    """Replace every hidden activation module of the given kinds with ``make(old)``.

    Returns the names swapped. A module registered under several names (shared) is
    replaced everywhere by one new module.
    """
    kinds = set(kinds)
    named = dict(model.named_modules())
    swapped: list[str] = []
    done: dict[int, nn.Module] = {}
    for name, kind in hidden_activations(model).items():
        if kind not in kinds:
            continue
        old = named[name]
        if id(old) not in done:
            new = make(old)
            done[id(old)] = new
            _replace(model, old, new)
        swapped.append(name)
    return swapped


def insert_norm(
    model: nn.Module, optimizer: torch.optim.Optimizer, exclude: Iterable[str] = ()
) -> list[str]:
    """Put a normalization before each hidden activation module fed by a Linear/Conv.

    The activation ``act`` becomes ``nn.Sequential(norm, act)``: ``nn.LayerNorm`` after
    a Linear, ``nn.GroupNorm(1, C)`` after a convolution (no batch statistics, so
    nothing changes between train and eval). Activations already preceded by a
    normalization are left alone. The new parameters join the optimizer group of the
    layer before them. ``exclude``: activation modules called at several places in
    ``forward`` (one norm cannot fit them all).

    Returns:
        The activation names that got a normalization.
    """
    exclude = set(exclude)
    named = dict(model.named_modules())
    done: list[str] = []
    for name in hidden_activations(model):
        if name in exclude:
            continue
        act = named[name]
        mods = list(model.named_modules())
        idx = next(i for i, (n, _) in enumerate(mods) if n == name)
        found = None
        for _, m in reversed(mods[:idx]):
            if isinstance(m, _NORMS) or activation_name_for_module(m) is not None:
                break  # already normalized, or no layer of its own before it
            if isinstance(m, _AFFINE):
                found = m
                break
        if found is None:
            continue
        units = _out_dim(found)
        w = _weight(found)
        norm: nn.Module = (
            nn.LayerNorm(units) if isinstance(found, nn.Linear) else nn.GroupNorm(1, units)
        )
        norm = norm.to(device=w.device, dtype=w.dtype)
        if _replace(model, act, nn.Sequential(norm, act)):
            _join_group(optimizer, w, list(norm.parameters()))
            done.append(name)
    return done


def _join_group(optimizer: torch.optim.Optimizer, neighbour: torch.Tensor, new: list[Any]) -> None:
    if not new:
        return
    for g in optimizer.param_groups:
        if any(p is neighbour for p in g["params"]):
            g["params"].extend(new)
            return
    optimizer.param_groups[-1]["params"].extend(new)


# -- initialisation ---------------------------------------------------------------------
def _weight(layer: nn.Module) -> torch.Tensor:
    w = getattr(layer, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} has no weight tensor to initialise")
    return w


def _fan_in(w: torch.Tensor) -> int:
    return int(w[0].numel()) if w.ndim > 1 else int(w.numel())


def _fan_out(w: torch.Tensor) -> int:
    return int(w.numel() // w.shape[1]) if w.ndim > 1 else int(w.numel())


@torch.no_grad()
def reinit_layer(
    layer: nn.Module, scheme: str, gain: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """Re-initialise ``layer.weight`` in place (``"he"`` normal or ``"xavier"`` uniform
    with ``gain``) and zero its bias. Returns the parameters changed."""
    w = _weight(layer)
    if scheme == "he":
        std = gain / math.sqrt(max(_fan_in(w), 1))
        new = torch.randn(w.shape, generator=generator) * std
    elif scheme == "xavier":
        bound = gain * math.sqrt(6.0 / max(_fan_in(w) + _fan_out(w), 1))
        new = (torch.rand(w.shape, generator=generator) * 2 - 1) * bound
    else:  # pragma: no cover - internal
        raise ValueError(f"unknown init scheme {scheme!r}; use 'he' or 'xavier'")
    w.copy_(new.to(device=w.device, dtype=w.dtype))
    changed: list[torch.Tensor] = [w]
    bias = getattr(layer, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.zero_()
        changed.append(bias)
    return changed


@torch.no_grad()
def reinit_rows(
    layer: nn.Module, rows: Sequence[int], gain: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """He-initialise the incoming weights of output units ``rows`` and zero their bias."""
    w = _weight(layer)
    idx = torch.as_tensor(list(rows), dtype=torch.long, device=w.device)
    std = gain / math.sqrt(max(_fan_in(w), 1))
    new = torch.randn((len(rows), *w.shape[1:]), generator=generator) * std
    w.index_copy_(0, idx, new.to(device=w.device, dtype=w.dtype))
    changed: list[torch.Tensor] = [w]
    bias = getattr(layer, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.index_fill_(0, idx, 0.0)
        changed.append(bias)
    return changed


@torch.no_grad()
def reset_norm_rows(norm: nn.Module, rows: Sequence[int]) -> list[torch.Tensor]:
    """Reset a normalization's affine entries of ``rows`` to weight 1, bias 0."""
    changed = []
    for attr, value in (("weight", 1.0), ("bias", 0.0)):
        t = getattr(norm, attr, None)
        if isinstance(t, torch.Tensor):
            idx = torch.as_tensor(list(rows), dtype=torch.long, device=t.device)
            t.index_fill_(0, idx, value)
            changed.append(t)
    return changed


@torch.no_grad()
def reset_optimizer_state(
    optimizer: torch.optim.Optimizer,
    params: Iterable[torch.Tensor],
    rows: Sequence[int] | None = None,
) -> None:
    """Forget the optimizer state of ``params`` (momentum, Adam moments...).

    With ``rows``, zero only those rows of each state tensor shaped like the parameter;
    otherwise drop the whole state, which the optimizer rebuilds on its next step.
    """
    for p in params:
        if p not in optimizer.state:
            continue
        if rows is None:
            del optimizer.state[p]
            continue
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        for v in optimizer.state[p].values():
            if isinstance(v, torch.Tensor) and v.shape == p.shape and v.ndim:
                v.index_fill_(0, idx.to(v.device), 0.0)


def he_gain(kind: str, slope: float) -> float:
    """He gain for the activation swapped in: sqrt(2) for ReLU, sqrt(2/(1+a^2)) leaky.

    >>> round(he_gain("relu", 0.01), 4), round(he_gain("leaky_relu", 0.01), 4)
    (1.4142, 1.4141)
    """
    if kind == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + slope**2))
    return math.sqrt(2.0)


def xavier_gain(kind: str) -> float:
    """Xavier gain for a saturating activation (``nn.init.calculate_gain``): tanh 5/3."""
    if kind in ("tanh", "hardtanh"):
        return 5.0 / 3.0
    return 1.0
