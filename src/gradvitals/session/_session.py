"""The session: everything that is not measuring, shared by every framework adapter.

A collector (the PyTorch :class:`~gradvitals.torch.Monitor`, the Keras
``VitalsCallback``) measures: it installs hooks or probes on the steps the
:class:`~gradvitals.session.Schedule` samples, and hands the session one
:class:`~gradvitals.stats.WindowRecord` per window. The session decides and reports:

- runs the detector suite on the record (:meth:`submit`) and attaches each finding's
  remedies from the mode registry, for the adapter's framework;
- keeps the findings, a bounded history of records, the pre-flight findings and the
  repair ledger; asks the repair controller to act;
- logs one console line per finding (rank 0 only) and writes the outputs (sinks);
- reports (:meth:`report`, :meth:`scalars`, :attr:`healthy`) and saves its state
  (:meth:`state_dict`), so a resumed run keeps its patience counters;
- turns an internal error into one warning and a switched-off collector
  (:meth:`fail`), or raises it under ``GRADVITALS_STRICT=1``.

>>> from gradvitals.stats import WindowRecord, LossStats
>>> s = Session(every=5, console=False)
>>> s.submit(WindowRecord(0, 0, 0, loss=LossStats(sum=2.3, count=1)))
[]
>>> s.healthy, len(s.history), s.report()
(True, 1, 'gradvitals: healthy, no failures found in 1 window.')
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from gradvitals.detectors import Thresholds, nest
from gradvitals.errors import UsageError
from gradvitals.findings import Cause, Finding
from gradvitals.remedies import RepairPolicy, remedies_for
from gradvitals.report import format_finding, summary_text
from gradvitals.session._coverage import Coverage
from gradvitals.session._diagnosis import INIT_WINDOWS, diagnose
from gradvitals.session._repair import RepairController, RepairHost, as_policy
from gradvitals.session._schedule import Schedule
from gradvitals.session._strict import strict
from gradvitals.session._suite import DetectorSuite
from gradvitals.stats import WindowRecord, history_scalars

__all__ = ["Session", "as_thresholds"]

log = logging.getLogger("gradvitals")

STATE_VERSION = 1


def as_thresholds(value: Thresholds | dict[str, Any] | None) -> Thresholds:
    """A :class:`~gradvitals.Thresholds` from thresholds, a dict of overrides, or None."""
    if isinstance(value, Thresholds):
        return value
    if value is None:
        return Thresholds()
    if isinstance(value, dict):
        return Thresholds.from_kwargs(**value)
    raise UsageError(
        f"thresholds must be a gradvitals.Thresholds or a dict of names, got {type(value).__name__}"
    )


def _check_sink(sink: Any) -> Any:
    missing = [
        m for m in ("write_window", "write_repair", "write_final", "close") if not hasattr(sink, m)
    ]
    if missing:
        raise UsageError(
            f"{type(sink).__name__} is not a gradvitals sink: it lacks {', '.join(missing)}. "
            "A sink has write_window(record, findings), write_repair(record), "
            "write_final(findings) and close(); see gradvitals.report for the built-in ones"
        )
    return sink


def _check_callable(name: str, fn: Any) -> Any:
    if fn is not None and not callable(fn):
        raise UsageError(f"{name} must be a function or None, got {type(fn).__name__}")
    return fn


def _stop_kinds(value: Iterable[Any] | str | None) -> frozenset[str]:
    """``stop_on`` as mode values: None (never), ``"any"`` (every training mode), or modes."""
    from gradvitals.remedies import modes

    training = {str(m.kind.value) for m in modes() if not m.preflight}
    if value is None:
        return frozenset()
    if isinstance(value, str):
        if value == "any":
            return frozenset(training)
        value = [value]
    out = set()
    for v in value:
        key = str(getattr(v, "value", v))
        if key not in training:
            raise UsageError(
                f"stop_on: {key!r} is not a training failure mode; choose from "
                f"{', '.join(sorted(training))} (or 'any')"
            )
        out.add(key)
    return frozenset(out)


def _takes_summary(sink: Any) -> bool:
    try:
        return "summary" in inspect.signature(sink.write_final).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


def _history_limit(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"history_limit must be an integer >= 1 or None, got {value!r}")
    return value


class Session:
    """Decisions, findings, history, outputs and state of one watched run.

    Args:
        framework: the adapter's framework (``"torch"``, ``"keras"``): remedies come
            with code for it.
        thresholds: a :class:`~gradvitals.Thresholds` or a dict of overrides by name.
        every: steps per window (default 20).
        samples: measured steps per window (default 2).
        warmup: short first windows (1, 2, 4... steps), so early failures show early.
        console: log each finding on the ``gradvitals`` logger (default True).
        history_limit: window records kept (None: all; default 10,000).
        sinks: outputs, each with ``write_window``, ``write_repair``, ``write_final``
            and ``close`` (the TensorBoard one is added by ``log_dir``).
        on_finding: called with each new :class:`~gradvitals.Finding`.
        on_window: called with each window record and its new findings.
        stop_on: failure modes (or ``"any"``) after which :attr:`should_stop` turns
            True; the adapters map it to their framework's way of stopping.

    Attributes:
        findings: every :class:`~gradvitals.Finding`, oldest first.
        history: one :class:`~gradvitals.stats.WindowRecord` per closed window
            (the last ``history_limit``).
        preflight: the findings of the pre-flight lint.
        repairs: one dict per repair made.
        step_count: optimizer steps seen so far (the collector keeps it current).
        disabled: True once an internal error switched watching off.
        is_main_process: rank 0 (the only rank that logs and writes outputs).
    """

    def __init__(
        self,
        *,
        framework: str = "torch",
        thresholds: Thresholds | dict[str, Any] | None = None,
        every: int = 20,
        samples: int = 2,
        warmup: bool = True,
        console: bool = True,
        history_limit: int | None = 10_000,
        sinks: Iterable[Any] = (),
        on_finding: Callable[[Finding], Any] | None = None,
        on_window: Callable[[WindowRecord, list[Finding]], Any] | None = None,
        stop_on: Iterable[Any] | str | None = None,
    ) -> None:
        self.framework = framework
        self.thresholds = as_thresholds(thresholds)
        self.schedule = Schedule(every=every, samples=samples, warmup=bool(warmup))
        self.suite = DetectorSuite(self.thresholds)
        self.console = bool(console)
        self.history_limit = _history_limit(history_limit)
        self.findings: list[Finding] = []
        self.history: list[WindowRecord] = []
        self.preflight: list[Finding] = []
        self.repairs: list[dict[str, Any]] = []
        self.step_count = 0
        self.disabled = False
        self.closed = False
        self.is_main_process = True
        self.sinks: list[Any] = [_check_sink(s) for s in sinks]
        self.on_finding = _check_callable("on_finding", on_finding)
        self.on_window = _check_callable("on_window", on_window)
        self.stop_on = _stop_kinds(stop_on)
        self.stop_reason: Finding | None = None
        #: statistics switched off by an internal error: name -> the error
        self.off: dict[str, str] = {}
        #: what was and was not measured (the collector keeps it current)
        self.coverage: Coverage | None = None
        #: problems with how the run was watched (no step counted...): one line each
        self.notes: list[str] = []
        #: what the collector knows of the architecture (normalization, recurrent and
        #: output layers...), for causes and remedies
        self.model_facts: dict[str, Any] = {}
        self.repair: RepairController | None = None
        self._on_disable: list[Callable[[], None]] = []

    # -- wiring --------------------------------------------------------------------------
    def open_log(self, log_dir: str | os.PathLike[str] | None, run_info: dict[str, Any]) -> None:
        """Write TensorBoard vital signs to ``log_dir`` (rank 0 only; None: no log)."""
        if log_dir is None or not self.is_main_process:
            return
        from gradvitals.report import TensorBoardSink

        try:
            self.sinks.append(TensorBoardSink(log_dir, run_info=run_info))
        except OSError as e:
            raise UsageError(
                f"cannot write the TensorBoard log in {log_dir}: {e.strerror or e}. Pass a "
                "log_dir you can write to, or log_dir=None for no log"
            ) from None

    def enable_repair(
        self, host: RepairHost, policy: RepairPolicy | dict[str, Any] | None
    ) -> RepairController:
        """Repair in flight through ``host`` with ``policy`` (see ``docs/repair.md``)."""
        self.repair = RepairController(self, host, as_policy(policy))
        return self.repair

    def on_disable(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when an internal error switches watching off (remove hooks...)."""
        self._on_disable.append(fn)

    # -- decisions -----------------------------------------------------------------------
    def submit(self, record: WindowRecord) -> list[Finding]:
        """Decide on one closed window: detect, remedy, record, log, repair, write.

        Returns the window's new findings, including any "could not repair" ones.
        """
        new = self.suite.update(record)
        clip = self.suite.clip_norm
        for f in new:
            site = f.layer
            if site and "#" in site:  # call k of a module used k+1 times: the module
                f.evidence.setdefault("site", site)
                f.layer = site.split("#")[0]
            lead = self._diagnose(f, record)
            if not f.remedies:
                f.remedies = self.remedies(f, clip_norm=clip, lead=lead, record=record)
        # one root per cause: consequences (dead units and NaNs after an explosion, the
        # same units under two names) are nested under the finding that explains them
        roots = nest(new, self.findings, record)
        kept = {id(f) for f in roots}
        nested = [f for f in new if id(f) not in kept]
        for f in new:
            if id(f) not in kept and self.is_main_process:
                log.info("%s (a consequence of an earlier finding)", format_finding(f))
        consequences = len(new) - len(roots)
        new = roots
        self.history.append(record)
        if self.history_limit is not None and len(self.history) > self.history_limit:
            del self.history[: len(self.history) - self.history_limit]
        self.findings.extend(new)
        for f in new:
            self.emit(format_finding(f))
        finals: list[Finding] = []
        if self.repair is not None:
            again = self._recurrences(nested)
            if new or again:
                finals = self.repair.on_findings(new + again, record)
            elif not consequences:  # a window with only consequences is not healthy either
                self.repair.on_healthy(record)
        self.findings.extend(finals)
        for f in finals:
            self.emit(format_finding(f))
        found = new + finals
        for f in found:
            if self.stop_reason is None and self._stops(f):
                self.stop_reason = f
        self._write("write_window", record, found)
        self._notify(record, found)
        return found

    def _recurrences(self, nested: list[Finding]) -> list[Finding]:
        """Nested findings that are the repaired root's failure coming back.

        A second explosion while the first is still open is nested under it (one
        cascade, one root), but if repair already acted on that root the fix did not
        hold: repair must see it to escalate, or it would never act again."""
        out = []
        for f in nested:
            root = f.evidence.get("root") or {}
            if root.get("kind") != f.kind.value:
                continue
            if any(
                r["kind"] == f.kind.value and root.get("step", 0) <= r["step"] < f.step
                for r in self.repairs
            ):
                out.append(f)
        return out

    def _stops(self, f: Finding) -> bool:
        if str(f.kind.value) not in self.stop_on:
            return False
        # a mode that repair is still handling does not stop the run until repair gives up
        return f.final or self.repair is None or not self.repair.policy.actions_for(f.kind, f.cause)

    @property
    def should_stop(self) -> bool:
        """True once a finding of a ``stop_on`` mode was made (repair, if on, gave up).

        Every rank decides on the same combined statistics, so the decision is the
        same on every rank."""
        return self.stop_reason is not None

    def _notify(self, record: WindowRecord, found: list[Finding]) -> None:
        """Push callbacks: user code must never break training, nor this monitor."""
        for fn, args in [(self.on_finding, (f,)) for f in found] + [
            (self.on_window, (record, found))
        ]:
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception as e:  # the user's callback failed: say so, keep watching
                log.warning(
                    "gradvitals: your %s callback raised %s: %s",
                    "on_finding" if len(args) == 1 else "on_window",
                    type(e).__name__,
                    e,
                )

    def _diagnose(self, f: Finding, record: WindowRecord) -> str | None:
        """Set the finding's cause with what decided it (a cause its detector set stands
        unless the diagnosis refines it); returns the remedy to put first, if any."""
        preset = f.cause
        d = diagnose(f, record, self.history, self.model_facts, self.findings)
        if preset is not Cause.UNKNOWN and d.cause is preset and d.lead_remedy is None:
            return None  # the detector's cause stands, as it wrote it
        f.cause = d.cause
        f.evidence["cause_evidence"] = d.evidence
        if d.layer and d.layer != f.layer:
            f.evidence["symptom_layer"] = f.layer
            f.layer = d.layer
        return d.lead_remedy

    def remedies(
        self,
        f: Finding,
        *,
        clip_norm: float | None = None,
        lead: str | None = None,
        record: WindowRecord | None = None,
    ) -> list[Any]:
        """The registry's remedies for a finding, with code for this framework, leaving
        out what does not fit the model (see :meth:`misfits`)."""
        return remedies_for(
            f.kind,
            f.cause,
            framework=self.framework,
            clip_norm=clip_norm,
            activation=f.evidence.get("activation"),
            layer=f.layer,
            exclude=self.misfits(f, record),
            lead=lead,
        )

    def misfits(self, f: Finding, record: WindowRecord | None) -> frozenset[str]:
        """Remedy keys that do not fit this model: batch normalization where the model
        already normalizes; an activation swap inside a recurrent cell; a
        re-initialisation for a failure that appeared mid-training."""
        facts = self.model_facts
        out: set[str] = set()
        if facts.get("has_normalization"):
            out.add("batchnorm")
        layer = str(f.evidence.get("site", f.layer or "")).split("#")[0]
        if layer and layer in set(facts.get("recurrent", ())):
            out |= {"relu_he", "leaky_variant"}
        if (
            record is not None
            and record.index >= INIT_WINDOWS + 1
            and f.cause is not Cause.BAD_INIT
        ):
            out |= {"he_init", "xavier_init", "reinit"}
        return frozenset(out)

    def add_preflight(self, findings: Iterable[Finding]) -> None:
        """Keep and log the pre-flight lint's findings."""
        found = list(findings)
        self.preflight.extend(found)
        for f in found:
            self.emit(format_finding(f))

    # -- errors --------------------------------------------------------------------------
    def fail(self, e: BaseException) -> None:
        """An internal error: raise it under ``GRADVITALS_STRICT=1``; else warn once and
        switch watching off (training goes on untouched)."""
        if strict():
            raise e
        if self.disabled:
            return
        self.disabled = True
        for fn in self._on_disable:
            with contextlib.suppress(Exception):  # best effort: remove hooks
                fn()
        warnings.warn(
            f"gradvitals stopped watching after an internal error ({type(e).__name__}: {e}); "
            "training continues unaffected. Please report this with the model's structure.",
            RuntimeWarning,
            stacklevel=3,
        )

    def disable(self, statistic: str, e: BaseException) -> None:
        """An internal error in one statistic: raise it under ``GRADVITALS_STRICT=1``;
        else switch that statistic off (the rest keeps being watched), warn once, and say
        so in :meth:`report`."""
        if strict():
            raise e
        if statistic in self.off:
            return
        self.off[statistic] = f"{type(e).__name__}: {e}"
        warnings.warn(
            f"gradvitals stopped measuring {statistic} after an internal error "
            f"({type(e).__name__}: {e}); everything else is still watched and training "
            "continues unaffected. Please report this with the model's structure.",
            RuntimeWarning,
            stacklevel=3,
        )

    def guard(self, fn: Callable[..., Any], statistic: str | None = None) -> Callable[..., None]:
        """``fn`` wrapped so that it never raises into training: an error switches off
        ``statistic`` (see :meth:`disable`), or everything when it is None (:meth:`fail`)."""

        def wrapped(*args: Any, **kwargs: Any) -> None:
            if self.disabled or (statistic is not None and statistic in self.off):
                return None
            try:
                fn(*args, **kwargs)
            except Exception as e:  # gradvitals must never break training
                if statistic is None:
                    self.fail(e)
                else:
                    self.disable(statistic, e)
            return None

        return wrapped

    # -- outputs -------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        """Log one console line: WARNING when ``console``, else INFO; rank 0 only."""
        if self.is_main_process:
            (log.warning if self.console else log.info)(line)

    def write_repair(self, record: dict[str, Any]) -> None:
        self._write("write_repair", record)

    def _write(self, method: str, *args: Any) -> None:
        if not self.is_main_process:
            return
        for sink in self.sinks:
            if getattr(sink, "closed", False):
                continue
            getattr(sink, method)(*args)

    def close(self) -> None:
        """Settle the repair ledger, write the final summary and close the outputs."""
        if self.closed:
            return
        self.closed = True
        if self.repair is not None:
            self.repair.close()
        summary = self.summary()
        for sink in self.sinks:
            if getattr(sink, "closed", False):
                continue
            try:
                if _takes_summary(sink):
                    sink.write_final(self.findings, summary=summary)
                else:
                    sink.write_final(self.findings)
                sink.close()
            except Exception as e:  # pragma: no cover
                warnings.warn(
                    f"gradvitals could not finish its output {sink!r}: {e}",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def summary(self) -> dict[str, Any]:
        """The end-of-run facts every sink may record: coverage, windows, notes."""
        out: dict[str, Any] = {"windows": len(self.history), "notes": list(self.notes)}
        if self.coverage is not None:
            out["coverage"] = self.coverage.to_dict(self.off)
        return out

    # -- reading -------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """True while no failure has been found."""
        return not self.findings

    def report(self) -> str:
        """A text summary of the run: what was watched, healthy or not, each finding and
        what to do. A run in which nothing was measured is never called healthy."""
        lines = [self.coverage_line()] if self.coverage is not None or self.off else []
        lines += [f"gradvitals: {n}" for n in self.notes]
        measured = any(r.sites or r.layers or r.loss for r in self.history)
        if not self.findings and not measured:
            why = (
                "no window closed"
                if not self.history
                else f"no statistic was recorded in {len(self.history)} window(s)"
            )
            lines.append(f"gradvitals: not judged: {why}, so nothing can be said about this run.")
            return "\n".join(lines)
        # the pre-flight lint's findings belong to the verdict: a run lint warned about is
        # not "healthy" because no detector fired
        lines.append(summary_text(self.findings + self.preflight, len(self.history), self.repairs))
        return "\n".join(lines)

    def coverage_line(self) -> str:
        """One line: what was measured and what was not, and why."""
        c = self.coverage or Coverage()
        return c.line(self.off)

    def scalars(self) -> dict[str, list[tuple[int, float]]]:
        """Statistics history as ``tag -> [(step, value), ...]`` (the TensorBoard tags)."""
        return history_scalars(self.history)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Detector state, findings, repairs, the step count and the window position."""
        return {
            "version": STATE_VERSION,
            "step_count": self.step_count,
            "window_index": self.schedule.index,
            "detectors": self.suite.state_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "repairs": [dict(r) for r in self.repairs],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next window opens at the saved step."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise UsageError(
                f"not a gradvitals state_dict (expected version {STATE_VERSION}); pass what "
                "monitor.state_dict() returned"
            )
        self.suite.load_state_dict(state["detectors"])
        self.findings = [Finding.from_dict(d) for d in state.get("findings", [])]
        self.repairs = [dict(r) for r in state.get("repairs", [])]
        self.step_count = int(state["step_count"])
        self.schedule.restart(self.step_count, int(state.get("window_index", 0)))
