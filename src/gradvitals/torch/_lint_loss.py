"""The lint rules that need the output, the loss and the data (see :func:`gradvitals.lint`).

How the model and the loss are read:

- **Traced** (``example_input`` given): one forward pass, then ``loss_fn(output,
  target)`` when both are given, run under a :class:`torch.overrides.TorchFunctionMode`
  that records every torch function call (``F.softmax``, ``Tensor.log``,
  ``F.cross_entropy``...), the module it ran in, and which call produced each tensor.
  ``nn.CrossEntropyLoss`` and friends call ``F.cross_entropy``, so module losses, losses
  inside a custom ``loss_fn`` and losses a Hugging Face model computes from ``labels``
  are all seen as the same call. From a loss call, lint walks back through ops that
  keep values (view, reshape, indexing, ``.float()``, dropout...) to the op that made the
  prediction, and reads the target. Nothing is kept but small records: tensors are
  tracked by weak reference.
- **Structural** (no ``example_input``): for an ``nn.Sequential`` only, the last module
  (after dropout/identity/flatten) is the output activation, the affine layer before it
  gives the number of units, and ``loss_fn``'s class (``nn.CrossEntropyLoss``) or
  function (``F.cross_entropy``) gives the loss.

The decisions themselves are framework-free (``gradvitals._preflight_rules``).

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
>>> fs = output_loss_findings(model, None, loss_fn=nn.CrossEntropyLoss())
>>> [(f.kind.value, f.layer) for f in fs]
[('output_activation', '1')]
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from gradvitals import _preflight_rules as rules
from gradvitals.activations import activation_name_for_module
from gradvitals.findings import Finding
from gradvitals.torch._collapse import _DROPOUT
from gradvitals.torch._modules import affine_out_units

__all__ = ["OpRecorder", "data_findings", "output_loss_findings", "output_tensor"]

#: ops that keep the values of their (first) input: walked through to find a source
_PASS = frozenset(
    {
        "view",
        "reshape",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "contiguous",
        "permute",
        "transpose",
        "swapaxes",
        "t",
        "movedim",
        "moveaxis",
        "getitem",
        "narrow",
        "select",
        "index_select",
        "split",
        "chunk",
        "unbind",
        "float",
        "double",
        "half",
        "bfloat16",
        "to",
        "type",
        "type_as",
        "cpu",
        "cuda",
        "clone",
        "detach",
        "expand",
        "expand_as",
        "view_as",
        "reshape_as",
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "get",  # tensor properties: x.T, x.mT, x.data
    }
)
#: ops people put between a probability and its log "for safety": p + eps, p.clamp(eps)
_EPSILON = frozenset({"add", "sub", "clamp", "clamp_min", "clip"})
_LOGS = frozenset({"log", "log2", "log10"})
_NORM_OPS = frozenset({"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"})
_AFFINE_OPS = frozenset(
    {
        "linear",
        "addmm",
        "matmul",
        "mm",
        "bmm",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
    }
)
#: op -> catalog-style activation name, for the output's source op
_ACT_OPS = {
    **{n: n for n in rules.OUTPUT_RANGE},
    **{n: "linear" for n in _AFFINE_OPS},
}
_LOSSES = frozenset(
    {
        *rules.LOGIT_LOSSES,
        *rules.LOGPROB_LOSSES,
        *rules.BINARY_LOSSES,
        *rules.REGRESSION_LOSSES,
    }
)
#: loss modules -> the functional loss they call
_LOSS_MODULES: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.CrossEntropyLoss, "cross_entropy"),
    (nn.BCEWithLogitsLoss, "binary_cross_entropy_with_logits"),
    (nn.MultiLabelSoftMarginLoss, "multilabel_soft_margin_loss"),
    (nn.NLLLoss, "nll_loss"),
    (nn.KLDivLoss, "kl_div"),
    (nn.BCELoss, "binary_cross_entropy"),
    (nn.MSELoss, "mse_loss"),
    (nn.L1Loss, "l1_loss"),
    (nn.SmoothL1Loss, "smooth_l1_loss"),
    (nn.HuberLoss, "huber_loss"),
)
#: dict keys of example_input that hold targets, not inputs (Hugging Face ``labels=``)
_TARGET_KEYS = frozenset({"labels", "label", "target", "targets", "y"})
#: where a tensor argument other than the first is the data (addmm(bias, x, w))
_MAIN_ARG = {"addmm": 1, "addmv": 1, "addbmm": 1, "baddbmm": 1}


@dataclass(eq=False)
class Prov:
    """Which op made a tensor: the op, the module it ran in, the provenance of its data
    input, and op details (softmax ``dim``/``size``, hardtanh bounds, scalar operands)."""

    op: str
    module: str | None
    parent: Prov | None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossCall:
    loss: str
    module: str | None
    pred: torch.Tensor
    target: Any
    source: Prov | None


@dataclass
class LogCall:
    fn: str
    module: str | None
    source: Prov
    complement: bool
    dtype: torch.dtype


def _op_name(func: Any) -> str:
    return str(getattr(func, "__name__", "")).strip("_")


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [o for o in obj if isinstance(o, torch.Tensor)]
    return []


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (int, float)) or (isinstance(x, torch.Tensor) and x.ndim == 0)


def walk(p: Prov | None, through: frozenset[str] = _PASS) -> Prov | None:
    """The first provenance up the chain whose op is not in ``through``."""
    while p is not None and p.op in through:
        p = p.parent
    return p


class OpRecorder(TorchFunctionMode):
    """Record torch calls during a forward pass and a loss (see the module docstring).

    Use as a context manager around the calls, with ``model`` to name modules: a
    forward pre-hook/hook pair on every module keeps a stack of running module names.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._model = model
        self._stack: list[str] = []
        self._handles: list[Any] = []
        self._provs: dict[int, tuple[weakref.ref[torch.Tensor], Prov]] = {}
        self._keep: list[Prov] = []  # every record stays alive: ids below stay unique
        self._paused = 0
        self.first_consumer: dict[int, Prov] = {}
        self.inputs: list[tuple[str, torch.Tensor, Prov]] = []
        self.input_targets: list[tuple[str, torch.Tensor]] = []
        self.losses: list[LossCall] = []
        self.logs: list[LogCall] = []
        self.log_softmax_of: list[tuple[Prov, int]] = []  # log_softmax of (source, size)
        self.output: torch.Tensor | None = None
        self.loss_error: Exception | None = None  # loss_fn raised: rules use the declared loss

    # --- plumbing ---------------------------------------------------------------------

    def __enter__(self) -> OpRecorder:
        for name, m in self._model.named_modules():
            self._handles.append(m.register_forward_pre_hook(self._push(name)))
            self._handles.append(m.register_forward_hook(self._pop()))
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _push(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            self._stack.append(name)

        return hook

    def _pop(self) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._stack:
                self._stack.pop()

        return hook

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Do not record the calls made inside (lint's own measurements)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def prov(self, t: Any) -> Prov | None:
        if not isinstance(t, torch.Tensor):
            return None
        entry = self._provs.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1]

    def consumer(self, p: Prov) -> Prov | None:
        """The first op that used ``p``'s tensor, past value-keeping ops (view, float...)."""
        c = self.first_consumer.get(id(p))
        while c is not None and c.op in _PASS:
            c = self.first_consumer.get(id(c))
        return c

    def _set(self, t: torch.Tensor, p: Prov) -> None:
        with contextlib.suppress(TypeError):  # a tensor type without weakref support
            self._provs[id(t)] = (weakref.ref(t), p)

    def register_inputs(self, example_input: Any) -> None:
        """Name the floating-point tensors of ``example_input`` (for the data-scale rule);
        a dict's ``labels``/``target`` entries are targets, not inputs."""
        items: list[tuple[str, Any, bool]]
        if isinstance(example_input, dict):
            items = [
                (f"example_input[{k!r}]", v, k in _TARGET_KEYS) for k, v in example_input.items()
            ]
        elif isinstance(example_input, (tuple, list)):
            items = [(f"example_input[{i}]", v, False) for i, v in enumerate(example_input)]
        else:
            items = [("example_input", example_input, False)]
        for name, v, is_target in items:
            if not (isinstance(v, torch.Tensor) and v.is_floating_point()):
                continue
            if is_target:
                self.input_targets.append((name, v))
                continue
            p = Prov("input", None, None, {"name": name})
            self._keep.append(p)
            self._set(v, p)
            self.inputs.append((name, v, p))

    # --- recording ---------------------------------------------------------------------

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self._paused:
            with self.paused():
                self._record(_op_name(func), args, kwargs, out)
        return out

    def _record(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        outs = _tensors(out)
        if not name or not outs:
            return
        idx = _MAIN_ARG.get(name, 0)
        main = args[idx] if len(args) > idx else kwargs.get("input")
        if not isinstance(main, torch.Tensor):
            main = None
        parent = self.prov(main)
        info: dict[str, Any] = {}
        other = args[1] if len(args) > 1 else kwargs.get("other")
        if name in ("softmax", "log_softmax") and main is not None:
            info.update(self._softmax_info(main, args, kwargs))
        elif name == "sigmoid" and main is not None and main.is_floating_point() and main.numel():
            info["gap"] = float(main.detach().abs().amax())
        elif name == "hardtanh":
            lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
            hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
            info["bounds"] = (float(lo), float(hi))
            if (float(lo), float(hi)) == (0.0, 6.0):
                name = "relu6"
        elif name in ("add", "sub", "rsub", "mul", "div"):
            info["scalar"] = _is_scalar(other)
            src = walk(parent)
            if name == "div" and not info["scalar"] and src is not None and src.op == "exp":
                name, info = "softmax", {"manual": True, **(src.info or {})}  # e / e.sum()
        p = Prov(name, self._stack[-1] if self._stack else None, parent, info)
        self._keep.append(p)
        if parent is not None and id(parent) not in self.first_consumer:
            self.first_consumer[id(parent)] = p
        for o in outs:
            self._set(o, p)
        if name in _LOSSES and main is not None:
            target = args[1] if len(args) > 1 else kwargs.get("target")
            self.losses.append(LossCall(name, p.module, main, target, parent))
        elif name in _LOGS:
            self._check_log(name, p, parent, main)
        elif name == "log_softmax" and main is not None:
            src = walk(parent)
            if src is not None:
                self.log_softmax_of.append((src, int(info.get("size", 0))))

    @staticmethod
    def _softmax_info(
        x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim is None:  # torch's legacy implicit choice
            dim = 0 if x.ndim in (0, 1, 3) else 1
        if not isinstance(dim, int) or x.ndim == 0:
            return {}
        info: dict[str, Any] = {"dim": dim, "size": int(x.shape[dim])}
        if x.is_floating_point() and x.numel():
            d = x.detach()
            info["gap"] = float((d.amax(dim) - d.amin(dim)).amax())
        return info

    def _check_log(self, fn: str, p: Prov, parent: Prov | None, x: torch.Tensor | None) -> None:
        src = parent
        complement = False
        while src is not None and (src.op in _PASS or src.op in _EPSILON or src.op == "rsub"):
            if src.op in ("add", "sub", "rsub") and not src.info.get("scalar"):
                return  # p + q of two tensors: not a plain probability any more
            complement ^= src.op == "rsub"
            src = src.parent
        if src is None or src.op not in ("softmax", "sigmoid"):
            return
        dtype = x.dtype if x is not None else torch.float32
        self.logs.append(LogCall(fn, p.module, src, complement and src.op == "sigmoid", dtype))


# --- reading the output ----------------------------------------------------------------------


def output_tensor(out: Any) -> torch.Tensor | None:
    """The prediction in a model's output: the tensor itself, ``.logits`` (Hugging Face
    ``ModelOutput``), a dict's ``"logits"``, or the first tensor of a tuple/dict."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, dict):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]  # type: ignore[no-any-return]
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return next((o for o in out if isinstance(o, torch.Tensor)), None)
    return None


@dataclass
class _Site:
    """The op that made the prediction, as the rules see it."""

    act: str | None
    layer: str | None
    where: str
    info: dict[str, Any]
    bounds: tuple[float, float] | None = None


def _site(p: Prov | None, modules: dict[str, nn.Module]) -> _Site | None:
    src = walk(p)
    if src is None:
        return None
    act = _ACT_OPS.get(src.op)
    bounds = None
    if src.op == "hardtanh":
        lo, hi = src.info.get("bounds", (-1.0, 1.0))
        bounds = (lo, hi)
        act = "relu6" if lo >= 0.0 else "hardtanh"
    name = src.module
    mod = modules.get(name) if name is not None else None
    if name is None:
        where = f" ({src.op} in loss_fn)"
        layer = None
    elif mod is not None and (
        activation_name_for_module(mod) is not None
        or isinstance(mod, (nn.Softmax, nn.LogSoftmax))
        or affine_out_units(mod) is not None
    ):
        where = f" ({type(mod).__name__} '{name}')"
        layer = name
    else:
        label = "manual softmax" if src.info.get("manual") else f"F.{src.op}"
        where = f" ({label} in {name}.forward)" if name else f" ({label} in the model's forward)"
        layer = name or None
    return _Site(act, layer, where, dict(src.info), bounds)


def _leaf_chain(m: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if isinstance(m, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in m.named_children():
            out += _leaf_chain(child, f"{prefix}.{name}" if prefix else name)
        return out
    return [(prefix, m)]


_TRAILING = (nn.Identity, nn.Flatten, *_DROPOUT)


def _static_site(model: nn.Module) -> tuple[_Site, int | None] | None:
    """The last activation of an ``nn.Sequential`` and the units of the layer before it."""
    if not isinstance(model, nn.Sequential):
        return None
    chain = [(n, m) for n, m in _leaf_chain(model) if not isinstance(m, _TRAILING)]
    if not chain:
        return None
    name, last = chain[-1]
    units = next((affine_out_units(m) for _, m in reversed(chain) if affine_out_units(m)), None)
    if isinstance(last, (nn.Softmax, nn.LogSoftmax)):
        act = "softmax" if isinstance(last, nn.Softmax) else "log_softmax"
        info: dict[str, Any] = {}
        if last.dim in (None, 1, -1) and units is not None:
            info = {"dim": last.dim, "size": units}
        return _Site(act, name, f" ({type(last).__name__} '{name}')", info), units
    if affine_out_units(last) is not None:
        return _Site("linear", name, f" ({type(last).__name__} '{name}')", {}), units
    act_name = activation_name_for_module(last)
    if act_name is None:
        return None
    bounds = None
    if isinstance(last, nn.Hardtanh) and not isinstance(last, nn.ReLU6):
        bounds = (float(last.min_val), float(last.max_val))
    return _Site(act_name, name, f" ({type(last).__name__} '{name}')", {}, bounds), units


def static_loss(loss_fn: Any) -> str | None:
    """The functional name of a loss module or ``torch.nn.functional`` loss, else None."""
    for cls, name in _LOSS_MODULES:
        if isinstance(loss_fn, cls):
            return name
    fn_name = str(getattr(loss_fn, "__name__", ""))
    if fn_name in _LOSSES and str(getattr(loss_fn, "__module__", "")).startswith("torch"):
        return fn_name
    return None


# --- data summaries ---------------------------------------------------------------------------


def summary(t: torch.Tensor) -> rules.Summary:
    """:class:`~gradvitals._preflight_rules.Summary` of a tensor, computed in float64."""
    a = t.detach().to(torch.float64)
    finite = a[torch.isfinite(a)]
    if finite.numel() == 0:
        return rules.Summary(0, 0.0, 0.0, 0.0, 0.0, 0.0, False)
    cols: tuple[float, ...] = ()
    if a.ndim == 2 and a.shape[1] > 1:
        sq = torch.where(torch.isfinite(a), a, torch.zeros_like(a)) ** 2
        n = torch.isfinite(a).sum(0).clamp_min(1)
        cols = tuple(float(v) for v in (sq.sum(0) / n).sqrt())
    return rules.Summary(
        count=int(finite.numel()),
        mean=float(finite.mean()),
        std=float(finite.std(unbiased=False)),
        rms=float(finite.pow(2).mean().sqrt()),
        min=float(finite.min()),
        max=float(finite.max()),
        integral=bool((finite == finite.round()).all()),
        column_rms=cols,
    )


def _classes(loss: str, pred: torch.Tensor) -> int | None:
    if pred.ndim == 0:
        return None
    if loss in rules.CLASS_LOSSES:
        return int(pred.shape[1]) if pred.ndim >= 2 else None
    return int(pred.shape[-1]) if pred.ndim >= 2 else 1


def _fraction_outside(target: torch.Tensor, lo: float, hi: float) -> float:
    t = target.detach().to(torch.float64)
    return float(((t < lo) | (t > hi)).double().mean()) if t.numel() else 0.0


# --- the rules --------------------------------------------------------------------------------


def _target_rules(
    loss: str | None,
    site: _Site | None,
    units: int | None,
    pred_shape: tuple[int, ...] | None,
    target: Any,
) -> list[Finding | None]:
    if not isinstance(target, torch.Tensor) or target.numel() == 0 or target.is_complex():
        return []
    t = summary(target)
    out: list[Finding | None] = []
    if loss in rules.BINARY_LOSSES:
        out.append(rules.binary_targets(loss, t))
        return out
    if loss in rules.CLASS_LOSSES or loss in rules.LOGIT_LOSSES or loss in rules.LOGPROB_LOSSES:
        return out
    if loss in rules.REGRESSION_LOSSES and units is not None:
        n = pred_shape[0] if pred_shape else None
        column = target.ndim == 1 or (target.ndim == 2 and target.shape[1] == 1)
        column = column and (n is None or target.shape[0] == n)
        f = rules.regression_on_class_ids(loss, units, t, column=column)
        if f is not None:
            return [f]
    elementwise = pred_shape is None or math.prod(pred_shape) == target.numel()
    if site is not None and target.is_floating_point() and elementwise:
        lo, hi = site.bounds or rules.OUTPUT_RANGE.get(site.act or "", (-math.inf, math.inf))
        out.append(
            rules.output_range_vs_targets(
                site.act,
                t,
                fraction_outside=_fraction_outside(target, lo, hi),
                layer=site.layer,
                where=site.where,
                bounds=site.bounds,
            )
        )
    return out


def _site_rules(
    site: _Site | None, loss: str | None, classes: int | None, pred: Any
) -> list[Finding | None]:
    if site is None:
        return []
    out: list[Finding | None] = []
    size = site.info.get("size")
    if site.act in ("softmax", "log_softmax") and isinstance(size, int):
        out.append(rules.unit_softmax(site.act, size, layer=site.layer, where=site.where))
    if loss is not None:
        zero = None
        if isinstance(pred, torch.Tensor) and pred.numel() and site.act in ("relu", "relu6"):
            zero = float((pred.detach() == 0).double().mean())
        out.append(
            rules.output_for_loss(
                site.act,
                loss,
                classes=classes,
                layer=site.layer,
                where=site.where,
                zero_fraction=zero,
            )
        )
        if classes is not None:
            out.append(rules.class_loss_on_one_unit(loss, classes))
    return out


def output_loss_findings(
    model: nn.Module,
    rec: OpRecorder | None,
    *,
    target: Any = None,
    loss_fn: Any = None,
) -> list[Finding]:
    """Rules 1-5 of :func:`gradvitals.lint`: output activation vs loss and targets, loss vs
    targets, and ``log`` of a probability. ``rec`` is None when nothing was traced."""
    modules = dict(model.named_modules())
    found: list[Finding | None] = []
    declared = static_loss(loss_fn)
    if rec is None:
        static = _static_site(model)
        if static is not None:
            static_site, units = static
            found += _site_rules(static_site, declared, units, None)
            found += _target_rules(declared, static_site, units, None, target)
        return _unique(found)
    site: _Site | None
    for lc in rec.losses:
        site = _site(lc.source, modules)
        classes = _classes(lc.loss, lc.pred)
        found += _site_rules(site, lc.loss, classes, lc.pred)
        units = int(lc.pred.shape[-1]) if lc.pred.ndim >= 2 else 1
        found += _target_rules(lc.loss, site, units, tuple(lc.pred.shape), lc.target)
    if rec.output is not None and not rec.losses:
        out = rec.output
        site = _site(rec.prov(out), modules)
        loss = declared
        classes = _classes(loss, out) if loss is not None else None
        found += _site_rules(site, loss, classes, out)
        units = int(out.shape[-1]) if out.ndim >= 2 else 1
        found += _target_rules(loss, site, units, tuple(out.shape), target)
    elif rec.output is not None:
        found += _site_rules(_site(rec.prov(rec.output), modules), None, None, None)
    for src, size in rec.log_softmax_of:
        inner = _site(src, modules)
        if inner is not None and inner.act in ("softmax", "sigmoid"):
            found.append(
                rules.output_for_loss(
                    inner.act,
                    "cross_entropy",
                    classes=size or None,
                    layer=inner.layer,
                    where=inner.where,
                    loss_label="log_softmax",
                )
            )
    by_source: dict[int, list[LogCall]] = {}
    for lg in rec.logs:  # grouped by the logits the softmax/sigmoid was taken of
        key = id(lg.source.parent) if lg.source.parent is not None else id(lg.source)
        by_source.setdefault(key, []).append(lg)
    for calls in by_source.values():
        # log(sigmoid) and log(1 - sigmoid) of one tensor: a hand-written BCE, one finding
        comp = [c for c in calls if c.complement]
        direct = len(comp) < len(calls)
        found.append(_log_finding(comp[0] if comp else calls[0], also_direct=bool(comp) and direct))
    return _unique(found)


def _log_finding(lg: LogCall, *, also_direct: bool = False) -> Finding:
    fi = torch.finfo(lg.dtype) if lg.dtype.is_floating_point else torch.finfo(torch.float32)
    # exp(-d) rounds to 0 below half the smallest subnormal, tiny * eps (IEEE formats)
    underflow = -(math.log(fi.tiny) + math.log(fi.eps) - math.log(2.0))
    name = lg.module
    if name is None:
        where = " in loss_fn"
    else:
        where = f" in {name}.forward" if name else " in the model's forward"
    return rules.unstable_log(
        lg.source.op,
        fn=lg.fn,
        complement=lg.complement,
        dtype=str(lg.dtype).replace("torch.", ""),
        underflow_gap=underflow,
        saturation=-math.log(fi.eps / 2.0),
        gap=lg.source.info.get("gap"),
        layer=name or None,
        where=where,
        also_direct=also_direct,
    )


def _unique(found: list[Finding | None]) -> list[Finding]:
    out: list[Finding] = []
    seen: set[tuple[str, str | None, str]] = set()
    for f in found:
        if f is None:
            continue
        key = (f.kind.value, f.layer, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def data_findings(
    rec: OpRecorder | None,
    *,
    target: Any,
    loss_fn: Any,
    input_scale: tuple[float, float],
    target_scale: tuple[float, float],
) -> list[Finding]:
    """Rule 6 of :func:`gradvitals.lint`: inputs or regression targets far from unit scale.

    An input whose first use is a normalization layer, or an affine layer followed at once
    by one (conv -> batch norm), is not reported: the normalization undoes the scale.
    """
    found: list[Finding | None] = []
    if rec is not None:
        for name, t, p in rec.inputs:
            first = rec.consumer(p)
            if first is not None and first.op in _NORM_OPS:
                continue
            if first is not None and first.op in _AFFINE_OPS:
                nxt = rec.consumer(first)
                if nxt is not None and nxt.op in _NORM_OPS:
                    continue
            found.append(rules.data_scale(name, summary(t), input_scale, role="input"))
    losses = {lc.loss for lc in rec.losses} if rec is not None else set()
    declared = static_loss(loss_fn)
    if declared is not None:
        losses.add(declared)
    regression = not losses or bool(losses & set(rules.REGRESSION_LOSSES))
    targets = list(rec.input_targets) if rec is not None else []
    if isinstance(target, torch.Tensor):
        targets.append(("target", target))
    for name, t in targets:
        if t.is_floating_point() and regression:
            found.append(rules.data_scale(name, summary(t), target_scale, role="target"))
    return _unique(found)
