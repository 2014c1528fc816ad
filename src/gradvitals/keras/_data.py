"""The probe batches: a few training examples the callback measures on.

Keras gives callbacks neither the batch nor the gradients, so gradvitals measures on
*probe batches* of the user's own training data (``probe=(x, y)``). They are cut once
into equal chunks of ``probe_size`` examples (one compiled shape) and used in turn,
one chunk per sampled step, so successive windows see different examples.
"""

from __future__ import annotations

from typing import Any

from gradvitals.errors import UsageError

__all__ = ["ProbeBatch", "probe_batches"]

#: ``(x, y, sample_weight)`` as tensors; ``y`` and ``sample_weight`` may be None.
ProbeBatch = tuple[Any, Any, Any]

_HOW = (
    "pass a few hundred training examples, e.g. "
    "VitalsCallback(probe=(x_train[:512], y_train[:512])), or a batched tf.data.Dataset"
)


def _leaves(x: Any) -> list[Any]:
    import tensorflow as tf

    return [leaf for leaf in tf.nest.flatten(x) if leaf is not None]


def _n_examples(x: Any) -> int:
    leaves = _leaves(x)
    if not leaves or not hasattr(leaves[0], "shape") or len(leaves[0].shape) == 0:
        raise UsageError(f"probe inputs must be arrays with a batch dimension; {_HOW}")
    return int(leaves[0].shape[0])


def _split(probe: Any) -> ProbeBatch:
    if isinstance(probe, (tuple, list)) and 1 <= len(probe) <= 3:
        x, y, sw = (*probe, None, None)[:3]
        return x, y, sw
    return probe, None, None


def probe_batches(probe: Any, probe_size: int, max_batches: int = 16) -> list[ProbeBatch]:
    """Cut ``probe`` into at most ``max_batches`` tensors batches of ``probe_size`` examples.

    Args:
        probe: ``(x, y)`` or ``(x, y, sample_weight)`` of arrays (``x`` may be a
            list/dict for multi-input models), or a batched ``tf.data.Dataset`` of
            such tuples (its first ``max_batches`` batches are kept).
        probe_size: examples per probe batch (a smaller array gives one batch).
        max_batches: how many batches to keep.

    Returns:
        A non-empty list of ``(x, y, sample_weight)`` tensor tuples.
    """
    import tensorflow as tf

    if probe is None:
        raise UsageError(f"VitalsCallback needs probe data to measure on: {_HOW}")
    if isinstance(probe, tf.data.Dataset):
        out = []
        for element in probe.take(max_batches):
            out.append(_split(element))
        if not out:
            raise UsageError(f"the probe dataset is empty; {_HOW}")
        return out
    x, y, sw = _split(probe)
    n = _n_examples(x)
    if n == 0:
        raise UsageError(f"the probe data has no examples; {_HOW}")
    size = min(probe_size, n)
    batches: list[ProbeBatch] = []
    for i in range(min(n // size, max_batches)):
        sl = slice(i * size, (i + 1) * size)

        def cut(a: Any, sl: slice = sl) -> Any:
            return None if a is None else tf.convert_to_tensor(a[sl])

        batches.append(
            (
                tf.nest.map_structure(cut, x),
                None if y is None else tf.nest.map_structure(cut, y),
                None if sw is None else cut(sw),
            )
        )
    return batches
