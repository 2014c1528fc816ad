"""Pre-flight lint: problems visible in a model before the first training step.

:func:`lint` returns :class:`~gradvitals.Finding` objects (``step=-1``). From the model
alone (and optionally one batch), four kinds:

- ``linear_collapse``: two affine layers (Linear/Conv) with no nonlinearity between
  them. ``W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2)``: the second layer adds no
  capacity (see :func:`gradvitals.collapse`).
- ``deep_saturating_stack``: ``depth_threshold`` or more sigmoid/tanh hidden layers
  with no normalization layer and no residual connection: sigmoid' <= 1/4, so the
  gradient reaching the first layer can shrink 4x per layer (Glorot & Bengio 2010).
- ``init_mismatch``: a ReLU-family stack of depth >= ``depth_threshold`` whose weights
  have PyTorch's default variance, ``fan_in * Var(w) = 1/3``, instead of He's 2. The
  forward signal's second moment then shrinks ``(fan_in Var(w)) / 2 = 1/6`` per layer.
  Measured as ``fan_in * mean(w^2)``; fires when the median over the layers is below
  ``init_variance_threshold`` (0.5).
- ``born_dead``: a narrow ReLU stack of ``depth_threshold`` or more hidden layers
  (Linear -> ReLU, no normalization between). At one input a width-N ReLU layer is all
  zero with probability 2^-N, so with hidden widths N_1..N_{L-1} some layer is dead
  there with probability ``1 - prod(1 - 2^-N_i)`` (``1 - (1 - 2^-N)^(L-1)`` for equal
  widths; Lu et al. 2020, Rister & Rubin 2020). Fires above ``born_dead_threshold``.
  With ``example_input``, also: ReLU layers with most units (``dead_fraction_threshold``)
  or all units zero on every example at initialisation.

Given a batch with its ``target`` and ``loss_fn`` (see ``gradvitals.torch._lint_loss``
for how they are traced), four more:

- ``output_activation``: an output activation the loss applies again (softmax before
  ``CrossEntropyLoss``, sigmoid before ``BCEWithLogitsLoss``, ReLU before either),
  anything but log-probabilities into ``NLLLoss``, softmax over one unit, or a bounded
  output (sigmoid, tanh, ReLU) with targets outside its range.
- ``loss_mismatch``: MSE/L1 between a multi-unit output and a column of class ids,
  binary cross-entropy on targets outside [0, 1], cross-entropy over one unit.
- ``unstable_loss``: ``log`` of a softmax/sigmoid output instead of ``log_softmax``,
  ``logsigmoid`` or ``BCEWithLogitsLoss``.
- ``unscaled_data``: inputs with RMS outside ``input_scale_range`` (1e-3, 10) or mixed
  column scales; regression targets outside ``target_scale_range`` (1e-3, 100).

How lint reads the model:

- **Order.** Statically, lint trusts only ``nn.Sequential`` (nested is fine) for the
  order in which layers run; a custom ``forward()`` may call its children in any order
  or add skip connections, so two Linear layers registered one after the other in a
  custom module are *not* reported as collapsing. Pass ``example_input`` and lint runs
  one forward pass (``torch.no_grad``, hooks removed after, buffers and RNG restored)
  and follows the actual data flow: layer B collapses into layer A when B's input is
  the very tensor A produced (through dropout, identity, flatten, average pooling or
  batch norm), unmodified.
- **Activations** are seen only as modules (``nn.ReLU()``, ``nn.Tanh()``...).
  Functional calls (``F.relu(x)``, ``torch.tanh(x)``) are invisible statically, so the
  depth-based rules count only activation modules; with ``example_input``, a functional
  activation between two layers correctly breaks a collapse (it makes a new tensor).
  An in-place functional (``x.relu_()``) is caught by the tensor's version counter.
- **Residual connections** cannot be seen in a module tree. ``deep_saturating_stack``
  stays quiet when any module class name suggests one (``Residual``, ``ResBlock``,
  ``Bottleneck``, ``BasicBlock``, ``Skip``, ``Shortcut``, ``Highway``); otherwise it
  assumes a plain chain.
- Depthwise/grouped convolutions followed by a 1x1 convolution (separable convolution)
  are a deliberate factorisation and are not reported as collapsing.

>>> import torch
>>> from torch import nn
>>> findings = lint(nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 2)))
>>> [(f.kind.value, f.layer, f.step) for f in findings]
[('linear_collapse', '1', -1)]
>>> lint(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)))
[]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import nn

from gradvitals import _preflight_rules as preflight
from gradvitals.activations import activation_name_for_module
from gradvitals.errors import UsageError
from gradvitals.findings import Cause, FailureMode, Finding
from gradvitals.remedies import remedies_for
from gradvitals.stats import SATURATING
from gradvitals.torch._collapse import _DROPOUT
from gradvitals.torch._lint_loss import (
    OpRecorder,
    data_findings,
    output_loss_findings,
    output_tensor,
)
from gradvitals.torch._modules import CONVOLUTIONS
from gradvitals.torch._stats import unit_dim_for

__all__ = ["born_dead_probability", "lint"]

_CONV = CONVOLUTIONS
_AFFINE = (nn.Linear, *_CONV)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_NORM: tuple[type[nn.Module], ...] = (
    *_BATCHNORM,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
#: linear, shape-only or identity-at-inference modules: they do not break an affine chain
_NEUTRAL = (
    nn.Identity,
    *_DROPOUT,
    nn.Flatten,
    nn.Unflatten,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
#: modules whose children are not called as modules in order: one opaque leaf each
_OPAQUE = (nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase)

#: ReLU-family activations that want He init
_RELU_FAMILY = frozenset({"relu", "relu6", "leaky_relu", "prelu", "rrelu"})
#: activations whose zero output has zero gradient: a unit at 0 everywhere is dead
_DIES_AT_ZERO = frozenset({"relu", "relu6"})
#: max |f'| of saturating activations, for the deep-stack message
_MAX_SLOPE = {"sigmoid": 0.25, "hardsigmoid": 1.0 / 6.0}
_RESIDUAL_HINTS = (
    "residual",
    "resblock",
    "bottleneck",
    "basicblock",
    "skip",
    "shortcut",
    "highway",
)

_HE = 2.0
_PYTORCH_DEFAULT = 1.0 / 3.0
_MIN_EXAMPLES = 16  # below this many examples only an all-dead layer is reported


class _Kind(Enum):
    AFFINE = "affine"
    ACT = "activation"
    BATCHNORM = "batchnorm"
    NORM = "norm"
    NEUTRAL = "neutral"
    OTHER = "other"


def _kind(m: nn.Module) -> _Kind:
    if isinstance(m, _AFFINE):
        return _Kind.AFFINE
    if isinstance(m, _BATCHNORM):
        return _Kind.BATCHNORM
    if isinstance(m, _NORM):
        return _Kind.NORM
    if isinstance(m, _NEUTRAL):
        return _Kind.NEUTRAL
    act = activation_name_for_module(m)
    if act == "identity":  # transformers' LinearActivation: y = x
        return _Kind.NEUTRAL
    if act is not None:
        return _Kind.ACT
    return _Kind.OTHER


@dataclass
class _Leaf:
    name: str
    module: nn.Module
    kind: _Kind


@dataclass
class _Site:
    """One activation call (or module, statically) and the affine layer feeding it."""

    name: str
    act: str
    producer: str | None = None
    producer_module: nn.Module | None = None
    through_norm: bool = False
    units: int = 0
    dead_units: int = 0
    n_examples: int = 0


@dataclass
class _Pair:
    first: str
    second: str
    between: list[str]
    source: str


@dataclass
class _Trace:
    sites: list[_Site] = field(default_factory=list)
    pairs: list[_Pair] = field(default_factory=list)


# --- static reading ----------------------------------------------------------------------


def _leaves(model: nn.Module) -> list[_Leaf]:
    """Leaf modules in registration order (each shared module once); opaque ones whole."""
    out: list[_Leaf] = []
    seen: set[int] = set()

    def walk(name: str, m: nn.Module) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        children = list(m.named_children())
        if not children or isinstance(m, _OPAQUE) or _kind(m) is not _Kind.OTHER:
            out.append(_Leaf(name, m, _kind(m)))
            return
        for child_name, child in children:
            walk(f"{name}.{child_name}" if name else child_name, child)

    walk("", model)
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(len(parts))]


def _in_sequential_order(modules: dict[str, nn.Module], names: list[str]) -> bool:
    """True when every name lies in one tree of ``nn.Sequential`` containers, so the
    leaves run in registration order, one feeding the next."""
    chains = [_ancestors(n) for n in names]
    common = 0
    while all(len(c) > common for c in chains) and len({c[common] for c in chains}) == 1:
        common += 1
    if common == 0:
        return False
    for chain in chains:
        for anc in chain[common - 1 :]:
            if not isinstance(modules[anc], nn.Sequential):
                return False
    return True


def _factorised(a: nn.Module, b: nn.Module) -> bool:
    """A grouped/depthwise conv followed by a 1x1 conv: a separable convolution."""
    return (
        isinstance(a, _CONV)
        and isinstance(b, _CONV)
        and a.groups > 1
        and all(k == 1 for k in b.kernel_size)
    )


def _static_pairs(model: nn.Module, leaves: list[_Leaf]) -> list[_Pair]:
    modules = dict(model.named_modules())
    pairs: list[_Pair] = []
    pending: _Leaf | None = None
    between: list[str] = []
    for leaf in leaves:
        if leaf.kind is _Kind.AFFINE:
            if (
                pending is not None
                and _in_sequential_order(modules, [pending.name, *between, leaf.name])
                and not _factorised(pending.module, leaf.module)
            ):
                pairs.append(_Pair(pending.name, leaf.name, list(between), "sequential"))
            pending, between = leaf, []
        elif leaf.kind in (_Kind.NEUTRAL, _Kind.BATCHNORM) and pending is not None:
            between.append(leaf.name)
        else:
            pending, between = None, []
    return pairs


def _static_sites(leaves: list[_Leaf]) -> list[_Site]:
    sites: list[_Site] = []
    for i, leaf in enumerate(leaves):
        act = activation_name_for_module(leaf.module) if leaf.kind is _Kind.ACT else None
        if act is None:
            continue
        site = _Site(leaf.name, act)
        for prev in reversed(leaves[:i]):
            if prev.kind is _Kind.NEUTRAL:
                continue
            if prev.kind is _Kind.BATCHNORM:
                site.through_norm = True
                continue
            if prev.kind is _Kind.AFFINE:
                site.producer, site.producer_module = prev.name, prev.module
            break
        sites.append(site)
    return sites


# --- dynamic reading (example_input) -------------------------------------------------------


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except (RuntimeError, AttributeError):  # inference tensors have no version counter
        return None


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            if isinstance(o, torch.Tensor):
                return o
    return None


@dataclass
class _Source:
    name: str
    module: nn.Module
    version: int | None
    between: list[str]
    through_norm: bool


def _call(model: nn.Module, example_input: Any) -> Any:
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    return model(example_input)


def _trace(
    model: nn.Module,
    leaves: list[_Leaf],
    example_input: Any,
    *,
    target: Any = None,
    loss_fn: Any = None,
) -> tuple[_Trace, OpRecorder]:
    """One forward pass (and ``loss_fn(output, target)`` when both are given) under hooks
    and an :class:`OpRecorder`; model buffers and the RNG are restored afterwards."""
    trace = _Trace()
    rec = OpRecorder(model)
    sources: dict[int, _Source] = {}  # id(tensor) -> the affine layer that produced it
    keep: list[torch.Tensor] = []  # keep traced tensors alive so their ids stay unique
    calls: dict[str, int] = {}

    def on_call(leaf: _Leaf, inputs: tuple[Any, ...], output: Any) -> None:
        x, y = _first_tensor(inputs), _first_tensor(output)
        count = calls.get(leaf.name, 0)
        calls[leaf.name] = count + 1
        src = sources.get(id(x)) if x is not None else None
        if src is not None and x is not None and src.version != _version(x):
            src = None  # modified in place since (x.relu_()): not the affine output anymore
        if x is not None:
            keep.append(x)
        if y is None:
            return
        keep.append(y)
        sources.pop(id(y), None)
        if leaf.kind is _Kind.AFFINE:
            if src is not None and not _factorised(src.module, leaf.module):
                trace.pairs.append(_Pair(src.name, leaf.name, list(src.between), "traced"))
            sources[id(y)] = _Source(leaf.name, leaf.module, _version(y), [], False)
        elif leaf.kind in (_Kind.NEUTRAL, _Kind.BATCHNORM) and src is not None:
            norm = src.through_norm or leaf.kind is _Kind.BATCHNORM
            sources[id(y)] = _Source(
                src.name, src.module, _version(y), [*src.between, leaf.name], norm
            )
        elif leaf.kind is _Kind.ACT:
            act = activation_name_for_module(leaf.module)
            assert act is not None
            name = leaf.name if count == 0 else f"{leaf.name}#{count}"
            site = _Site(name, act)
            if src is not None:
                site.producer, site.producer_module = src.name, src.module
                site.through_norm = src.through_norm
            if act in _DIES_AT_ZERO and y.ndim >= 1:
                conv_like = isinstance(site.producer_module, _CONV)
                ud = unit_dim_for(y.ndim, conv_like)
                alive = (y != 0).movedim(ud, -1).reshape(-1, y.shape[ud]).any(dim=0)
                site.units = int(y.shape[ud])
                site.dead_units = int((~alive).sum())
                site.n_examples = int(y.shape[0]) if y.ndim >= 2 else 1
            trace.sites.append(site)

    def make_hook(leaf: _Leaf) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            with rec.paused():  # lint's own measurements are not the model's ops
                on_call(leaf, inputs, output)

        return hook

    handles = [leaf.module.register_forward_hook(make_hook(leaf)) for leaf in leaves]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), rec:
            rec.register_inputs(example_input)
            try:
                out = _call(model, example_input)
            except Exception as e:
                raise UsageError(
                    f"lint could not run example_input through the model ({type(e).__name__}: "
                    f"{e}). Pass a batch the model accepts: a tensor (model(x)), a tuple "
                    "(model(*x)) or a dict (model(**x)), on the model's device."
                ) from e
            rec.output = output_tensor(out)
            if loss_fn is not None and target is not None:
                try:
                    loss_fn(out, target)
                except Exception as e:  # lint() decides: a finding may explain it
                    rec.loss_error = e
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)  # batch norm running stats, num_batches_tracked
    return trace, rec


# --- rules ------------------------------------------------------------------------------


def born_dead_probability(widths: list[int]) -> float:
    """P(some hidden ReLU layer is all zero at a given input) = 1 - prod(1 - 2^-N_i).

    For L-1 hidden layers of equal width N this is ``1 - (1 - 2^-N)^(L-1)``; it bounds
    the probability that a bias-free net with 1-D input is born dead (Lu et al. 2019).

    >>> round(born_dead_probability([3] * 9), 3)  # N = 3, L = 10
    0.699
    >>> round(born_dead_probability([10] * 9), 4)
    0.0088
    """
    log_alive = sum(math.log1p(-(2.0 ** -int(n))) for n in widths)
    return -math.expm1(log_alive)


#: the cause of each structural finding (linear collapse has none: it is the design)
_CAUSES = {
    FailureMode.DEEP_SATURATING_STACK: Cause.SATURATING_ACTIVATION,
    FailureMode.INIT_MISMATCH: Cause.BAD_INIT,
    FailureMode.BORN_DEAD: Cause.BAD_INIT,
}


def _finding(
    kind: FailureMode,
    layer: str | None,
    message: str,
    evidence: dict[str, Any],
    activation: str | None = None,
) -> Finding:
    return Finding(
        kind=kind,
        layer=layer,
        step=-1,
        message=message,
        evidence=evidence,
        remedies=remedies_for(kind, activation=activation),
        cause=_CAUSES.get(kind, Cause.UNKNOWN),
    )


def _collapse_findings(pairs: list[_Pair], modules: dict[str, nn.Module]) -> list[Finding]:
    out: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for p in pairs:
        if (p.first, p.second) in seen:
            continue
        seen.add((p.first, p.second))
        a, b = modules[p.first], modules[p.second]
        via = f" (via {', '.join(p.between)})" if p.between else ""
        out.append(
            _finding(
                FailureMode.LINEAR_COLLAPSE,
                p.second,
                "this hidden layer adds no capacity: it collapses into one linear map "
                f"with {p.first} ({type(a).__name__} -> {type(b).__name__}{via}, "
                "no nonlinearity between)",
                {
                    "first": p.first,
                    "second": p.second,
                    "first_type": type(a).__name__,
                    "second_type": type(b).__name__,
                    "between": list(p.between),
                    "source": p.source,
                },
            )
        )
    return out


def _saturating_finding(model: nn.Module, sites: list[_Site], depth: int) -> list[Finding]:
    hidden = [s for s in sites if s.act in SATURATING and s.producer is not None]
    if len(hidden) < depth:
        return []
    norms = [n for n, m in model.named_modules() if isinstance(m, _NORM)]
    residual = [
        type(m).__name__
        for m in model.modules()
        if any(h in type(m).__name__.lower() for h in _RESIDUAL_HINTS)
    ]
    if norms or residual:
        return []
    acts = sorted({s.act for s in hidden})
    bound = math.prod(_MAX_SLOPE.get(s.act, 1.0) for s in hidden)
    n = len(hidden)
    msg = (
        f"{n} {'/'.join(acts)} hidden layers in a row with no normalization and no "
        "residual connection: the gradient reaching the first layer is the last layer's "
        f"times {n} activation derivatives"
    )
    if bound < 1.0:
        caps = ", ".join(f"{a}' <= {_MAX_SLOPE[a]:.3g}" for a in acts if a in _MAX_SLOPE)
        msg += f" ({caps}: together <= {bound:.1e})"
    else:
        msg += ", each below 1 away from 0, so it shrinks with depth"
    return [
        _finding(
            FailureMode.DEEP_SATURATING_STACK,
            None,
            msg,
            {
                "depth": n,
                "activations": acts,
                "layers": [s.name for s in hidden],
                "max_derivative_product": bound,
                "normalization_layers": 0,
            },
            activation=acts[0] if len(acts) == 1 else "/".join(acts),
        )
    ]


def _init_finding(sites: list[_Site], depth: int, threshold: float) -> list[Finding]:
    relu = [
        s
        for s in sites
        if s.act in _RELU_FAMILY and s.producer_module is not None and not s.through_norm
    ]
    if len(relu) < depth:
        return []
    ratios: dict[str, float] = {}
    for s in relu:
        assert s.producer is not None and s.producer_module is not None
        w = getattr(s.producer_module, "weight", None)
        if not isinstance(w, torch.Tensor) or isinstance(w, nn.parameter.UninitializedParameter):
            continue
        if w.ndim < 2 or w.numel() == 0:
            continue
        fan_in = w.shape[1] * math.prod(w.shape[2:])
        with torch.no_grad():
            ratios[s.producer] = float(fan_in * w.detach().double().pow(2).mean())
    if len(ratios) < depth:
        return []
    med = statistics.median(ratios.values())
    if med >= threshold:
        return []
    n = len(ratios)
    per_layer = med / _HE
    acts = sorted({s.act for s in relu})
    return [
        _finding(
            FailureMode.INIT_MISMATCH,
            None,
            f"{n} {'/'.join(acts)} layers have fan_in*Var(w) = {med:.2f} (median; PyTorch's "
            f"default init gives 1/3, He init gives 2, threshold {threshold:g}): the "
            f"forward signal's second moment shrinks x{per_layer:.2f} per layer, "
            f"x{per_layer**n:.1e} over {n} layers",
            {
                "fan_in_var": ratios,
                "median_fan_in_var": med,
                "he": _HE,
                "pytorch_default": _PYTORCH_DEFAULT,
                "threshold": threshold,
                "depth": n,
                "per_layer_factor": per_layer,
                "total_factor": per_layer**n,
            },
            activation=acts[0],
        )
    ]


def _born_dead_findings(
    sites: list[_Site], depth: int, traced: bool, threshold: float, dead_threshold: float
) -> list[Finding]:
    out: list[Finding] = []
    hidden = [
        s
        for s in sites
        if s.act in _DIES_AT_ZERO
        and isinstance(s.producer_module, nn.Linear)
        and not s.through_norm
    ]
    widths = [
        int(s.producer_module.out_features)
        for s in hidden
        if isinstance(s.producer_module, nn.Linear)
    ]
    if len(widths) >= depth:
        p = born_dead_probability(widths)
        if p > threshold:
            k = len(widths)
            if len(set(widths)) == 1:
                shape = f"{k} hidden ReLU layers of width {widths[0]}"
                formula = f"1-(1-2^-{widths[0]})^{k}"
            else:
                shape = f"{k} hidden ReLU layers of widths {min(widths)}..{max(widths)}"
                formula = "1-prod(1-2^-N_i)"
            out.append(
                _finding(
                    FailureMode.BORN_DEAD,
                    None,
                    f"narrow deep ReLU stack: {shape}; at any one input some layer is all "
                    f"zero (the output is constant around it) with probability {formula} "
                    f"= {p:.3f} (threshold {threshold:g})",
                    {
                        "probability": p,
                        "widths": widths,
                        "hidden_relu_layers": k,
                        "threshold": threshold,
                        "layers": [s.name for s in hidden],
                    },
                    activation="relu",
                )
            )
    if not traced:
        return out
    dead_sites = [s for s in sites if s.act in _DIES_AT_ZERO and s.units]
    for i, s in enumerate(dead_sites):
        frac = s.dead_units / s.units
        enough = s.n_examples >= _MIN_EXAMPLES
        if not (frac >= 1.0 or (enough and frac >= dead_threshold)):
            continue
        msg = (
            f"{frac:.0%} of the units of {s.name} ({s.dead_units}/{s.units}) are zero on all "
            f"{s.n_examples} examples of example_input at initialisation"
        )
        evidence: dict[str, Any] = {
            "dead_fraction": frac,
            "dead_units": s.dead_units,
            "units": s.units,
            "examples": s.n_examples,
            "threshold": dead_threshold,
        }
        if frac >= 1.0:
            # every later layer only sees this one's zeros: report the first, count the rest
            after = [t.name for t in dead_sites[i + 1 :] if t.dead_units == t.units]
            msg += ": the layer is entirely dead, so the output does not depend on the input"
            if after:
                msg += f" (and {len(after)} later ReLU layer(s) are all-dead after it)"
            evidence["dead_layers_after"] = after
        out.append(_finding(FailureMode.BORN_DEAD, s.name, msg, evidence, activation=s.act))
        if frac >= 1.0:
            break
    return out


def _check(value: float, ok: bool, name: str, valid: str) -> None:
    if not ok:
        raise UsageError(f"lint(): {name}={value!r} is invalid; it must be {valid}")


def _check_range(value: Any, name: str) -> tuple[float, float]:
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
        and 0.0 < value[0] < value[1]
    )
    if not ok:
        raise UsageError(
            f"lint(): {name}={value!r} is invalid; it must be a (low, high) pair of RMS "
            "bounds with 0 < low < high, e.g. (1e-3, 10.0)"
        )
    return float(value[0]), float(value[1])


def lint(
    model: nn.Module,
    example_input: Any = None,
    *,
    target: Any = None,
    loss_fn: Any = None,
    depth_threshold: int = 4,
    born_dead_threshold: float = 0.05,
    dead_fraction_threshold: float = 0.5,
    init_variance_threshold: float = 0.5,
    input_scale_range: tuple[float, float] = preflight.INPUT_SCALE,
    target_scale_range: tuple[float, float] = preflight.TARGET_SCALE,
) -> list[Finding]:
    """Check a model (and optionally a batch and its loss) for problems that show before
    training starts.

    Args:
        model: the ``torch.nn.Module`` to check.
        example_input: optional batch; when given, lint runs one forward pass under
            ``torch.no_grad`` to follow the real data flow and count units dead at
            initialisation. A tensor is passed as ``model(x)``, a tuple as
            ``model(*x)``, a dict as ``model(**x)``. Use 16+ examples: with fewer, only
            an entirely dead layer is reported.
        target: optional targets for ``example_input`` (class ids, labels or regression
            values), for the output-range, loss-vs-target and target-scale rules.
        loss_fn: optional loss, called as ``loss_fn(model(example_input), target)``: an
            ``nn.CrossEntropyLoss()``-style module, ``F.cross_entropy``, or any callable
            (``lambda out, y: F.cross_entropy(out.logits, y)``). Its torch calls are
            traced; without ``example_input``/``target`` a loss module or ``torch.nn.
            functional`` loss is still recognised by type for the structural checks.
        depth_threshold: hidden layers at which a saturating stack, or a ReLU stack
            with default init, is flagged (default 4).
        born_dead_threshold: flag a narrow ReLU stack when ``1 - prod(1 - 2^-N_i)``
            exceeds this (default 0.05).
        dead_fraction_threshold: flag a ReLU layer with at least this fraction of units
            zero on every example of ``example_input`` (default 0.5).
        init_variance_threshold: flag ReLU-family stacks whose median
            ``fan_in * mean(w^2)`` is below this (default 0.5; He is 2, PyTorch's
            default 1/3).
        input_scale_range: ``(low, high)`` bounds on the RMS ``sqrt(mean(x^2))`` of each
            floating-point input tensor, and of each column of 2-D input (high only);
            default ``(1e-3, 10)``: raw 0-255 pixels (RMS ~85-130) are flagged, [0, 1]
            pixels and standardised features are not.
        target_scale_range: ``(low, high)`` bounds on the RMS of floating-point
            regression targets, default ``(1e-3, 100)``.

    Returns:
        Findings with ``step=-1``, a cause and remedies attached; an empty list for a
        healthy model.

    Raises:
        UsageError: ``model`` is not an ``nn.Module``, a threshold is out of range,
            ``loss_fn`` is not callable, or ``example_input`` (or the loss on it) cannot
            be run.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"lint() takes a torch.nn.Module, got {type(model).__name__}; for Keras models "
            "use gradvitals.keras."
        )
    _check(
        depth_threshold,
        isinstance(depth_threshold, int) and depth_threshold >= 2,
        "depth_threshold",
        "an int >= 2",
    )
    _check(born_dead_threshold, 0.0 < born_dead_threshold < 1.0, "born_dead_threshold", "in (0, 1)")
    _check(
        dead_fraction_threshold,
        0.0 < dead_fraction_threshold <= 1.0,
        "dead_fraction_threshold",
        "in (0, 1]",
    )
    _check(
        init_variance_threshold,
        init_variance_threshold > 0.0,
        "init_variance_threshold",
        "> 0 (He init gives 2, PyTorch's default 1/3)",
    )
    input_scale = _check_range(input_scale_range, "input_scale_range")
    target_scale = _check_range(target_scale_range, "target_scale_range")
    if loss_fn is not None and not callable(loss_fn):
        raise UsageError(
            f"lint(): loss_fn={loss_fn!r} is not callable; pass a loss module "
            "(nn.CrossEntropyLoss()), a function (F.cross_entropy) or a callable "
            "loss_fn(output, target)"
        )

    leaves = _leaves(model)
    modules = dict(model.named_modules())
    pairs = _static_pairs(model, leaves)
    sites = _static_sites(leaves)
    traced = example_input is not None
    rec: OpRecorder | None = None
    if traced:
        trace, rec = _trace(model, leaves, example_input, target=target, loss_fn=loss_fn)
        pairs += trace.pairs
        sites = trace.sites
    findings = _collapse_findings(pairs, modules)
    findings += _saturating_finding(model, sites, depth_threshold)
    findings += _init_finding(sites, depth_threshold, init_variance_threshold)
    findings += _born_dead_findings(
        sites, depth_threshold, traced, born_dead_threshold, dead_fraction_threshold
    )
    loss_findings = output_loss_findings(model, rec, target=target, loss_fn=loss_fn)
    if rec is not None and rec.loss_error is not None and not loss_findings:
        e = rec.loss_error
        raise UsageError(
            f"lint could not compute loss_fn(model(example_input), target) "
            f"({type(e).__name__}: {e}). loss_fn is called as "
            "loss_fn(model(example_input), target), like nn.CrossEntropyLoss(); for a model "
            "that returns a structure, pass e.g. "
            "loss_fn=lambda out, y: F.cross_entropy(out.logits, y)."
        ) from e
    findings += loss_findings
    findings += data_findings(
        rec,
        target=target,
        loss_fn=loss_fn,
        input_scale=input_scale,
        target_scale=target_scale,
    )
    return findings
