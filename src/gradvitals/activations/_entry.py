"""One catalog entry: an activation function, its maths, and what to pair it with.

>>> from gradvitals.activations import get
>>> relu = get("relu")
>>> relu.saturates_left, relu.saturates_right
(<Saturation.FLAT: 'flat'>, <Saturation.NONE: 'none'>)
>>> relu.saturates, relu.can_die
('left (flat: zero gradient)', True)
>>> relu.torch_signature
'torch.nn.ReLU(inplace=False)'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Activation", "ArrayFn", "Saturation"]

#: A numpy reference function: float64 array in, float64 array of the same shape out.
ArrayFn = Callable[[ArrayLike], NDArray[np.float64]]


class Saturation(str, Enum):
    """How the derivative behaves on one side, as ``x -> -inf`` or ``x -> +inf``.

    - ``none``: f' stays away from 0 (ReLU on the right, Leaky ReLU on both sides).
    - ``asymptotic``: f' -> 0 but is never exactly 0 (sigmoid, tanh, ELU on the left).
    - ``flat``: f' = 0 exactly on a half-line (ReLU on the left, hard sigmoid past +-3):
      a unit whose input stays there gets no gradient at all and can die.
    """

    NONE = "none"
    ASYMPTOTIC = "asymptotic"
    FLAT = "flat"

    def __str__(self) -> str:
        return self.value


def _fmt_bound(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:g}"


@dataclass(frozen=True, kw_only=True)
class Activation:
    """An activation function with its derivative, properties and framework names.

    Attributes:
        name: canonical catalog name (``"leaky_relu"``); :func:`get` also takes aliases.
        title: a human title (``"Leaky ReLU"``).
        formula: f(x) as plain text.
        latex: f(x) in LaTeX.
        derivative: f'(x) as plain text.
        derivative_latex: f'(x) in LaTeX.
        f: numpy reference ``f(x)`` (float64, stable for large ``|x|``).
        df: numpy reference ``f'(x)``; at a kink, the value PyTorch's autograd uses.
        output_range: (lower, upper) bounds of f, ``inf`` where unbounded.
        range_text: the range with open/closed brackets (``"[0, inf)"``).
        saturates_left: the derivative's behaviour as x -> -inf.
        saturates_right: the derivative's behaviour as x -> +inf.
        zero_centred: f(0) = 0 and f takes both signs.
        monotonic: f is non-decreasing.
        can_die: f' = 0 on a half-line, so a unit can stop receiving gradient.
        init: the initialisation to pair it with, with the code.
        gain: the init gain (``torch.nn.init.calculate_gain`` where it has an entry).
        gain_source: where ``gain`` comes from.
        torch_name: the ``torch.nn`` module class name, or None.
        torch_defaults: that module's constructor defaults.
        keras_name: the Keras 3 name (``"leaky_relu"``, ``"layers.PReLU"``), or None.
        keras_signature: the Keras 3 call with its defaults.
        traps: cross-framework and usage traps, one sentence each.
        paper: the citation.
        aliases: other names :func:`get` accepts (case, ``_`` and ``-`` are ignored).
        kinks: points where f is not differentiable.
    """

    name: str
    title: str
    formula: str
    latex: str
    derivative: str
    derivative_latex: str
    f: ArrayFn = field(repr=False, compare=False)
    df: ArrayFn = field(repr=False, compare=False)
    output_range: tuple[float, float]
    range_text: str
    saturates_left: Saturation
    saturates_right: Saturation
    zero_centred: bool
    monotonic: bool
    can_die: bool
    init: str
    gain: float
    gain_source: str
    torch_name: str | None
    torch_defaults: Mapping[str, object] = field(default_factory=dict, compare=False)
    keras_name: str | None
    keras_signature: str | None
    traps: tuple[str, ...] = ()
    paper: str = ""
    aliases: tuple[str, ...] = ()
    kinks: tuple[float, ...] = ()

    @property
    def saturates(self) -> str:
        """Which sides saturate, in words (``"both (asymptotic)"``, ``"no"``)."""
        left, right = self.saturates_left, self.saturates_right
        kind = {
            Saturation.ASYMPTOTIC: "asymptotic",
            Saturation.FLAT: "flat: zero gradient",
        }
        if left is Saturation.NONE and right is Saturation.NONE:
            return "no"
        if left is right:
            return f"both ({kind[left]})"
        if right is Saturation.NONE:
            return f"left ({kind[left]})"
        if left is Saturation.NONE:
            return f"right ({kind[right]})"
        return f"left ({kind[left]}), right ({kind[right]})"

    @property
    def torch_signature(self) -> str | None:
        """The PyTorch module call with its defaults, e.g. ``torch.nn.ELU(alpha=1.0, ...)``."""
        if self.torch_name is None:
            return None
        args = ", ".join(f"{k}={v!r}" for k, v in self.torch_defaults.items())
        return f"torch.nn.{self.torch_name}({args})"

    def bounds_text(self) -> str:
        """``output_range`` as ``(lo, hi)`` text."""
        lo, hi = self.output_range
        return f"({_fmt_bound(lo)}, {_fmt_bound(hi)})"

    def describe(self) -> str:
        """Every field, formatted for a terminal (what ``gradvitals activations show`` prints)."""
        yes = {True: "yes", False: "no"}
        lines = [
            f"{self.name}: {self.title}",
            f"  f(x)          {self.formula}",
            f"  f'(x)         {self.derivative}",
            f"  LaTeX f       {self.latex}",
            f"  LaTeX f'      {self.derivative_latex}",
            f"  range         {self.range_text}",
            f"  zero-centred  {yes[self.zero_centred]}",
            f"  monotonic     {yes[self.monotonic]}",
            f"  saturates     {self.saturates}",
            f"  can die       {yes[self.can_die]}",
            f"  init          {self.init}",
            f"  gain          {self.gain:.6g} ({self.gain_source})",
            f"  PyTorch       {self.torch_signature or '(none)'}",
            f"  Keras 3       {self.keras_signature or '(none)'}",
        ]
        if self.kinks:
            lines.append("  kinks at      " + ", ".join(f"{k:g}" for k in self.kinks))
        if self.aliases:
            lines.append("  aliases       " + ", ".join(self.aliases))
        if self.traps:
            lines.append("  traps")
            lines.extend(f"    - {t}" for t in self.traps)
        if self.paper:
            lines.append(f"  paper         {self.paper}")
        return "\n".join(lines)
