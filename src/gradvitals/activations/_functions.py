"""Numpy reference implementations of every activation and its derivative.

Each pair is written to stay finite and warning-free for any float64 input, including
``|x| = 1e4`` and beyond: exponentials only ever see ``-|x|``, sech^2 is computed from
``exp(-|x|)`` instead of ``1 - tanh^2``, and softplus uses ``logaddexp``. At a kink the
derivative takes the value PyTorch's autograd uses (ReLU'(0) = 0, LeakyReLU'(0) = slope).

>>> import numpy as np
>>> sigmoid(np.array([-1e4, 0.0, 1e4])).tolist()
[0.0, 0.5, 1.0]
>>> float(dtanh(0.0)), float(dsigmoid(0.0))
(1.0, 0.25)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "SELU_ALPHA",
    "SELU_SCALE",
    "celu",
    "dcelu",
    "delu",
    "dgelu",
    "dgelu_tanh",
    "dhardsigmoid",
    "dhardswish",
    "dhardtanh",
    "didentity",
    "dleaky",
    "dmish",
    "drelu",
    "drelu6",
    "dselu",
    "dsigmoid",
    "dsilu",
    "dsoftplus",
    "dsoftsign",
    "dtanh",
    "elu",
    "gelu",
    "gelu_tanh",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "identity",
    "leaky",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softplus",
    "softsign",
    "tanh",
]

F64 = NDArray[np.float64]

#: SELU's fixed point constants (Klambauer et al. 2017), as in PyTorch and Keras.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K_TANH = math.sqrt(2.0 / math.pi)  # GELU tanh approximation: sqrt(2/pi)
_C_TANH = 0.044715

_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _a(x: ArrayLike) -> F64:
    return np.asarray(x, dtype=np.float64)


def identity(x: ArrayLike) -> F64:
    return _a(x).copy()


def didentity(x: ArrayLike) -> F64:
    return np.ones_like(_a(x))


def sigmoid(x: ArrayLike) -> F64:
    """1 / (1 + e^-x), via e^-|x| so nothing overflows."""
    x = _a(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def dsigmoid(x: ArrayLike) -> F64:
    """sigma(x) sigma(-x) = e^-|x| / (1 + e^-|x|)^2."""
    e = np.exp(-np.abs(_a(x)))
    return e / (1.0 + e) ** 2


def tanh(x: ArrayLike) -> F64:
    return np.tanh(_a(x))


def _sech2(u: F64) -> F64:
    """sech^2(u) = 4 e^-2|u| / (1 + e^-2|u|)^2, without cancellation in 1 - tanh^2."""
    e1 = np.exp(-np.abs(u))
    e = e1 * e1
    return 4.0 * e / (1.0 + e) ** 2


def dtanh(x: ArrayLike) -> F64:
    return _sech2(_a(x))


def hardsigmoid(x: ArrayLike) -> F64:
    return np.clip(_a(x) / 6.0 + 0.5, 0.0, 1.0)


def dhardsigmoid(x: ArrayLike) -> F64:
    x = _a(x)
    return np.where((x > -3.0) & (x < 3.0), 1.0 / 6.0, 0.0)


def hardtanh(x: ArrayLike) -> F64:
    return np.clip(_a(x), -1.0, 1.0)


def dhardtanh(x: ArrayLike) -> F64:
    x = _a(x)
    return np.where((x > -1.0) & (x < 1.0), 1.0, 0.0)


def softsign(x: ArrayLike) -> F64:
    x = _a(x)
    return x / (1.0 + np.abs(x))


def dsoftsign(x: ArrayLike) -> F64:
    """1 / (1 + |x|)^2, squared after dividing so ``|x| = 1e300`` does not overflow."""
    r = 1.0 / (1.0 + np.abs(_a(x)))
    return r * r


def relu(x: ArrayLike) -> F64:
    return np.maximum(_a(x), 0.0)


def drelu(x: ArrayLike) -> F64:
    return np.where(_a(x) > 0, 1.0, 0.0)


def relu6(x: ArrayLike) -> F64:
    return np.clip(_a(x), 0.0, 6.0)


def drelu6(x: ArrayLike) -> F64:
    x = _a(x)
    return np.where((x > 0.0) & (x < 6.0), 1.0, 0.0)


def leaky(x: ArrayLike, slope: float) -> F64:
    x = _a(x)
    return np.where(x > 0, x, slope * x)


def dleaky(x: ArrayLike, slope: float) -> F64:
    return np.where(_a(x) > 0, 1.0, slope)


def elu(x: ArrayLike, alpha: float = 1.0) -> F64:
    x = _a(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def delu(x: ArrayLike, alpha: float = 1.0) -> F64:
    x = _a(x)
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))


def selu(x: ArrayLike) -> F64:
    return SELU_SCALE * elu(x, SELU_ALPHA)


def dselu(x: ArrayLike) -> F64:
    return SELU_SCALE * delu(x, SELU_ALPHA)


def celu(x: ArrayLike, alpha: float = 1.0) -> F64:
    x = _a(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0) / alpha))


def dcelu(x: ArrayLike, alpha: float = 1.0) -> F64:
    x = _a(x)
    return np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0) / alpha))


def _phi_cdf(x: F64) -> F64:
    """Phi(x) = erfc(-x / sqrt 2) / 2: accurate far into the left tail."""
    return 0.5 * _erfc(-x / _SQRT2)


def _phi_pdf(x: F64) -> F64:
    xc = np.clip(x, -50.0, 50.0)  # phi(50) underflows to 0 anyway; avoids x^2 overflow
    return _INV_SQRT_2PI * np.exp(-0.5 * xc * xc)


def gelu(x: ArrayLike) -> F64:
    x = _a(x)
    return x * _phi_cdf(x)


def dgelu(x: ArrayLike) -> F64:
    x = _a(x)
    return _phi_cdf(x) + x * _phi_pdf(x)


def _gelu_tanh_inner(x: F64) -> tuple[F64, F64]:
    xc = np.clip(x, -100.0, 100.0)  # tanh is +-1 to float64 precision well before 100
    u = _K_TANH * (xc + _C_TANH * xc**3)
    du = _K_TANH * (1.0 + 3.0 * _C_TANH * xc * xc)
    return u, du


def gelu_tanh(x: ArrayLike) -> F64:
    """0.5 x (1 + tanh u) = x sigma(2u): the sigmoid form keeps the left tail nonzero."""
    x = _a(x)
    u, _ = _gelu_tanh_inner(x)
    return x * sigmoid(2.0 * u)


def dgelu_tanh(x: ArrayLike) -> F64:
    """sigma(2u) + 2 x sigma(2u) sigma(-2u) u', i.e. 0.5(1 + t) + 0.5 x sech^2(u) u'."""
    x = _a(x)
    u, du = _gelu_tanh_inner(x)
    s, s_neg = sigmoid(2.0 * u), sigmoid(-2.0 * u)
    return s + 2.0 * x * s * s_neg * du


def silu(x: ArrayLike) -> F64:
    x = _a(x)
    return x * sigmoid(x)


def dsilu(x: ArrayLike) -> F64:
    """sigma(x) (1 + x sigma(-x)); sigma(-x) replaces 1 - sigma(x) to keep precision."""
    x = _a(x)
    return sigmoid(x) * (1.0 + x * sigmoid(-x))


def softplus(x: ArrayLike) -> F64:
    return np.logaddexp(0.0, _a(x))


def dsoftplus(x: ArrayLike) -> F64:
    return sigmoid(x)


def mish(x: ArrayLike) -> F64:
    x = _a(x)
    return x * np.tanh(softplus(x))


def dmish(x: ArrayLike) -> F64:
    """tanh(sp) + x sech^2(sp) sigma(x), with e^-sp = sigma(-x) so sech^2(sp) is exact."""
    x = _a(x)
    s = sigmoid(-x)  # e^{-softplus(x)}
    s2 = s * s
    sech2 = 4.0 * s2 / (1.0 + s2) ** 2
    return np.tanh(softplus(x)) + x * sech2 * sigmoid(x)


def hardswish(x: ArrayLike) -> F64:
    x = _a(x)
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def dhardswish(x: ArrayLike) -> F64:
    """0 below -3, 1 above 3, (2x + 3)/6 on [-3, 3] (PyTorch's values at the kinks)."""
    x = _a(x)
    return np.where(x < -3.0, 0.0, np.where(x > 3.0, 1.0, (2.0 * x + 3.0) / 6.0))
