"""The probe batches: a few training examples the callback measures on.

Keras gives callbacks neither the batch nor the gradients, so gradvitals measures on
*probe batches* of the user's own training data (``probe=(x, y)``). They are cut once
into equal chunks of ``probe_size`` examples (one compiled shape) and used in turn,
one chunk per sampled step, so successive windows see different examples.
"""

from __future__ import annotations

import re
from typing import Any

from gradvitals.errors import UsageError

__all__ = ["ProbeBatch", "check_probe", "probe_batches"]

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


def check_probe(model: Any, batch: ProbeBatch) -> None:
    """Run the model and its compiled loss once on two probe examples; a probe that does
    not fit the model (wrong width, length or label format) is a clear error at the
    start of ``fit``, not an internal error in the middle of it.

    Raises:
        UsageError: the model cannot take the probe, or its loss cannot take the labels.
    """
    import tensorflow as tf

    x, y, sw = batch

    def head(a: Any) -> Any:
        return None if a is None else tf.nest.map_structure(lambda t: t[:2], a)

    try:
        y_pred = model(head(x), training=False)
    except Exception as e:
        raise UsageError(
            f"the probe inputs do not fit the model ({type(e).__name__}: {_first_line(e)}); "
            f"pass examples shaped like your training inputs; {_HOW}"
        ) from None
    if y is None or (
        getattr(model, "compiled_loss", None) is None and not getattr(model, "loss", None)
    ):
        return
    try:
        model.compute_loss(x=head(x), y=head(y), y_pred=y_pred, sample_weight=head(sw))
    except Exception as e:
        raise UsageError(
            f"the probe labels do not fit the model's loss ({type(e).__name__}: "
            f"{_first_line(e)}); pass labels as you pass them to fit(); {_HOW}"
        ) from None


def _first_line(e: BaseException) -> str:
    """The most telling line of a framework error (Keras puts the shapes further down)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # Keras bolds parts of its messages
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for key in ("expected", "incompatible", "shape"):
        hit = next((ln for ln in lines if key in ln.lower()), None)
        if hit is not None:
            return hit[:300]
    return lines[0][:300] if lines else ""
