"""Name -> entry lookup with aliases, and module -> entry mapping (without importing torch).

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


def activation_name_for_module(module: object) -> str | None:
    """The canonical activation name of a ``torch.nn`` activation module, else None.

    Class-name based (the first ``torch.nn`` class in the module's MRO), so it works
    without importing torch and also for subclasses such as ``class MyReLU(nn.ReLU)``.
    ``nn.GELU(approximate='tanh')`` maps to ``"gelu_tanh"``. ``nn.Identity`` and
    non-activation modules map to None.

    >>> class ReLU:  # not a torch.nn class: ignored
    ...     pass
    >>> activation_name_for_module(ReLU()) is None
    True
    """
    for cls in type(module).__mro__:
        name = _TORCH_CLASSES.get(cls.__name__)
        if name is None or not cls.__module__.startswith("torch.nn"):
            continue
        if name == "gelu" and getattr(module, "approximate", "none") == "tanh":
            return "gelu_tanh"
        return name
    return None


def from_module(module: object) -> Activation | None:
    """The catalog entry for a ``torch.nn`` activation module (see
    :func:`activation_name_for_module`), or None."""
    name = activation_name_for_module(module)
    return None if name is None else _BY_NAME[name]
