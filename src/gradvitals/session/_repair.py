"""In-flight repair, framework-free: keep the last healthy snapshot, apply the next fix.

The session calls the :class:`RepairController` once per window:

- a window without findings that is also *clean* (no NaN/Inf, nothing on its way to a
  finding, see :func:`~gradvitals.remedies._ledger.unclean_reason`) settles pending
  repairs as "healthy after" and asks the host to snapshot the model and optimizer;
- a window with findings restores the snapshot and applies, per failure mode, the next
  action of the :class:`~gradvitals.RepairPolicy` that applies to this model; after
  ``max_attempts`` actions of one mode, or when none applies, it returns a final
  "could not repair" finding and leaves that mode alone.

What a snapshot is and how an action changes a model is the framework's business: a
:class:`~gradvitals.session.RepairHost` (PyTorch: ``gradvitals.torch._repair``;
Keras: ``gradvitals.keras._repair``) captures and restores state and holds an
:class:`~gradvitals.remedies.ActionRegistry` of implementations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from enum import Enum
from typing import Any, Protocol

from gradvitals.detectors import Thresholds
from gradvitals.errors import UsageError
from gradvitals.findings import Finding
from gradvitals.remedies import ACTION_SPECS, ActionContext, ActionRegistry, RepairPolicy
from gradvitals.remedies import _ledger as ledger
from gradvitals.session._suite import DetectorSuite
from gradvitals.stats import WindowRecord

__all__ = ["RepairController", "RepairHost", "RepairSession", "as_policy"]

log = logging.getLogger("gradvitals")


class RepairHost(Protocol):
    """What a framework provides for repair (model and optimizer state, actions)."""

    #: the framework's action implementations, by name
    actions: ActionRegistry

    def capture(self, step: int) -> bool:
        """Snapshot the model and optimizer; False (keeping the old one) when not finite."""
        ...

    def restore(self) -> int | None:
        """Roll back to the snapshot; its step, or None when there is none to roll to."""
        ...

    def after_repair(self, applied: Sequence[str]) -> None:
        """Re-plan hooks or re-trace compiled steps after these actions were applied."""
        ...

    def check(self) -> list[str]:
        """Once per window: lines about repairs that did not hold as applied (a loop that
        sets the learning rate every step undid ``lower_lr``), and what the repairs did
        since (steps skipped)."""
        ...

    def handled(self, kind: Enum, cause: Any) -> str | None:
        """What a repair already in place did about this failure (``skip_batch`` skipped
        the poisoned step: the weights stayed finite), or None: act on it."""
        ...


class RepairSession(Protocol):
    """What the controller reads and writes on the session."""

    framework: str
    thresholds: Thresholds
    suite: DetectorSuite
    findings: list[Finding]
    repairs: list[dict[str, Any]]
    history: list[WindowRecord]
    step_count: int
    notes: list[str]

    def emit(self, line: str) -> None:
        """Log one console line (rank 0 only)."""
        ...

    def write_repair(self, record: dict[str, Any]) -> None:
        """Send a repair record to the outputs."""
        ...


def as_policy(policy: RepairPolicy | dict[str, Any] | None) -> RepairPolicy:
    """A :class:`RepairPolicy` from a policy, a dict of its fields, or None (defaults)."""
    if policy is None:
        return RepairPolicy()
    if isinstance(policy, dict):
        return RepairPolicy(**policy)
    if not isinstance(policy, RepairPolicy):
        raise UsageError(
            f"policy must be a gradvitals.RepairPolicy (or a dict of its fields), got "
            f"{type(policy).__name__}; e.g. policy=gradvitals.RepairPolicy(max_attempts=2)"
        )
    return policy


class RepairController:
    """Decides what to repair and keeps the ledger; the host does the framework work.

    Args:
        session: the :class:`~gradvitals.session.Session` (findings, repairs, outputs).
        host: the framework's :class:`RepairHost`.
        policy: what repair may do.
    """

    def __init__(self, session: RepairSession, host: RepairHost, policy: RepairPolicy) -> None:
        self.session = session
        self.host = host
        self.policy = policy
        self.snapshot_step: int | None = None
        self._healthy_windows = 0
        self._pending: list[dict[str, Any]] = []  # repairs whose outcome is unknown
        self._norms: list[float] = []  # recent global gradient norms of windows without findings

    def capture(self, step: int) -> bool:
        """Ask the host for a snapshot now (at attach, and after clean windows)."""
        if self.host.capture(step):
            self.snapshot_step = step
            return True
        return False

    # -- per window ----------------------------------------------------------------------
    def _check_host(self) -> None:
        notes = self.session.notes
        for line in self.host.check():
            if line in notes:
                continue
            key = line.split(":")[0]  # "skip_batch: skipped 3 ..." replaces "... skipped 2"
            same = [i for i, n in enumerate(notes) if n.split(":")[0] == key]
            if same and key.startswith("skip_batch"):
                notes[same[0]] = line
                continue
            notes.append(line)
            self.session.emit(f"gradvitals: {line}")

    def on_healthy(self, record: WindowRecord) -> None:
        """A window closed without findings: settle pending outcomes, maybe snapshot."""
        self._check_host()
        recent = list(self._norms)
        g = record.total_grad_norm
        if math.isfinite(g):
            self._norms = (self._norms + [g])[-8:]
        s = self.session
        if ledger.unclean_reason(record, s.thresholds, s.suite.pending, recent) is not None:
            return
        self._settle(True)
        self._healthy_windows += 1
        if self._healthy_windows % self.policy.snapshot_every == 0:
            self.capture(s.step_count)

    def on_findings(self, findings: list[Finding], record: WindowRecord) -> list[Finding]:
        """Roll back and apply the next action per mode; returns "could not repair" findings."""
        self._check_host()
        finals: list[Finding] = []
        by_kind: dict[Any, list[Finding]] = {}
        for f in findings:
            if not f.final and self.policy.actions_for(f.kind, f.cause):
                by_kind.setdefault(f.kind, []).append(f)
        # the last repair held unless a finding here is more than a standing repair
        # (skip_batch) at work
        held = all(f.final or f.kind in by_kind for f in findings)
        plans: list[tuple[Any, list[Finding], list[str], ActionContext]] = []
        for kind, fs in by_kind.items():
            if self._gave_up(kind, finals):
                held = False
                continue
            done_by = self.host.handled(kind, fs[0].cause)
            if done_by is not None:  # a standing repair dealt with it: no new action
                for f in fs:
                    f.evidence["handled_by"] = done_by
                self.session.emit(f"gradvitals: step {record.step} {kind.value}: {done_by}")
                continue
            held = False
            ctx = self._context(kind, fs)
            done = len(ledger.kind_records(self.session.repairs, kind))
            candidates = self._candidates(kind, fs[0].cause, ctx)
            if done >= self.policy.max_attempts or not candidates:
                why = (
                    f"{done} repair{'s' if done != 1 else ''} did not hold"
                    if done >= self.policy.max_attempts
                    else "no action left in the policy applies to this model"
                )
                finals.append(self._give_up(kind, fs, record, why))
                continue
            plans.append((kind, fs, candidates, ctx))
        self._settle(held and not finals)
        if not plans:
            return finals
        rollback = self._restore()
        applied: dict[str, str] = {}  # one lower_lr for two modes in one window, not two
        for kind, fs, candidates, ctx in plans:
            for name in candidates:  # the first one that does something
                shared = name in applied and not ACTION_SPECS[name].per_finding
                detail = f"{applied[name]} (shared)" if shared else self._try(name, ctx)
                if detail is not None and not shared:
                    applied[name] = detail
                if detail is not None:
                    self._log(kind, fs, record, name, detail, rollback)
                    break
            else:
                finals.append(
                    self._give_up(kind, fs, record, "no action left in the policy could be applied")
                )
        specs = [ACTION_SPECS[n] for n in applied]
        self.session.suite.rearm(forget_history=any(s.reinit for s in specs))
        self.host.after_repair(list(applied))
        if any(s.structural or s.reinit for s in specs) or self.snapshot_step is None:
            # keep the snapshot loadable into the new structure: the restored healthy
            # state, with the fix applied
            self.capture(self.session.step_count)
        return finals

    def close(self) -> None:
        """Write repairs whose outcome is still unknown to the outputs."""
        self._check_host()
        for r in self._pending:
            self.session.write_repair(r)
        self._pending = []

    # -- decisions -----------------------------------------------------------------------
    def _context(self, kind: Enum, findings: list[Finding]) -> ActionContext:
        s = self.session
        return ActionContext(
            kind=kind,
            findings=findings,
            policy=self.policy,
            clip_norm=s.suite.clip_norm,
            history=s.history[-2:],
        )

    def _candidates(self, kind: Enum, cause: Any, ctx: ActionContext) -> list[str]:
        """The policy's next actions for ``kind`` and its cause that this host can apply."""
        names = ledger.next_actions(self.policy, self.session.repairs, kind, cause)
        reg = self.host.actions
        return [n for n in names if reg.has(n) and self._applicable(n, ctx)]

    def _applicable(self, name: str, ctx: ActionContext) -> bool:
        try:
            return bool(self.host.actions.get(name).applicable(self.host, ctx))
        except Exception as e:  # a failed check must not stop training
            log.warning("gradvitals repair: checking %s failed (%s: %s)", name, type(e).__name__, e)
            return False

    def _gave_up(self, kind: Enum, extra: list[Finding]) -> bool:
        return any(f.final and f.kind is kind for f in [*self.session.findings, *extra])

    # -- actions -------------------------------------------------------------------------
    def _restore(self) -> int | None:
        try:
            return self.host.restore()
        except Exception as e:
            log.warning(
                "gradvitals repair: could not roll back (%s: %s); applying the fix to the "
                "current state",
                type(e).__name__,
                e,
            )
            return None

    def _try(self, name: str, ctx: ActionContext) -> str | None:
        try:
            return self.host.actions.get(name).apply(self.host, ctx)
        except Exception as e:  # a failed action must not stop training
            log.warning("gradvitals repair: %s failed (%s: %s)", name, type(e).__name__, e)
            return None

    # -- bookkeeping ---------------------------------------------------------------------
    def _log(
        self,
        kind: Enum,
        findings: list[Finding],
        record: WindowRecord,
        action: str,
        detail: str,
        rollback: int | None,
    ) -> None:
        s = self.session
        attempt = len(ledger.kind_records(s.repairs, kind)) + 1
        rec = ledger.repair_record(
            kind,  # type: ignore[arg-type]
            findings,
            record,
            action,
            detail,
            rollback,
            attempt,
            cause=findings[0].cause,
        )
        s.repairs.append(rec)
        self._pending.append(rec)
        s.emit(ledger.repair_line(rec, self.policy.max_attempts))

    def _settle(self, healthy: bool) -> None:
        for r in self._pending:
            r["healthy_after"] = healthy
            self.session.write_repair(r)
        self._pending = []

    def _give_up(
        self, kind: Enum, findings: list[Finding], record: WindowRecord, why: str
    ) -> Finding:
        s = self.session
        return ledger.give_up_finding(
            kind,  # type: ignore[arg-type]
            findings,
            record,
            why,
            s.repairs,
            s.suite.clip_norm,
            framework=s.framework,
        )
