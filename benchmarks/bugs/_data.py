"""Offline data for the corpus: scikit-learn's bundled sets and small synthetic ones.

Every loader returns numpy arrays ``(x_train, y_train, x_test, y_test)`` split by a
seeded shuffle, float32 features, int64 class labels or float32 targets. Nothing here
imports a deep-learning framework.

>>> xtr, ytr, xte, yte = digits(0)
>>> xtr.shape, xte.shape, float(xtr.max()) <= 1.0
((1400, 64), (397, 64), True)
>>> batches = list(batch_indices(10, 4, steps=5, seed=0))
>>> [len(b) for b in batches]
[4, 4, 4, 4, 4]
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

__all__ = [
    "Split",
    "batch_indices",
    "breast_cancer",
    "diabetes",
    "digits",
    "split",
    "token_sequences",
    "wine",
]

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def split(x: np.ndarray, y: np.ndarray, n_train: int, seed: int) -> Split:
    """Shuffle with ``seed`` and cut into the first ``n_train`` rows and the rest."""
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = x[perm], y[perm]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64)


def digits(seed: int, *, raw: bool = False, n_train: int = 1400) -> Split:
    """8x8 digit images, 10 classes; pixels in [0, 1] (``raw=True``: the 0-16 counts)."""
    x, y = _digits()
    return split(x if raw else x / 16.0, y, n_train, seed)


@functools.cache
def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return d.data.astype(np.float32), d.target.astype(np.int64)


def breast_cancer(seed: int, *, standardize: bool = True, n_train: int = 420) -> Split:
    """30 tumour measurements, 2 classes; standardized with the training rows' statistics
    (``standardize=False``: the raw measurements, which range from 1e-3 to 4e3)."""
    xtr, ytr, xte, yte = split(*_breast_cancer(), n_train, seed)
    if standardize:
        mu, sd = xtr.mean(0), xtr.std(0)
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    return xtr, ytr, xte, yte


@functools.cache
def _wine() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_wine

    d = load_wine()
    return d.data.astype(np.float32), d.target.astype(np.int64)


def wine(seed: int, *, standardize: bool = True, n_train: int = 130) -> Split:
    """13 chemical measurements of 178 wines, 3 classes (standardized unless told)."""
    xtr, ytr, xte, yte = split(*_wine(), n_train, seed)
    if standardize:
        mu, sd = xtr.mean(0), xtr.std(0)
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    return xtr, ytr, xte, yte


@functools.cache
def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    return d.data.astype(np.float32), d.target.astype(np.float32)


def diabetes(seed: int, *, standardize: bool = False, n_train: int = 340) -> Split:
    """10 patient measurements (age in years, blood pressure in mm Hg...) and a disease
    progression score from 25 to 346; raw unless ``standardize`` (features and target
    standardized with the training rows' statistics)."""
    xtr, ytr, xte, yte = split(*_diabetes(), n_train, seed)
    if standardize:
        mu, sd = xtr.mean(0), xtr.std(0)
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
        ym, ys = ytr.mean(), ytr.std()
        ytr, yte = (ytr - ym) / ys, (yte - ym) / ys
    return xtr, ytr, xte, yte


def batch_indices(n: int, batch: int, *, steps: int, seed: int) -> Iterator[np.ndarray]:
    """``steps`` minibatches of row indices: a new shuffle every epoch, full batches only
    (a final partial batch of an epoch is dropped unless ``n < batch``)."""
    rng = np.random.default_rng(seed + 10_000)
    done = 0
    while done < steps:
        perm = rng.permutation(n)
        for i in range(0, max(n - batch + 1, 1), batch):
            yield perm[i : i + batch]
            done += 1
            if done == steps:
                return


def token_sequences(
    seed: int, *, n: int = 1200, max_len: int = 12, vocab: int = 12, empty: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Padded token sequences (0 = padding) and a label that needs the whole sequence:
    1 when token 1 occurs more often than token 2. Lengths are uniform in
    ``1..max_len``; a fraction ``empty`` of the sequences are all padding (label 0).

    >>> tokens, labels = token_sequences(0, n=4, max_len=5, empty=0.5)
    >>> tokens.shape, labels.dtype.name
    ((4, 5), 'int64')
    """
    rng = np.random.default_rng(seed + 20_000)
    tokens = np.zeros((n, max_len), dtype=np.int64)
    lengths = rng.integers(1, max_len + 1, size=n)
    lengths[rng.random(n) < empty] = 0
    for i, length in enumerate(lengths):
        tokens[i, :length] = rng.integers(1, vocab, size=length)
    labels = ((tokens == 1).sum(1) > (tokens == 2).sum(1)).astype(np.int64)
    return tokens, labels
