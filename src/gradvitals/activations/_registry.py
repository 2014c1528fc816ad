"""Name -> entry lookup with aliases, and module -> entry mapping (without importing any
framework: ``torch.nn``, Hugging Face ``transformers`` and timm classes are matched by
name and defining module).

Names are matched ignoring case, ``_``, ``-`` and spaces, so ``"LeakyReLU"``,
``"leaky-relu"`` and ``"leaky_relu"`` are the same name. Unknown names raise
:class:`~gradvitals.errors.UsageError` listing the known names and the closest match.

>>> get("Swish").name, get("hard-swish").name, get("leakyrelu").name
('silu', 'hardswish', 'leaky_relu')
>>> get("sigmiod")
Traceback (most recent call last):
...
gradvitals.errors.UsageError: unknown activation 'sigmiod'; did you mean 'sigmoid'? ...
"""

from __future__ import annotations

import difflib
import re

from gradvitals.activations._catalog import ENTRIES
from gradvitals.activations._entry import Activation
from gradvitals.errors import UsageError

__all__ = ["activation_name_for_module", "entries", "from_module", "get", "names"]

_BY_NAME: dict[str, Activation] = {a.name: a for a in ENTRIES}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def _build_keys() -> dict[str, str]:
    keys: dict[str, str] = {}
    for a in ENTRIES:
        for spelling in (a.name, *a.aliases):
            k = _key(spelling)
            if k in keys and keys[k] != a.name:  # pragma: no cover - catalog bug
                raise RuntimeError(f"activation key {k!r} is claimed by {keys[k]} and {a.name}")
            keys[k] = a.name
    return keys


#: normalised spelling -> canonical name
_KEYS: dict[str, str] = _build_keys()

#: ``torch.nn`` class name -> canonical name (GELU is resolved by its ``approximate``).
_TORCH_CLASSES: dict[str, str] = {
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Hardsigmoid": "hardsigmoid",
    "Hardtanh": "hardtanh",
    "Softsign": "softsign",
    "ReLU": "relu",
    "ReLU6": "relu6",
    "LeakyReLU": "leaky_relu",
    "PReLU": "prelu",
    "RReLU": "rrelu",
    "ELU": "elu",
    "SELU": "selu",
    "CELU": "celu",
    "GELU": "gelu",
    "SiLU": "silu",
    "Mish": "mish",
    "Softplus": "softplus",
    "Hardswish": "hardswish",
}

#: Hugging Face ``transformers`` activation classes (``transformers.activations``) ->
#: catalog name. Exact: GELUActivation (erf), the tanh approximations (GELUTanh, alias
#: PytorchGELUTanh, NewGELUActivation "gelu_new", FastGELUActivation, AccurateGELU),
#: SiLU, Mish, LinearActivation (identity). Closest entry, not exact:
#: ClippedGELUActivation (GELU clipped to [min, max], default [-10, 10]: gelu),
#: QuickGELUActivation (x * sigmoid(1.702 x), within 0.021 of GELU: gelu),
#: LaplaceActivation (a Gaussian CDF, bounded in (0, 1) and saturating both ways:
#: sigmoid), ReLUSquaredActivation (relu(x)^2: dies exactly where ReLU does: relu),
#: SqrtSoftplusActivation (sqrt(softplus(x)), positive and never flat: softplus).
#: XIELUActivation has no close entry and is not mapped.
_TRANSFORMERS_CLASSES: dict[str, str] = {
    "GELUActivation": "gelu",
    "ClippedGELUActivation": "gelu",
    "QuickGELUActivation": "gelu",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "NewGELUActivation": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
    "AccurateGELUActivation": "gelu_tanh",
    "SiLUActivation": "silu",
    "MishActivation": "mish",
    "LinearActivation": "identity",
    "LaplaceActivation": "sigmoid",
    "ReLUSquaredActivation": "relu",
    "SqrtSoftplusActivation": "softplus",
}

