"""Compiled measurements on the device: one probe step, weight snapshots and their deltas.

Everything is a ``tf.function`` that returns one flat ``float64`` tensor, kept on the
device until the window closes (one host copy per window, see ``_window.py``).

**Probe step** (a sampled step, before the optimizer applies it): on one probe batch,

- ``y_pred`` and every site's output from one forward pass of a sub-model of layer
  outputs (``keras.Model(model.input, [[site outputs], model.output])``), in training
  mode, under a ``tf.GradientTape``;
- ``loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw)`` (the
  compiled loss plus regularisation losses), and its gradient with respect to every
  trainable variable: unscaled and **pre-clip** (the optimizer never sees it);
- per layer: :math:`\\sum_v \\|g_v\\|_2^2` and a non-finite flag; per site: the unit mask
  ``max_x a_u(x) > 0``, exact zeros, saturated values, non-finite units and the minimum.

The probe leaves no trace: non-trainable variables (BatchNorm moving statistics, the
dropout seed) are restored afterwards, and no metric is updated.

Packed layout (``Probe.layout``): ``[loss, grad_sq (L), grad_nonfinite (L)]`` then per
site its :data:`~gradvitals.stats.SITE_FIELDS` in table order (``ever_positive`` has
one entry per unit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradvitals.keras._layout import GraphView, LayerTable, Site
from gradvitals.stats import DIES_WHEN_NEVER_POSITIVE, SATURATING, asymptotes
from gradvitals.stats._table import SITE_FIELDS

__all__ = ["SITE_SCALARS", "Probe", "ProbeLayout"]

#: per-site scalars after the unit mask: the table's site fields, in table order
SITE_SCALARS: tuple[str, ...] = tuple(f.name for f in SITE_FIELDS if not f.per_unit)


@dataclass
class ProbeLayout:
    """Sizes of the packed probe tensor, for unpacking on the host."""

    n_layers: int
    site_units: list[int]

    @property
    def size(self) -> int:
        return 1 + 2 * self.n_layers + sum(u + len(SITE_SCALARS) for u in self.site_units)


class Probe:
    """The compiled measurement functions for one model.

    Args:
        model: the Keras model being trained.
        table: its layers with trainable variables.
        sites: its activation sites (empty for a subclassed model).
        eps: distance to an asymptote that counts as saturated.
        view: the symbolic inputs, site outputs and prediction to build the sub-model
            of layer outputs from; None measures gradients and the loss only.
    """

    def __init__(
        self,
        model: Any,
        table: LayerTable,
        sites: list[Site],
        eps: float,
        view: GraphView | None = None,
    ) -> None:
        import keras
        import tensorflow as tf

        self.tf = tf
        self.model = model
        self.table = table
        self.sites = sites if view is not None else []
        self.eps = float(eps)
        self.sub = None
        units = []
        if view is not None and self.sites:
            self.sub = keras.Model(view.inputs, [list(view.site_outputs), view.prediction])
            for s, t in zip(self.sites, view.site_outputs, strict=True):
                units.append(int(t.shape[s.unit_axis % len(t.shape)]))
        self.layout = ProbeLayout(len(table.names), units)
        #: per layer: did any of its variables get a gradient (known after tracing)
        self.has_grad: list[bool] = [True] * len(table.names)
        self._segments = tf.constant(table.layer_of_var, dtype=tf.int32)
        self._step = tf.function(self._probe_step, reduce_retracing=True)
        self.snapshot = tf.function(self._snapshot)
        self.weights_and_deltas = tf.function(self._weights_and_deltas)

    # -- helpers ---------------------------------------------------------------------
    def _per_layer(self, per_var: list[Any]) -> Any:
        tf = self.tf
        return tf.math.unsorted_segment_sum(
            tf.stack(per_var), self._segments, num_segments=len(self.table.names)
        )

    def _site_stats(self, a: Any, site: Site) -> list[Any]:
        tf = self.tf
        a = tf.cast(a, tf.float32)
        rank = len(a.shape)
        axis = site.unit_axis % rank
        others = [d for d in range(rank) if d != axis]
        finite = tf.math.is_finite(a)
        positive = tf.reduce_any(a > 0.0, axis=others)
        bad_units = tf.reduce_any(tf.logical_not(finite), axis=others)
        none = tf.zeros_like(a, dtype=tf.bool)
        if site.activation in SATURATING:
            lo, hi = asymptotes(site.activation)
            sat = tf.logical_or(a < lo + self.eps, a > hi - self.eps)
        else:
            sat = none
        zero = tf.equal(a, 0.0) if site.activation in DIES_WHEN_NEVER_POSITIVE else none

        def count(mask: Any) -> Any:
            return tf.reduce_sum(tf.cast(mask, tf.float64))

        values = {
            "n_zero": count(zero),
            "n_saturated": count(sat),
            "n_nonfinite": count(bad_units),
            "min_value": tf.cast(tf.reduce_min(a), tf.float64),
            "n_examples": tf.cast(tf.shape(a)[0], tf.float64),
            "n_elements": tf.cast(tf.size(a), tf.float64),
        }
        scalars = [values[name] for name in SITE_SCALARS]
        return [tf.cast(positive, tf.float64), tf.stack(scalars)]

    # -- compiled functions ----------------------------------------------------------
    def _probe_step(self, x: Any, y: Any, sample_weight: Any) -> Any:
        tf = self.tf
        m = self.model
        frozen = list(m.non_trainable_variables)
        saved = [tf.identity(v.value) for v in frozen]
        with tf.GradientTape() as tape:
            if self.sub is not None:
                acts, y_pred = self.sub(x, training=True)
            else:
                acts, y_pred = [], m(x, training=True)
            loss = m.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
        grads = tape.gradient(loss, self.table.variables)
        for v, value in zip(frozen, saved, strict=True):
            v.assign(value)
        per_var = []
        for i, g in enumerate(grads):
            if g is None:
                self.has_grad[self.table.layer_of_var[i]] = False  # recorded at trace time
                per_var.append(tf.constant(0.0, tf.float64))
            else:
                g = tf.convert_to_tensor(g)
                per_var.append(tf.reduce_sum(tf.square(tf.cast(g, tf.float64))))
        grad_sq = self._per_layer(per_var)
        nonfinite = tf.cast(tf.logical_not(tf.math.is_finite(grad_sq)), tf.float64)
        pieces = [tf.reshape(tf.cast(loss, tf.float64), [1]), grad_sq, nonfinite]
        for a, site in zip(acts, self.sites, strict=True):
            pieces += self._site_stats(a, site)
        return tf.concat(pieces, axis=0)

    def _snapshot(self) -> list[Any]:
        return [self.tf.identity(v.value) for v in self.table.variables]

    def _weights_and_deltas(self, before: list[Any]) -> Any:
        tf = self.tf
        w_sq, d_sq = [], []
        for v, b in zip(self.table.variables, before, strict=True):
            w = tf.cast(v.value, tf.float64)
            w_sq.append(tf.reduce_sum(tf.square(w)))
            d_sq.append(tf.reduce_sum(tf.square(w - tf.cast(b, tf.float64))))
        return tf.concat([self._per_layer(w_sq), self._per_layer(d_sq)], axis=0)

    # -- public ----------------------------------------------------------------------
    def step(self, batch: tuple[Any, Any, Any]) -> Any:
        """Run the probe step on one ``(x, y, sample_weight)`` batch; a device tensor."""
        x, y, sw = batch
        return self._step(x, y, sw)
