"""What kind of layer a module is, across ``torch.nn``, Hugging Face and timm.

Pure functions of one module (no hooks, no forward pass). Classes from other libraries
are recognised by class name and defining package, walking the MRO, so neither
``transformers`` nor ``timm`` is imported:

- **affine**: ``nn.Linear`` (and ``nn.Bilinear``, ``nn.LazyLinear``), every ``nn.ConvNd``
  and ``nn.ConvTransposeNd``, and ``transformers``' ``Conv1D`` (GPT-2's projections:
  ``y = x W + b`` with ``W`` of shape ``(in, out)``, ``out = nf``).
- **conv-like**: the ``nn`` convolutions, whose channels are on dim 1 of ``(N, C, ...)``.
  ``Conv1D`` is *not* conv-like: it is a linear layer over the last dim.
- **normalization**: ``nn.BatchNorm*``, ``SyncBatchNorm``, ``LayerNorm``, ``GroupNorm``,
  ``InstanceNorm*``, ``LocalResponseNorm``, ``RMSNorm``; and any ``transformers`` /
  timm class whose name ends in ``LayerNorm``, ``RMSNorm``, ``GroupNorm``,
  ``BatchNorm`` or ``InstanceNorm``, optionally followed by ``Act`` and ``1d``/``2d``/``3d``
  (``LlamaRMSNorm``, ``T5LayerNorm``, timm's ``LayerNorm2d`` and ``BatchNormAct2d``).
- **recurrent**: ``nn.RNN``/``LSTM``/``GRU`` and their cells.
- **embedding**: ``nn.Embedding``, ``nn.EmbeddingBag``.

>>> from torch import nn
>>> affine_out_units(nn.Linear(4, 3)), affine_out_units(nn.Conv2d(3, 8, 3))
(3, 8)
>>> is_conv_like(nn.Conv2d(3, 8, 3)), is_conv_like(nn.Linear(4, 3))
(True, False)
>>> is_normalization(nn.LayerNorm(4)), is_recurrent(nn.LSTM(4, 8)), is_embedding(nn.Embedding(9, 4))
(True, True, True)
>>> affine_out_units(nn.ReLU()) is None
True
"""

from __future__ import annotations

import re

from torch import nn

__all__ = [
    "CONVOLUTIONS",
    "affine_out_units",
    "is_affine",
    "is_conv_like",
    "is_embedding",
    "is_normalization",
    "is_recurrent",
]

#: the ``torch.nn`` convolution classes (units on dim 1), one declaration for the package
CONVOLUTIONS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_CONV: tuple[type[nn.Module], ...] = CONVOLUTIONS
_LINEAR: tuple[type[nn.Module], ...] = (nn.Linear, nn.Bilinear)
_NORM: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm, lazy variants
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
_RECURRENT: tuple[type[nn.Module], ...] = (nn.RNNBase, nn.RNNCellBase)
_EMBEDDING: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)

#: libraries whose classes are recognised by name (never imported)
_FOREIGN = frozenset({"transformers", "timm"})
#: class-name endings that mark a normalization layer in those libraries: ``LlamaRMSNorm``,
#: ``T5LayerNorm``, timm's ``LayerNorm2d``, ``RmsNorm``, ``BatchNormAct2d``, ``GroupNormAct``
_NORM_NAME = re.compile(r"(layer|rms|group|batch|instance)norm(act)?([123]d)?$")


def _foreign_names(module: object) -> list[str]:
    """Class names in the MRO that come from ``transformers`` or timm."""
    out = []
    for cls in type(module).__mro__:
        library = str(getattr(cls, "__module__", "") or "").split(".", 1)[0]
        if library in _FOREIGN:
            out.append(cls.__name__)
    return out


def _hf_conv1d_units(module: object) -> int | None:
    """``nf`` of a ``transformers`` ``Conv1D`` (GPT-2's projections), else None."""
    nf = getattr(module, "nf", None)
    if isinstance(nf, int) and nf > 0 and "Conv1D" in _foreign_names(module):
        return nf
    return None


