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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras

from gradvitals.detectors import Thresholds
from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.keras._data import ProbeBatch, check_probe, probe_batches
from gradvitals.keras._facts import model_facts
from gradvitals.keras._layout import LayerTable, Site, graph_view, plan_sites
from gradvitals.keras._probe import Probe
from gradvitals.keras._window import LossBase, WindowBuffer, assemble
from gradvitals.remedies import RepairPolicy
from gradvitals.session import Session, SessionView, strict
from gradvitals.stats import WindowRecord

__all__ = ["VitalsCallback"]

log = logging.getLogger("gradvitals")


def _positive_int(name: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be an integer >= 1 ({what}), got {value!r}")
    return value


class VitalsCallback(SessionView, keras.callbacks.Callback):  # type: ignore[misc]
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
        sinks: more outputs (see ``gradvitals.report``), rank 0 only.
        on_finding: called with each new :class:`~gradvitals.Finding`.
        on_window: called with each closed window's record and its new findings.
        stop_on: failure modes (or ``"any"``) that stop ``fit`` (``model.stop_training``)
            at the window that finds one.

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
        sinks: Sequence[Any] = (),
        on_finding: Callable[[Finding], Any] | None = None,
        on_window: Callable[[WindowRecord, list[Finding]], Any] | None = None,
        stop_on: Iterable[Any] | str | None = None,
    ) -> None:
        super().__init__()
        self.session = Session(
            framework="keras",
            thresholds=thresholds,
            every=every,
            samples=samples,
            warmup=warmup,
            console=console,
            history_limit=history_limit,
            sinks=sinks,
            on_finding=on_finding,
            on_window=on_window,
            stop_on=stop_on,
        )
        self.probe_size = _positive_int("probe_size", probe_size, "examples per probe batch")
        self._batches: list[ProbeBatch] = probe_batches(probe, self.probe_size)
        self.log_dir = log_dir
        self._repair_host: Any = None
        if repair or policy is not None:
            from gradvitals.keras._repair import KerasRepairHost
            from gradvitals.session import as_policy

            pol = as_policy(policy)
            self._repair_host = KerasRepairHost(self, pol)
            self.session.enable_repair(self._repair_host, pol)
        self._log_open = False
        self._probe: Probe | None = None
        self._table: LayerTable | None = None
        self._sites: list[Site] = []
        self._tracker: Any = None
        self._buffer = WindowBuffer()
        self._loss_base = LossBase()
        self._pending: tuple[int, Any] | None = None
        self._cursor = 0
        self._samples_taken = 0
        self._next_event = 0
        self._epoch_base = 0
        self._last_begin: int | None = None
        self._epoch_open = False
        self._epoch_end_read: Any = None
        self._spe = 1
        self._warned_subclassed = False

    # -- the session's results (findings, history, report...: see SessionView) -----------
    @property
    def step_count(self) -> int:
        return self.session.step_count

    @step_count.setter
    def step_count(self, value: int) -> None:
        self.session.step_count = value

    @property
    def sites(self) -> list[Site]:
        """The activation sites being measured (what repair may act on)."""
        return list(self._sites)

    # -- schedule --------------------------------------------------------------------
    @property
    def _window_last(self) -> int:
        return self.session.schedule.last

    def _sample_from(self) -> int:
        """First step at which this window samples (its last ``samples`` steps, or the
        last hook call before it ends when ``steps_per_execution`` skips them)."""
        sched = self.session.schedule
        return min(sched.sample_from, sched.last - self._spe + 1)

    def _plan_next(self, earliest: int) -> None:
        """Set the first step at which a hook call has work: ``earliest`` or later."""
        if self._pending is not None:
            self._next_event = earliest
            return
        nxt = self._window_last + 1
        if self._samples_taken < self.session.schedule.samples:
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
        check_probe(m, self._batches[0])
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
        try:  # what the diagnosis may know of the model and the data (never fatal)
            self.session.model_facts = model_facts(m, sites, self._batches)
        except Exception as e:
            if strict():
                raise
            self.session.notes.append(f"model facts for the diagnosis unavailable: {e}")
        return True

    def rebuild_probe(self) -> None:
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

    def _fail(self, e: BaseException) -> None:
        self.session.fail(e)

    # -- Keras hooks -----------------------------------------------------------------
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.disabled:
            return
        try:
            self._spe = max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1)
            self._tracker = self._find_tracker()
            if not self._log_open:
                self._log_open = True
                info = {"adapter": "keras", "every": self.every, "model": self.model.name}
                self.session.open_log(self.log_dir, info)
            rep = self.session.repair
            if self._setup() and rep is not None and rep.snapshot_step is None:
                rep.capture(self.step_count)  # the initial weights: healthy
            self._next_event = self.step_count  # the first batch is always processed
        except UsageError:
            raise  # a probe that does not fit the model: the user's to fix, before training
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
        except UsageError:
            raise  # a probe that does not fit the model (seen when a subclassed model builds)
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
            if self.session.repair is not None:
                self.session.repair.close()
            for sink in self.session.sinks:
                if not getattr(sink, "closed", False):
                    sink.write_final(self.findings)
                    sink.flush()
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
        if (
            in_batch
            and self._samples_taken < self.session.schedule.samples
            and step >= self._sample_from()
        ):
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
        sched = self.session.schedule
        new: list[Finding] = []
        end = max(end, sched.start)
        if not buf.empty and self._probe is not None and self._table is not None:
            host = tf.concat(buf.tensors(), axis=0).numpy()
            record, self._loss_base = assemble(
                index=sched.index,
                start=sched.start,
                end=end,
                host=host,
                buffer=buf,
                layout=self._probe.layout,
                table=self._table,
                sites=self._probe.sites,
                has_grad=self._probe.has_grad,
                base=self._loss_base,
            )
            record.facts["output_layers"] = self.session.model_facts.get("output_layers", [])
            new = self.session.submit(record)
            if self.session.should_stop and self.model is not None:
                self.model.stop_training = True  # Keras' own way, as TerminateOnNaN
        sched.advance(end)
        self._samples_taken = 0
        buf.clear()
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
            new = self._close_window(end=step - 1)
            self.session.schedule.start = step
            self._plan_next(step)
            return new
        except Exception as e:
            self._fail(e)
            return []

    def close(self) -> None:
        """Write the final summary and close the TensorBoard log (if any)."""
        self.session.close()

    def state_dict(self) -> dict[str, Any]:
        """Detector state, findings, repairs and the step count, for a resumed run."""
        return {**self.session.state_dict(), "adapter": "keras"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (before ``fit`` continues)."""
        self.session.load_state_dict(state)
        self._epoch_base = self.step_count
        self._samples_taken = 0
        self._pending = None
        self._buffer.clear()
        self._loss_base = LossBase(0.0, 0.0, self.step_count)
        self._plan_next(self.step_count)
