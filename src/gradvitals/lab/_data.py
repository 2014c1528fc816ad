"""Small offline data sets as float32 tensors, standardised with training statistics.

- :func:`digits`: scikit-learn's bundled 8x8 digits (1797 x 64, 10 classes),
  standardised or scaled to [0, 1].
- :func:`toy`: 2-D two-class sets that no linear model separates: ``moons``,
  ``circles`` (scikit-learn generators) and ``spirals`` (two interleaved arms).

>>> d = toy("spirals", n=200, noise=0.1, seed=0)
>>> tuple(d.x_train.shape), tuple(d.x_test.shape), d.n_classes
((150, 2), (50, 2), 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TOY_SETS", "Split", "digits", "toy"]

TOY_SETS = ("moons", "circles", "spirals")


@dataclass
class Split:
    """A train/test split. ``x_*``: (n, d) float32; ``y_*``: (n,) int64 class labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str

    @property
    def n_classes(self) -> int:
        return int(self.y_train.max()) + 1

    @property
    def d_in(self) -> int:
        return int(self.x_train.shape[1])


def _split(
    x: np.ndarray,
    y: np.ndarray,
    test_fraction: float,
    seed: int,
    name: str,
    scale: str = "standard",
) -> Split:
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    if scale == "standard":
        mean, std = xtr.mean(0), xtr.std(0)
        std[std == 0] = 1.0  # constant pixels of the digits border
    elif scale == "unit":
        mean, std = np.zeros(x.shape[1]), np.full(x.shape[1], float(x.max()))
    else:
        from gradvitals.errors import UsageError

        raise UsageError(f"unknown input scaling {scale!r}; valid: standard, unit")
    f = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    g = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    return Split(f(xtr), g(ytr), f(xte), g(yte), name)


def digits(seed: int = 0, test_fraction: float = 0.2, scale: str = "standard") -> Split:
    """scikit-learn's digits (bundled, no download): ``scale="standard"`` standardises
    each pixel; ``"unit"`` divides by 16 (pixels in [0, 1], all inputs non-negative)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return _split(np.asarray(x, float), np.asarray(y), test_fraction, seed, "digits", scale)


def _spirals(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # two arms r = t, angle = t (+ pi for the second), t in [0.25, 3pi]: 1.5 turns each;
    # scaled by 1/pi so that neighbouring arms are 1 apart, like the two moons
    k = n // 2
    t = np.sqrt(rng.uniform(0.0, 1.0, size=n)) * 3 * np.pi + 0.25
    y = np.repeat([0, 1], [k, n - k])
    angle = t + np.pi * y
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) / np.pi
    return x + rng.normal(0.0, noise, size=x.shape), y


def toy(kind: str, n: int = 1000, noise: float = 0.2, seed: int = 0) -> Split:
    """A 2-D, two-class set: ``moons``, ``circles`` or ``spirals``; 25% held out."""
    from sklearn import datasets

    rng = np.random.default_rng(seed)
    if kind == "moons":
        x, y = datasets.make_moons(n, noise=noise, random_state=seed)
    elif kind == "circles":
        x, y = datasets.make_circles(n, noise=noise, factor=0.5, random_state=seed)
    elif kind == "spirals":
        x, y = _spirals(n, noise, rng)
    else:
        from gradvitals.errors import UsageError

        raise UsageError(f"unknown data set {kind!r}; valid: {', '.join(TOY_SETS)}")
    return _split(np.asarray(x, float), np.asarray(y), 0.25, seed, kind)