def affine_out_units(module: object) -> int | None:
    """The number of output units of an affine layer, else None.

    ``out_features`` for ``nn.Linear``/``nn.Bilinear``, ``out_channels`` for
    convolutions, ``nf`` for ``transformers``' ``Conv1D`` (its weight is ``(in, out)``,
    the transpose of ``nn.Linear``'s).

    >>> from torch import nn
    >>> affine_out_units(nn.ConvTranspose1d(2, 5, 3)), affine_out_units(nn.Bilinear(2, 3, 4))
    (5, 4)
    >>> Conv1D = type("Conv1D", (nn.Module,), {"__module__": "transformers.pytorch_utils"})
    >>> gpt2_proj = Conv1D(); gpt2_proj.nf = 12
    >>> affine_out_units(gpt2_proj)
    12
    """
    if isinstance(module, _LINEAR):
        out = getattr(module, "out_features", None)
        return int(out) if isinstance(out, int) and out > 0 else None
    if isinstance(module, _CONV):
        out = getattr(module, "out_channels", None)
        return int(out) if isinstance(out, int) and out > 0 else None
    return _hf_conv1d_units(module)


def is_affine(module: object) -> bool:
    """True for a Linear/Conv layer or ``transformers``' ``Conv1D``: ``y = W x + b``.

    >>> from torch import nn
    >>> is_affine(nn.Linear(2, 2)), is_affine(nn.LazyLinear(3)), is_affine(nn.LayerNorm(2))
    (True, True, False)
    """
    return isinstance(module, (*_LINEAR, *_CONV)) or _hf_conv1d_units(module) is not None


def is_conv_like(module: object) -> bool:
    """True for the ``torch.nn`` convolutions: outputs ``(N, C, ...)``, units on dim 1.

    ``transformers``' ``Conv1D`` is a linear layer over the last dim, so it is not.

    >>> from torch import nn
    >>> is_conv_like(nn.Conv1d(2, 4, 3)), is_conv_like(nn.ConvTranspose2d(2, 4, 3))
    (True, True)
    """
    return isinstance(module, _CONV)


def is_normalization(module: object) -> bool:
    """True for a normalization layer (batch, layer, group, instance, RMS norm).

    ``transformers``/timm classes count when their name ends in ``LayerNorm``,
    ``RMSNorm``, ``GroupNorm``, ``BatchNorm`` or ``InstanceNorm`` (then optionally ``Act``
    and ``1d``/``2d``/``3d``): ``LlamaRMSNorm``, ``T5LayerNorm``, ``LayerNorm2d``. The check
    ignores case and imports neither library.

    >>> from torch import nn
    >>> is_normalization(nn.BatchNorm2d(3)), is_normalization(nn.Dropout())
    (True, False)
    >>> LlamaRMSNorm = type("LlamaRMSNorm", (nn.Module,),
    ...                     {"__module__": "transformers.models.llama.modeling_llama"})
    >>> is_normalization(LlamaRMSNorm())
    True
    """
    if isinstance(module, _NORM):
        return True
    return any(_NORM_NAME.search(name.lower()) for name in _foreign_names(module))


def is_recurrent(module: object) -> bool:
    """True for ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` and their ``...Cell`` versions.

    >>> from torch import nn
    >>> is_recurrent(nn.GRUCell(2, 3)), is_recurrent(nn.Linear(2, 3))
    (True, False)
    """
    return isinstance(module, _RECURRENT)


def is_embedding(module: object) -> bool:
    """True for ``nn.Embedding`` and ``nn.EmbeddingBag`` (a lookup, not an affine map).

    >>> from torch import nn
    >>> is_embedding(nn.EmbeddingBag(10, 3)), is_embedding(nn.Linear(10, 3))
    (True, False)
    """
    return isinstance(module, _EMBEDDING)
