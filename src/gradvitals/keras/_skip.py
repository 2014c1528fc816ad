"""The Keras ``skip_batch`` guard: optimizer steps whose gradients are not finite do nothing.

:class:`StepGuard` replaces one optimizer instance's ``apply`` (which
``apply_gradients``, and so Keras' own ``train_step``, calls) by a guarded one. Inside
the compiled step it computes

.. math:: \\text{finite} = \\bigwedge_v \\bigwedge_i \\operatorname{isfinite}(g_{v,i})

over every gradient the step hands the optimizer, and ``keras.ops.cond`` runs either

- the optimizer's own ``apply`` on the same gradients (finite): the same ops in the
  same order, so the weights and slots are bitwise those of an unguarded run; or
- only ``skipped += 1`` (not finite): the weights, the optimizer's slots and its
  ``iterations`` counter stay as they were, as ``LossScaleOptimizer`` does for an
  overflowed step (but without a loss scale: the finite steps' numerics are untouched).

The count lives in a ``keras.Variable`` owned by the guard, not by the optimizer (so
the optimizer's variables, its checkpoints and repair's snapshots are unchanged) and
is read on the host only when asked (:attr:`StepGuard.skipped`, once per window): no
per-step host sync. The traced step must be re-traced after :meth:`StepGuard.install`
(``model.make_train_function(force=True)``); a step already compiled keeps calling
the unguarded ``apply``.

Not for a ``LossScaleOptimizer`` (it already skips non-finite steps, and a guard in
front of it would hide the overflows its scale must react to) nor under a distribution
strategy with several replicas (the update's cross-replica merge cannot run inside a
replica-local ``cond``): see :func:`guard_refusal`.

>>> import numpy as np, keras
>>> w = keras.Variable(np.ones(2, "float32"))
>>> opt = keras.optimizers.SGD(1.0); opt.build([w])
>>> guard = StepGuard(); guard.install(opt)
>>> opt.apply([np.array([np.nan, 1.0], "float32")], [w])
>>> opt.apply([np.array([0.5, 1.0], "float32")], [w])
>>> w.numpy().tolist(), guard.skipped, int(opt.iterations.numpy())
([0.5, 0.0], 1, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["StepGuard", "guard_refusal"]


def guard_refusal(model: Any) -> str | None:
    """Why a :class:`StepGuard` cannot guard this model's optimizer, or None: it can.

    >>> guard_refusal(None)
    'the model has no optimizer'
    """
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return "the model has no optimizer"
    if not getattr(opt, "built", False):
        return "the optimizer is not built yet"
    if hasattr(opt, "inner_optimizer"):
        return "a LossScaleOptimizer already skips the steps whose gradients are not finite"
    strategy = getattr(model, "distribute_strategy", None)
    if int(getattr(strategy, "num_replicas_in_sync", 1) or 1) > 1:
        return "the model trains under a distribution strategy with several replicas"
    return None


def _dense(g: Any) -> Any:
    """The values of a gradient (an ``IndexedSlices``' values; a tensor as it is)."""
    return g.values if hasattr(g, "indices") and hasattr(g, "values") else g


def all_finite(grads: Sequence[Any]) -> Any:
    """A scalar boolean tensor: every gradient (None ones ignored) is finite."""
    from keras import ops

    flags = [ops.all(ops.isfinite(_dense(g))) for g in grads if g is not None]
    return ops.all(ops.stack(flags)) if flags else ops.convert_to_tensor(True)


class StepGuard:
    """Skips, and counts, the optimizer steps whose gradients hold a NaN or an Inf.

    Attributes:
        optimizer: the guarded optimizer (None until :meth:`install`).
        count: the ``keras.Variable`` (int64) the compiled step increments per skip.
    """

    def __init__(self) -> None:
        self.optimizer: Any = None
        self.count: Any = None

    @property
    def skipped(self) -> int:
        """Steps skipped so far (one host read of the counter)."""
        return 0 if self.count is None else int(self.count.numpy())

    def install(self, optimizer: Any) -> None:
        """Guard ``optimizer.apply`` (and so ``apply_gradients``) from now on.

        Raises:
            ValueError: the optimizer is already guarded.
        """
        import keras

        if "apply" in vars(optimizer):
            raise ValueError(f"optimizer {optimizer.name!r} is already guarded")
        self.count = keras.Variable(0, dtype="int64", trainable=False, name="skipped_steps")
        inner = optimizer.apply  # the bound method of the optimizer's class
        count = self.count

        def apply(grads: Sequence[Any], trainable_variables: Any = None) -> None:
            grads = list(grads)

            def step() -> None:
                inner(grads, trainable_variables)

            def skip() -> None:
                count.assign_add(1)

            keras.ops.cond(all_finite(grads), step, skip)

        optimizer.apply = apply
        self.optimizer = optimizer

    def remove(self) -> None:
        """Give the optimizer its own ``apply`` back (re-trace the step afterwards)."""
        if self.optimizer is not None and "apply" in vars(self.optimizer):
            del self.optimizer.apply
        self.optimizer = None
