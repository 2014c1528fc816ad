"""``VitalsCallback``: gradvitals' vital signs inside ``model.fit``.

Wiring only, as in the PyTorch monitor: windows of ``every`` optimizer steps (after a
warm-up of windows of 1, 2, 4... steps), a few *sampled* steps per window, one host
copy per window, and the framework-free detectors decide.

**Hook choice (measured, see docs/keras.md).** The callback overrides
``on_train_batch_begin``, never ``on_train_batch_end``: overriding the latter makes
Keras turn off asynchronous callback dispatch and convert every batch's logs to
Python floats, a host sync per batch. ``on_train_batch_begin`` receives no logs and
costs one integer comparison on unsampled batches. With ``steps_per_execution=k`` it
fires every ``k`` batches, and the schedule samples the last call of each window.

**What a sampled step measures** (before the optimizer applies that step):

- a probe step on one probe batch (``_probe.py``): pre-clip gradients per layer, the
  loss, and per-site activations from a sub-model of layer outputs;
- a snapshot of the weights; at the next hook the update
  :math:`\\|w_{t+k} - w_t\\|_2 / k` and :math:`\\|w\\|_2` (``k`` = steps between the two
  hooks, 1 unless ``steps_per_execution`` > 1): the optimizer's real step.

The training loss comes from Keras' loss tracker (``_window.py``): exact window means,
read when a window closes.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import keras

from gradvitals.detectors import DetectorSuite, Thresholds
from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.keras._data import ProbeBatch, probe_batches
from gradvitals.keras._layout import LayerTable, Site, graph_view, plan_sites
from gradvitals.keras._probe import Probe
from gradvitals.keras._remedies import keras_remedies
from gradvitals.keras._window import LossBase, WindowBuffer, assemble
from gradvitals.remedies import RepairPolicy
from gradvitals.stats import WindowRecord, history_scalars

__all__ = ["VitalsCallback"]

log = logging.getLogger("gradvitals")


def _positive_int(name: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be an integer >= 1 ({what}), got {value!r}")
    return value


def _thresholds(value: Any) -> Thresholds:
    if isinstance(value, Thresholds):
        return value
    if value is None:
        return Thresholds()
    if isinstance(value, dict):
        return Thresholds.from_kwargs(**value)
    raise UsageError(
        f"thresholds must be a gradvitals.Thresholds or a dict of names, got {type(value).__name__}"
    )


class VitalsCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Watch a Keras 3 (TensorFlow backend) model's training for failing vital signs.

    Args:
        probe: training examples to measure on: ``(x, y)``, ``(x, y, sample_weight)``
            or a batched ``tf.data.Dataset``. Keras does not show callbacks the
            training batches or their gradients, so each sampled step runs one extra
            forward/backward pass on a probe batch (a few hundred examples are enough;
            they are used in turn, ``probe_size`` at a time).
        every: optimizer steps per window; the detectors run once per window
            (default 20; the first windows are 1, 2, 4... steps unless ``warmup=False``).
        samples: sampled steps per window (default 1; the last step(s) of the window).
        probe_size: examples per probe batch (default 128).
        log_dir: write TensorBoard vital signs there (``gradvitals report`` reads it).
        thresholds: a :class:`~gradvitals.Thresholds` or a dict of overrides by name.
        repair: repair in flight: roll back to the last healthy weights and apply the
            next action of the policy (lower the learning rate, clip, swap ReLU for
            Leaky ReLU...; see ``_repair.py``).
        policy: a :class:`~gradvitals.RepairPolicy` (or a dict of its fields); implies
            ``repair=True``. Default: ``RepairPolicy()``, at most 3 repairs per mode.
        console: log each finding on the ``gradvitals`` logger (default True).
        warmup: short first windows, so early failures are seen early (default True).
        history_limit: window records kept in :attr:`history` (None: all).

    Attributes:
        findings: every :class:`~gradvitals.Finding`, oldest first.
        history: one :class:`~gradvitals.stats.WindowRecord` per closed window.
        repairs: one dict per repair: ``{"step", "kind", "layer", "action", "reason",
            "healthy_after", "attempt", "rollback_step"}``.
        step_count: optimizer steps seen so far (across ``fit`` calls).

    Example:
        >>> import numpy as np, keras
        >>> from gradvitals.keras import VitalsCallback
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(256, 8).astype("float32"); y = (x.sum(1) > 4).astype("int32")
        >>> model = keras.Sequential([keras.Input((8,)),
        ...     keras.layers.Dense(16, activation="relu", name="hidden"),
        ...     keras.layers.Dense(2, name="out")])
        >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> vitals = VitalsCallback(probe=(x, y), every=5)
        >>> _ = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[vitals])
        >>> vitals.findings, vitals.step_count
        ([], 16)
        >>> sorted(vitals.history[1].scalars())  # doctest: +NORMALIZE_WHITESPACE
        ['dead_fraction/hidden', 'grad_norm/hidden', 'grad_norm/out', 'grad_norm_total/model',
         'loss/train', 'update_ratio/hidden', 'update_ratio/out', 'zero_fraction/hidden']
        >>> print(vitals.report())
        gradvitals: healthy, no failures found in 5 windows.
    """

    def __init__(
        self,
        probe: Any = None,
        *,
        every: int = 20,
        samples: int = 1,
        probe_size: int = 128,
        log_dir: str | None = None,
        thresholds: Thresholds | dict[str, Any] | None = None,
        repair: bool = False,
        policy: RepairPolicy | dict[str, Any] | None = None,
        console: bool = True,
        warmup: bool = True,
        history_limit: int | None = 10_000,
    ) -> None:
        super().__init__()
        self.every = _positive_int("every", every, "optimizer steps per window")
        self.samples = _positive_int("samples", samples, "sampled steps per window")
        self.probe_size = _positive_int("probe_size", probe_size, "examples per probe batch")
        self.thresholds = _thresholds(thresholds)
        self._batches: list[ProbeBatch] = probe_batches(probe, self.probe_size)
        self.warmup = warmup
        self.console = console
        self.history_limit = history_limit
        self.log_dir = log_dir
        self.suite = DetectorSuite(self.thresholds)
        self.findings: list[Finding] = []
        self.history: list[WindowRecord] = []
        self.repairs: list[dict[str, Any]] = []
        self.step_count = 0
        self.disabled = False
        self._repairer: Any = None
        if repair or policy is not None:
            from gradvitals.keras._repair import KerasRepairer

            self._repairer = KerasRepairer(self, policy)
        self._sink: Any = None
        self._probe: Probe | None = None
        self._table: LayerTable | None = None
        self._sites: list[Site] = []
        self._tracker: Any = None
        self._buffer = WindowBuffer()
        self._loss_base = LossBase()
        self._pending: tuple[int, Any] | None = None
        self._cursor = 0
        self._window_index = 0
        self._window_start = 0
        self._window_len = self._length_of(0)
        self._samples_taken = 0
        self._next_event = 0
        self._epoch_base = 0
        self._last_begin: int | None = None
        self._epoch_open = False
        self._epoch_end_read: Any = None
        self._spe = 1
        self._warned_subclassed = False

    # -- schedule --------------------------------------------------------------------
    def _length_of(self, index: int) -> int:
        if self.warmup and index < 16:
            return min(self.every, 2**index)
        return self.every

    @property
    def _window_last(self) -> int:
        return self._window_start + self._window_len - 1

    def _sample_from(self) -> int:
        """First step at which this window samples (its last ``samples`` steps, or the
        last hook call before it ends when ``steps_per_execution`` skips them)."""
        last = self._window_last
        return min(last - min(self.samples, self._window_len) + 1, last - self._spe + 1)

    def _plan_next(self, earliest: int) -> None:
        """Set the first step at which a hook call has work: ``earliest`` or later."""
        if self._pending is not None:
            self._next_event = earliest
            return
        nxt = self._window_last + 1
        if self._samples_taken < self.samples:
            nxt = min(nxt, max(self._sample_from(), earliest))
        self._next_event = max(nxt, earliest)

    # -- setup -----------------------------------------------------------------------
    def _setup(self) -> bool:
        """Build the layer table, sites and probe once the model has weights."""
        if self._probe is not None:
            return True
        m = self.model
        if m is None or not m.built or not m.trainable_variables:
            return False
        self._table = LayerTable.from_model(m)
        sites, why = plan_sites(m)
        if why is not None and not self._warned_subclassed:
            self._warned_subclassed = True
            warnings.warn(f"gradvitals: {why}", UserWarning, stacklevel=2)
        view = None
        if sites:
            try:
                view, sites = graph_view(m, sites, self._batches[0][0])
            except Exception as e:  # an unusual graph: gradients still work
                warnings.warn(
                    f"gradvitals: activation statistics are off for this model, its layer "
                    f"outputs could not be gathered into a sub-model ({type(e).__name__}: {e}); "
                    "gradients, update ratios, the loss and NaN/Inf are still watched.",
                    UserWarning,
                    stacklevel=2,
                )
                sites = []
        self._sites = sites
        self._probe = Probe(m, self._table, sites, self.thresholds.saturation_eps, view)
        return True

    def _rebuild_probe(self) -> None:
        """Re-trace the probe after a repair changed the model's graph."""
        if self._probe is None:
            return
        m = self.model
        view = None
        sites = self._sites
        if sites:
            view, sites = graph_view(m, sites, self._batches[0][0])
        self._probe = Probe(m, self._table or LayerTable.from_model(m), sites, self._eps, view)

    @property
    def _eps(self) -> float:
        return self.thresholds.saturation_eps

    def _find_tracker(self) -> Any:
        for metric in getattr(self.model, "metrics", []):
            if metric.name == "loss" and hasattr(metric, "total") and hasattr(metric, "count"):
                return metric
        return None

    def _read_tracker(self) -> Any:
        import tensorflow as tf

        t = self._tracker
        return tf.cast(tf.stack([t.total.value, t.count.value]), tf.float64)

    # -- guard -----------------------------------------------------------------------
    def _fail(self, e: BaseException) -> None:
        self.disabled = True
        warnings.warn(
            f"gradvitals stopped watching after an internal error ({type(e).__name__}: {e}); "
            "training continues unaffected. Please report this with the model's structure.",
            RuntimeWarning,
            stacklevel=3,
        )

    # -- Keras hooks -----------------------------------------------------------------
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.disabled:
            return
        try:
            self._spe = max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1)
            self._tracker = self._find_tracker()
            if self.log_dir is not None and self._sink is None:
                from gradvitals.report import TensorBoardSink

                self._sink = TensorBoardSink(
                    self.log_dir,
                    run_info={"adapter": "keras", "every": self.every, "model": self.model.name},
                )
            if self._setup() and self._repairer is not None and self._repairer.snapshot is None:
                self._repairer.capture(self.step_count)  # the initial weights: healthy
            self._next_event = self.step_count  # the first batch is always processed
        except Exception as e:
            self._fail(e)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_open = True
        self._epoch_end_read = None
        self._last_begin = None

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self._epoch_base + batch
        self._last_begin = batch
        if step < self._next_event or self.disabled:
            self.step_count = step
            return
        try:
            self._event(step, in_batch=True)
        except Exception as e:
            self._fail(e)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        # validation inside fit resets the loss tracker: keep the epoch's last value
        if self.disabled or not self._epoch_open or self._tracker is None:
            return
        if self._epoch_end_read is None:
            try:
                self._epoch_end_read = self._read_tracker()
            except Exception as e:
                self._fail(e)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_open = False
        if self.disabled:
            return
        try:
            done = 0 if self._last_begin is None else self._last_begin + self._spe
            total = (self.params or {}).get("steps")
            if total:
                done = min(done, int(total))
            end = self._epoch_base + done
            if self._tracker is not None:
                read = self._epoch_end_read
                if read is None:
                    read = self._read_tracker()
                self._buffer.reads.append(("epoch_end", end, read))
            self._epoch_end_read = None
            self._event(end, in_batch=False)
            self._epoch_base = end
        except Exception as e:
            self._fail(e)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.disabled:
            return
        try:
            self.flush()
            if self._repairer is not None:
                self._repairer.close()
            if self._sink is not None:
                self._sink.write_final(self.findings)
                self._sink.flush()
        except Exception as e:
            self._fail(e)

    # -- windows ---------------------------------------------------------------------
    def _event(self, step: int, in_batch: bool) -> None:
        self.step_count = step
        if self._pending is not None and step > self._pending[0]:
            start, before = self._pending
            assert self._probe is not None
            self._buffer.updates.append((self._probe.weights_and_deltas(before), step - start))
            self._pending = None
        if step > self._window_last:
            if in_batch and self._tracker is not None:
                self._buffer.reads.append(("batch", step, self._read_tracker()))
            self._close_window(end=step - 1)
        if in_batch and self._samples_taken < self.samples and step >= self._sample_from():
            self._sample(step)
        # a batch call handled this step; an epoch-end call leaves it to the next batch
        self._plan_next(step + 1 if in_batch else step)

    def _sample(self, step: int) -> None:
        if not self._setup():
            return
        assert self._probe is not None
        batch = self._batches[self._cursor % len(self._batches)]
        self._cursor += 1
        self._buffer.probes.append((step, self._probe.step(batch)))
        self._pending = (step, self._probe.snapshot())
        self._samples_taken += 1

    def _close_window(self, end: int) -> list[Finding]:
        import tensorflow as tf

        buf = self._buffer
        new: list[Finding] = []
        if not buf.empty and self._probe is not None and self._table is not None:
            host = tf.concat(buf.tensors(), axis=0).numpy()
            record, self._loss_base = assemble(
                index=self._window_index,
                start=self._window_start,
                end=max(end, self._window_start),
                host=host,
                buffer=buf,
                layout=self._probe.layout,
                table=self._table,
                sites=self._probe.sites,
                has_grad=self._probe.has_grad,
                base=self._loss_base,
            )
            new = self._record(record)
        self._window_index += 1
        self._window_start = end + 1
        self._window_len = self._length_of(self._window_index)
        self._samples_taken = 0
        buf.clear()
        return new

    def _record(self, record: WindowRecord) -> list[Finding]:
        new = self.suite.update(record)
        self.history.append(record)
        if self.history_limit is not None and len(self.history) > self.history_limit:
            del self.history[0]
        if self._repairer is not None and new:
            new = new + self._repairer.on_findings(new, record)
        elif self._repairer is not None:
            self._repairer.on_healthy(record)
        for f in new:
            f.remedies = keras_remedies(f.remedies, f.layer)
        self.findings.extend(new)
        if self.console:
            for f in new:
                log.warning(_console_line(f))
        if self._sink is not None:
            self._sink.write_window(record, new)
        return new

    # -- public API ------------------------------------------------------------------
    def flush(self) -> list[Finding]:
        """Close the pending window now (a partial one) and run the detectors."""
        if self.disabled:
            return []
        try:
            step = self.step_count
            if self._pending is not None and self._probe is not None:
                start, before = self._pending
                k = max(step - start, 1)
                self._buffer.updates.append((self._probe.weights_and_deltas(before), k))
                self._pending = None
            if self._buffer.empty:
                return []
            new = self._close_window(end=max(step - 1, self._window_start))
            self._window_start = step
            self._plan_next(step)
            return new
        except Exception as e:
            self._fail(e)
            return []

    def close(self) -> None:
        """Write the final summary and close the TensorBoard log (if any)."""
        if self._sink is not None and not self._sink.closed:
            self._sink.write_final(self.findings)
            self._sink.close()

    @property
    def healthy(self) -> bool:
        """True while no failure has been found."""
        return not self.findings

    def report(self) -> str:
        """A text summary of the run: healthy or not, each finding and what to do."""
        from gradvitals.report._console import summary_text

        return summary_text(self.findings, len(self.history), self.repairs)

    def scalars(self) -> dict[str, list[tuple[int, float]]]:
        """Statistics history as ``tag -> [(step, value), ...]`` (the TensorBoard tags)."""
        return history_scalars(self.history)

    def state_dict(self) -> dict[str, Any]:
        """Detector state, findings, repairs and the step count, for a resumed run."""
        return {
            "version": 1,
            "adapter": "keras",
            "step_count": self.step_count,
            "window_index": self._window_index,
            "detectors": self.suite.state_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "repairs": [dict(r) for r in self.repairs],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (before ``fit`` continues)."""
        if not isinstance(state, dict) or state.get("version") != 1:
            raise UsageError("not a gradvitals callback state_dict (expected version 1)")
        self.suite.load_state_dict(state["detectors"])
        self.findings = [Finding.from_dict(d) for d in state.get("findings", [])]
        self.repairs = [dict(r) for r in state.get("repairs", [])]
        self.step_count = int(state["step_count"])
        self._window_index = int(state.get("window_index", 0))
        self._epoch_base = self.step_count
        self._window_start = self.step_count
        self._window_len = self._length_of(self._window_index)
        self._samples_taken = 0
        self._pending = None
        self._buffer.clear()
        self._loss_base = LossBase(0.0, 0.0, self.step_count)
        self._plan_next(self.step_count)


def _console_line(f: Finding) -> str:
    try:
        from gradvitals.report._console import format_finding

        return format_finding(f)
    except ImportError:  # pragma: no cover
        return str(f)
