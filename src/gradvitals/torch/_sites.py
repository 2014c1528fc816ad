"""Activation sites: where activations are observed, and their on-device accumulators.

Two kinds of site:

- the **output** of an activation module (``nn.ReLU``, ``nn.Sigmoid``...): a forward
  hook. Safe with ``ReLU(inplace=True)``: the output is what we need, and no backward
  hook is used (full backward hooks break on in-place ReLU, pytorch#61519);
- the **input** of a Linear/Conv layer not fed by an activation module: a forward
  pre-hook. This catches activations applied functionally (``F.relu`` in
  ``forward``). The model's own input is never a site, transformed or not (an input
  that depends on no trainable parameter, such as ``x / x.sum(1)`` or ``x.to(bf16)``,
  is skipped), nor an input already produced by an activation module in the same
  forward pass;
- the hidden-state output of ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` (tanh-like; their
  gates run inside a fused kernel and are not observable).

A module called several times per forward (a shared ``self.act``) gets one site per
call position: ``act``, ``act#1``, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from gradvitals.activations import activation_name_for_module
from gradvitals.stats import SATURATING
from gradvitals.stats._table import SITE_FIELDS
from gradvitals.torch._modules import is_affine
from gradvitals.torch._stats import activation_update, unit_dim_for

__all__ = ["SiteAccumulator", "plan_sites"]

_PASS_THROUGH = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Flatten,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


@dataclass
class SiteAccumulator:
    """On-device sums, counts and masks of one site over the current window."""

    name: str
    activation: str
    role: str
    conv_like: bool
    units: int = -1
    n_examples: int = 0  # host ints: known from shapes, no sync
    n_elements: int = 0
    unit_max: torch.Tensor | None = None  # running per-unit maximum (NaN propagates)
    count: torch.Tensor | None = None  # signed count (see activation_update), float64
    min_value: torch.Tensor | None = None  # input sites only
    order: int = -1  # first-seen position in forward order
    shape_changed: bool = field(default=False)

    @property
    def live(self) -> bool:
        """True once the window has seen this site."""
        return self.unit_max is not None

    @property
    def saturating(self) -> bool:
        return self.activation in SATURATING

    def fresh(self) -> SiteAccumulator:
        """A new, empty accumulator for the same site (double buffering of windows)."""
        return SiteAccumulator(
            self.name, self.activation, self.role, self.conv_like, order=self.order
        )

    def reset(self) -> None:
        self.n_examples = 0
        self.n_elements = 0
        self.unit_max = None
        self.count = None
        self.min_value = None

    def add(self, x: torch.Tensor, eps: float) -> None:
        """Fold one batch in: 2-3 reductions and 2-3 in-place updates, no host sync."""
        ud = unit_dim_for(x.ndim, self.conv_like)
        units = x.shape[ud] if x.ndim else 1
        if self.unit_max is not None and units != self.units:
            # the same call position changed width: start over rather than mix units
            self.reset()
            self.shape_changed = True
        self.units = units
        kind = "input" if self.role == "input" else self.activation
        mx, count = activation_update(x, ud, kind, eps)
        if self.unit_max is None:
            self.unit_max = mx.float().clone()
            self.count = count.double()
        else:
            assert self.count is not None
            torch.maximum(self.unit_max, mx.float(), out=self.unit_max)
            self.count += count.double()
        if self.role == "input":
            mn = x.detach().amin().float()
            self.min_value = mn if self.min_value is None else torch.minimum(self.min_value, mn)
        self.n_examples += int(x.shape[0]) if x.ndim >= 2 else 1
        self.n_elements += x.numel()

    def pack(self, device: torch.device) -> torch.Tensor:
        """The site's segment of the packed window, in :data:`SITE_FIELDS` order (float64).

        ``ever_positive = unit_max > 0``; non-finite units are those whose maximum is
        NaN/Inf (plus 1 when an input site's minimum is -Inf). Host counts travel as
        fills, not host-to-device copies (which would sync).
        """
        assert self.unit_max is not None and self.count is not None
        mx = self.unit_max
        f64 = torch.float64
        zero = torch.zeros((), dtype=f64, device=mx.device)
        n_nf = (~torch.isfinite(mx)).sum().to(f64)
        if self.min_value is not None:
            n_nf = n_nf + torch.isneginf(self.min_value).to(f64)
            mn = self.min_value.to(f64)
        else:
            mn = zero
        n = float(self.n_elements)
        if self.saturating:  # count = #saturated - #unsaturated
            n_zero, n_sat = zero, ((n + self.count) / 2).round()
        else:  # count = #non-zero (x >= 0 wherever it is used)
            n_zero, n_sat = (n - self.count).round(), zero
        values = {
            "ever_positive": (mx > 0).to(f64),
            "n_zero": n_zero,
            "n_saturated": n_sat,
            "n_nonfinite": n_nf,
            "min_value": mn,
            "n_examples": torch.full((), float(self.n_examples), dtype=f64, device=mx.device),
            "n_elements": torch.full((), n, dtype=f64, device=mx.device),
        }
        return torch.cat([values[f.name].reshape(-1) for f in SITE_FIELDS]).to(device)


def plan_sites(model: nn.Module) -> tuple[dict[str, str], set[str]]:
    """Decide which modules are sites, statically.

    Returns:
        ``(activation_modules, input_sites)``: activation-module name -> catalog name, and
        the names of Linear/Conv layers whose input is watched because no activation
        module precedes them in their parent container.
    """
    acts: dict[str, str] = {}
    inputs: set[str] = set()
    for name, mod in model.named_modules():
        act = activation_name_for_module(mod)
        if act is not None and act != "identity":
            acts[name] = act
        elif isinstance(mod, nn.RNN):  # its hidden states are tanh (or relu) outputs
            acts[name] = str(mod.nonlinearity)
        elif isinstance(mod, (nn.LSTM, nn.GRU)):
            # the hidden state h = o * tanh(c) (LSTM) or a convex mix of tanh candidates
            # (GRU) lies in (-1, 1): measured as a tanh-like output; the gates inside the
            # fused kernel cannot be hooked
            acts[name] = "tanh"
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for i, (child_name, child) in enumerate(children):
            if not is_affine(child):
                continue
            covered = False
            for _, prev in reversed(children[:i]):
                if isinstance(prev, _PASS_THROUGH):
                    continue
                covered = activation_name_for_module(prev) is not None
                break
            if not covered:
                full = f"{parent_name}.{child_name}" if parent_name else child_name
                inputs.add(full)
    return acts, inputs