#: timm activation classes (``timm.layers.activations``, ``activations_me``,
#: ``activations_jit`` and the older ``timm.models.layers``) -> catalog name. timm's
#: ``PReLU`` subclasses ``nn.PReLU`` and needs no entry. Closest entry, not exact:
#: QuickGELU (gelu, as above), HardMish (``0.5 x clamp(x + 2, 0, 2)``, flat zero below
#: -2 like hard swish below -3: hardswish).
_TIMM_CLASSES: dict[str, str] = {
    **{
        f"{base}{suffix}": name
        for base, name in (
            ("Swish", "silu"),
            ("Mish", "mish"),
            ("HardSwish", "hardswish"),
            ("HardSigmoid", "hardsigmoid"),
            ("HardMish", "hardswish"),
        )
        for suffix in ("", "Me", "Jit")
    },
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "GELU": "gelu",
    "GELUTanh": "gelu_tanh",
    "QuickGELU": "gelu",
}


def names() -> list[str]:
    """Canonical names, in catalog order.

    >>> names()[:3]
    ['identity', 'sigmoid', 'tanh']
    """
    return [a.name for a in ENTRIES]


def entries() -> tuple[Activation, ...]:
    """Every entry, in catalog order."""
    return ENTRIES


def get(name: str | Activation) -> Activation:
    """The catalog entry for ``name`` (canonical name, alias or PyTorch class name).

    Args:
        name: e.g. ``"relu"``, ``"swish"``, ``"LeakyReLU"``, ``"hard_sigmoid"``; an
            :class:`Activation` is returned as is.

    Returns:
        The :class:`Activation`.

    Raises:
        UsageError: (a ``ValueError``) for an unknown name; the message lists the known
            names and suggests the closest one.

    >>> get("relu").gain == 2 ** 0.5
    True
    """
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str):
        raise UsageError(
            f"activation name must be a string, got {type(name).__name__} {name!r}; "
            f"known names: {', '.join(names())}"
        )
    canonical = _KEYS.get(_key(name))
    if canonical is not None:
        return _BY_NAME[canonical]
    close = difflib.get_close_matches(_key(name), list(_KEYS), n=1, cutoff=0.6)
    hint = f"did you mean {_KEYS[close[0]]!r}? " if close else ""
    aliases = sorted({al for a in ENTRIES for al in a.aliases})
    raise UsageError(
        f"unknown activation {name!r}; {hint}known names: {', '.join(names())} "
        f"(aliases: {', '.join(aliases)}; case, '_' and '-' are ignored)"
    )


def _library(cls: type) -> str:
    """The top-level package a class is defined in (``"torch"``, ``"transformers"``...)."""
    return str(getattr(cls, "__module__", "") or "").split(".", 1)[0]


def activation_name_for_module(module: object) -> str | None:
    """The canonical activation name of an activation module, else None.

    Class-name based, walking the module's MRO, so it imports no framework and also
    covers subclasses such as ``class MyReLU(nn.ReLU)``. A class counts only when it is
    defined where its name says: ``torch.nn`` classes (``nn.GELU(approximate='tanh')``
    maps to ``"gelu_tanh"``), Hugging Face ``transformers`` classes and timm classes
    (see ``_TRANSFORMERS_CLASSES`` and ``_TIMM_CLASSES`` for what each maps to and
    which are the closest catalog entry rather than an exact one). A linear
    "activation" (``transformers.activations.LinearActivation``) maps to
    ``"identity"``; ``nn.Identity``, ``nn.Softmax`` and non-activation modules map to
    None.

    >>> class ReLU:  # not a torch.nn class: ignored
    ...     pass
    >>> activation_name_for_module(ReLU()) is None
    True
    >>> QuickGELU = type("QuickGELU", (), {"__module__": "timm.layers.activations"})
    >>> activation_name_for_module(QuickGELU())  # x * sigmoid(1.702 x): closest is gelu
    'gelu'
    """
    for cls in type(module).__mro__:
        library = _library(cls)
        if library == "torch":
            name = _TORCH_CLASSES.get(cls.__name__)
            if name is None or not cls.__module__.startswith("torch.nn"):
                continue
            if name == "gelu" and getattr(module, "approximate", "none") == "tanh":
                return "gelu_tanh"
            return name
        if library == "transformers" and cls.__name__ in _TRANSFORMERS_CLASSES:
            return _TRANSFORMERS_CLASSES[cls.__name__]
        if library == "timm" and cls.__name__ in _TIMM_CLASSES:
            return _TIMM_CLASSES[cls.__name__]
    return None


def from_module(module: object) -> Activation | None:
    """The catalog entry for an activation module (see
    :func:`activation_name_for_module`), or None."""
    name = activation_name_for_module(module)
    return None if name is None else _BY_NAME[name]
