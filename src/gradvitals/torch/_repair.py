"""In-flight repair: roll back to the last healthy state and apply the next fix.

``gradvitals.watch(model, optimizer, repair=True)`` (or ``policy=RepairPolicy(...)``)
creates a :class:`Repairer`. At each window close the monitor calls it:

- ``on_healthy(record)``: a window without findings. If it is also *clean* (no NaN/Inf,
  no layer above the dead or saturated thresholds, no detector counting toward a
  finding, no step over a quarter of a layer's weights, no sudden 10x gradient norm)
  the repairer copies the model and optimizer state: the **snapshot**. The state at
  attach counts as the first snapshot.
- ``on_findings(findings, record)``: it restores the snapshot (weights, buffers and
  per-parameter optimizer state; learning rates stay as they are now) and applies the
  next action of the :class:`~gradvitals.RepairPolicy` for each failure mode found.
  Training goes on from the next step: nothing restarts.

Memory cost: one snapshot, about the size of the parameters plus the optimizer state
(1x the parameters for SGD, 2x with momentum, 3x for Adam), on the model's device or,
with ``RepairPolicy(offload_to_cpu=True)``, in CPU memory. Time: one copy of that
state per healthy window (``snapshot_every`` windows) and one host sync to check it
is finite. A healthy run is otherwise untouched: no RNG is drawn, no value is
written, so its weights are bitwise identical to an unwatched run's.

Each action is recorded in ``monitor.repairs`` as ``{"step", "kind", "layer",
"action", "reason", "healthy_after", "attempt", "rollback_step"}``. ``healthy_after``
is None until a later window is conclusive: True when it is clean, False when it has
findings. After ``max_attempts`` actions for one mode, the next finding of that mode
becomes a final finding (``final=True``, message "could not repair: ...") and the mode
is left alone.

>>> import torch, gradvitals
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> monitor = gradvitals.watch(model, opt, repair=True, lint=False)
>>> monitor._repairer.snapshot.step, monitor.repairs
(0, [])
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from gradvitals.detectors import suggest_clip_norm
from gradvitals.errors import UsageError
from gradvitals.findings import FailureMode, Finding
from gradvitals.remedies import _ledger as ledger
from gradvitals.remedies._policy import RepairPolicy
from gradvitals.stats import SATURATING, WindowRecord
from gradvitals.torch import _repair_actions as act
from gradvitals.torch._repair_snapshot import Snapshot

__all__ = ["Repairer"]

log = logging.getLogger("gradvitals")

_RELU_KINDS = ("relu", "relu6")
_STRUCTURAL = frozenset({"leaky_variant", "relu_he", "add_norm"})
_REINIT = frozenset({"reinit_dead", "relu_he", "xavier_init", "add_norm", "leaky_variant"})


class Repairer:
    """Keeps the last healthy snapshot and applies a :class:`RepairPolicy`.

    Args:
        monitor: the :class:`~gradvitals.torch.Monitor` (it owns the model, optimizer,
            detectors, findings and ``repairs``).
        policy: a :class:`RepairPolicy`, a dict of its fields, or None for defaults.
    """

    def __init__(self, monitor: Any, policy: RepairPolicy | dict[str, Any] | None = None) -> None:
        if policy is None:
            policy = RepairPolicy()
        elif isinstance(policy, dict):
            policy = RepairPolicy(**policy)
        if not isinstance(policy, RepairPolicy):
            raise UsageError(
                f"policy must be a gradvitals.RepairPolicy (or a dict of its fields), got "
                f"{type(policy).__name__}; e.g. policy=gradvitals.RepairPolicy(max_attempts=2)"
            )
        self.monitor = monitor
        self.policy = policy
        self.snapshot = Snapshot(
            monitor.model, monitor.optimizer, offload_to_cpu=policy.offload_to_cpu
        )
        self.clip: act.GradClip | None = None
        self._generator = torch.Generator().manual_seed(policy.seed)
        self._healthy_windows = 0
        self._warned_scheduler = False
        self._pending: list[dict[str, Any]] = []  # repairs whose outcome is unknown
        self._norms: list[float] = []  # recent global gradient norms, windows without findings
        self.snapshot.capture(monitor.step_count)

    # -- monitor callbacks ----------------------------------------------------------------
    def on_healthy(self, record: WindowRecord) -> None:
        """A window closed without findings: settle pending outcomes, maybe snapshot."""
        if self._suspect(record) is not None:
            return
        self._settle(True)
        self._healthy_windows += 1
        if self._healthy_windows % self.policy.snapshot_every == 0:
            self.snapshot.capture(self.monitor.step_count)

    def on_findings(self, findings: list[Finding], record: WindowRecord) -> None:
        """Findings in this window: roll back and apply the next action per mode."""
        self._settle(False)
        by_kind: dict[FailureMode, list[Finding]] = {}
        for f in findings:
            if not f.final and self.policy.actions_for(f.kind):
                by_kind.setdefault(f.kind, []).append(f)
        plans: list[tuple[FailureMode, list[Finding], list[str]]] = []
        for kind, fs in by_kind.items():
            if self._gave_up(kind):
                continue
            done = self._attempts(kind)
            candidates = self._candidates(kind, fs)
            if done >= self.policy.max_attempts or not candidates:
                why = (
                    f"{done} repair{'s' if done != 1 else ''} did not hold"
                    if done >= self.policy.max_attempts
                    else "no action left in the policy applies to this model"
                )
                self._give_up(kind, fs, record, why)
                continue
            plans.append((kind, fs, candidates))
        if not plans:
            return
        rollback = self._restore()
        structural = reinit = False
        applied: dict[str, str] = {}  # one lower_lr for two modes in one window, not two
        for kind, fs, candidates in plans:
            for name in candidates:  # the first one that does something
                if name in applied and name not in ("reinit_dead", "xavier_init"):
                    detail: str | None = f"{applied[name]} (shared)"
                else:
                    structural |= name in _STRUCTURAL  # even if it failed half-way
                    detail = self._try(name, kind, fs)
                    if detail is not None:
                        applied[name] = detail
                if detail is not None:
                    reinit |= name in _REINIT
                    self._log(kind, fs, record, name, detail, rollback)
                    break
            else:
                self._give_up(kind, fs, record, "no action left in the policy could be applied")
        self.monitor.suite.rearm(forget_history=reinit)
        if structural:
            self.monitor._replan()
        if structural or not self.snapshot.taken:
            # keep the snapshot loadable into the new structure: the restored healthy
            # weights, with the fix applied
            self.snapshot.capture(self.monitor.step_count)

    def close(self) -> None:
        """Write repairs whose outcome is still unknown to the TensorBoard log."""
        for r in self._pending:
            self._write(r)
        self._pending = []

    # -- decisions ------------------------------------------------------------------------
    def _suspect(self, record: WindowRecord) -> str | None:
        """Why this window is not clean enough to snapshot (see ``unclean_reason``)."""
        recent = list(self._norms)
        g = record.total_grad_norm
        if math.isfinite(g):
            self._norms = (self._norms + [g])[-8:]
        m = self.monitor
        return ledger.unclean_reason(record, m.thresholds, m.suite, recent)

    def _attempts(self, kind: FailureMode) -> int:
        return len(ledger.kind_records(self.monitor.repairs, kind))

    def _gave_up(self, kind: FailureMode) -> bool:
        return any(f.final and f.kind is kind for f in self.monitor.findings)

    def _candidates(self, kind: FailureMode, findings: list[Finding]) -> list[str]:
        """The policy's next actions for ``kind`` that apply to this model."""
        names = ledger.next_actions(self.policy, self.monitor.repairs, kind)
        return [n for n in names if self._applicable(n, findings)]

    def _applicable(self, name: str, findings: list[Finding]) -> bool:
        model = self.monitor.model
        if name in ("lower_lr", "clip_grad_norm"):
            return True
        hidden = act.hidden_activations(model)
        if name == "leaky_variant":
            return any(k in _RELU_KINDS for k in hidden.values())
        if name == "relu_he":
            return any(k in SATURATING for k in hidden.values())
        if name == "add_norm":
            # under DDP new parameters would not be all-reduced: ranks would drift apart
            return bool(hidden) and not _multi_rank()
        if name in ("reinit_dead", "xavier_init"):
            return any(self._incoming(f) is not None for f in findings)
        return False

    def _incoming(self, f: Finding) -> tuple[str, Any] | None:
        units = f.evidence.get("units")
        if not f.layer:
            return None
        if units is None:  # saturation: the width of the site's input
            units = self._site_units(f)
        if not units:
            return None
        role = f.evidence.get("site_role", "output")
        return act.find_incoming(self.monitor.model, f.layer, int(units), role)

    def _site_units(self, f: Finding) -> int | None:
        key = f.evidence.get("site", f.layer)
        for rec in reversed(self.monitor.history[-2:]):
            s = rec.sites.get(key)
            if s is not None:
                return int(s.units)
        return None

    # -- actions --------------------------------------------------------------------------
    def _restore(self) -> int | None:
        """Roll back; returns the snapshot's step, or None when there is none."""
        if not self.snapshot.taken:
            return None
        try:
            self.snapshot.restore()
        except Exception as e:
            log.warning(
                "gradvitals repair: could not roll back (%s: %s); applying the fix to the "
                "current state",
                type(e).__name__,
                e,
            )
            return None
        return self.snapshot.step

    def _try(self, name: str, kind: FailureMode, findings: list[Finding]) -> str | None:
        try:
            return self._apply(name, kind, findings)
        except Exception as e:  # a failed action must not stop training
            log.warning("gradvitals repair: %s failed (%s: %s)", name, type(e).__name__, e)
            return None

    def _apply(self, name: str, kind: FailureMode, findings: list[Finding]) -> str | None:
        """Apply one action; returns what was done, or None when nothing could be."""
        m = self.monitor
        p = self.policy
        opt = m.optimizer
        if name == "lower_lr":
            if p.scheduler is None and act.scheduler_suspected(opt) and not self._warned_scheduler:
                self._warned_scheduler = True
                log.warning(
                    "gradvitals repair: an LR scheduler drives this optimizer; pass it as "
                    "RepairPolicy(scheduler=scheduler) so that the lowered learning rate "
                    "survives its next step"
                )
            return act.scale_lr(opt, p.lr_factor, p.scheduler)
        if name == "clip_grad_norm":
            return self._clip()
        if name == "leaky_variant":
            slope = p.leaky_slope
            names = act.swap_activations(m.model, _RELU_KINDS, lambda old: _leaky(old, slope))
            return f"swapped {len(names)} ReLU module(s) for LeakyReLU({slope:g}): " + ", ".join(
                names
            )
        if name == "relu_he":
            return self._relu_he()
        if name == "add_norm":
            multi = {k.split("#")[0] for k in m._site_order if "#" in k}
            names = act.insert_norm(m.model, opt, exclude=multi)
            if not names:
                return None
            return f"inserted a normalization before {len(names)} activation(s): " + ", ".join(
                names
            )
        if name == "reinit_dead":
            return self._reinit_dead(findings)
        if name == "xavier_init":
            return self._xavier(findings)
        raise ValueError(f"unknown repair action {name!r}")  # pragma: no cover

    def _clip(self) -> str:
        m = self.monitor
        if self.clip is not None:
            self.clip.max_norm /= 2.0
            return f"tightened gradient-norm clipping to {self.clip.max_norm:.3g}"
        value = self.policy.clip_norm
        source = "from the policy"
        if value is None:
            value = m.suite.clip_norm or suggest_clip_norm(m.suite.nonfinite.healthy_norms)
            source = "2x the median healthy gradient norm"
        if value is None:
            value, source = 1.0, "a default: no healthy gradient norms were seen"
        self.clip = act.GradClip(value)
        m._permanent_hooks.append(self.clip.install(m.optimizer))
        return f"clipping the global gradient norm at {value:.3g} ({source})"

    def _relu_he(self) -> str | None:
        m, p = self.monitor, self.policy
        hidden = act.hidden_activations(m.model)
        targets = {n: k for n, k in hidden.items() if k in SATURATING}
        layers = []
        for n in targets:
            inc = act.affine_before(m.model, n)
            if inc is not None:
                layers.append(inc)
        gain = act.he_gain(p.swap_to, p.leaky_slope)
        slope = p.leaky_slope

        def make(old: torch.nn.Module) -> torch.nn.Module:
            if p.swap_to == "relu":
                return torch.nn.ReLU()
            return _leaky(old, slope)

        names = act.swap_activations(m.model, SATURATING, make)
        if not names:
            return None
        changed: list[torch.Tensor] = []
        for _, layer in layers:
            changed += act.reinit_layer(layer, "he", gain, self._generator)
        act.reset_optimizer_state(m.optimizer, changed)
        new = "ReLU" if p.swap_to == "relu" else f"LeakyReLU({slope:g})"
        return (
            f"swapped {len(names)} sigmoid/tanh module(s) for {new} ({', '.join(names)}) "
            f"and He-initialised {len(layers)} layer(s): {', '.join(n for n, _ in layers)}"
        )

    def _reinit_dead(self, findings: list[Finding]) -> str | None:
        m, p = self.monitor, self.policy
        hidden = act.hidden_activations(m.model)
        leaky = any(k == "leaky_relu" for k in hidden.values())
        gain = act.he_gain("leaky_relu" if leaky else "relu", p.leaky_slope)
        parts = []
        for f in findings:
            inc = self._incoming(f)
            rows = list(f.evidence.get("dead_unit_indices") or [])
            if inc is None or not rows:
                continue
            name, layer = inc
            changed = act.reinit_rows(layer, rows, gain, self._generator)
            units = int(f.evidence.get("units", 0))
            for norm in act.norms_between(m.model, name, f.layer or "", units):
                changed += act.reset_norm_rows(norm, rows)
            act.reset_optimizer_state(m.optimizer, changed, rows=rows)
            parts.append(f"{len(rows)} unit(s) of {name}")
        if not parts:
            return None
        return "He-initialised the incoming weights of " + ", ".join(parts)

    def _xavier(self, findings: list[Finding]) -> str | None:
        m = self.monitor
        parts = []
        changed: list[torch.Tensor] = []
        seen: set[str] = set()
        for f in findings:
            inc = self._incoming(f)
            if inc is None or inc[0] in seen:
                continue
            name, layer = inc
            seen.add(name)
            kind = str(f.evidence.get("activation", "tanh"))
            gain = act.xavier_gain(kind)
            changed += act.reinit_layer(layer, "xavier", gain, self._generator)
            parts.append(f"{name} (gain {gain:.3g})")
        if not parts:
            return None
        act.reset_optimizer_state(m.optimizer, changed)
        return "Xavier-initialised " + ", ".join(parts)

    # -- bookkeeping ----------------------------------------------------------------------
    def _log(
        self,
        kind: FailureMode,
        findings: list[Finding],
        record: WindowRecord,
        action: str,
        detail: str,
        rollback: int | None,
    ) -> None:
        m = self.monitor
        attempt = self._attempts(kind) + 1
        rec = ledger.repair_record(kind, findings, record, action, detail, rollback, attempt)
        m.repairs.append(rec)
        self._pending.append(rec)
        if m.is_main_process:
            line = ledger.repair_line(rec, self.policy.max_attempts)
            (log.warning if m.console else log.info)(line)

    def _settle(self, healthy: bool) -> None:
        for r in self._pending:
            r["healthy_after"] = healthy
            self._write(r)
        self._pending = []

    def _write(self, r: dict[str, Any]) -> None:
        sink = self.monitor._sink
        if sink is not None and self.monitor.is_main_process:
            sink.write_repair(r)

    def _give_up(
        self, kind: FailureMode, findings: list[Finding], record: WindowRecord, why: str
    ) -> None:
        m = self.monitor
        f = ledger.give_up_finding(kind, findings, record, why, m.repairs, m.suite.clip_norm)
        m.findings.append(f)
        if m.is_main_process:
            from gradvitals.torch._monitor import _console_line

            (log.warning if m.console else log.info)(_console_line(f))


def _multi_rank() -> bool:
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def _leaky(old: torch.nn.Module, slope: float) -> torch.nn.Module:
    inplace = bool(getattr(old, "inplace", False))
    return torch.nn.LeakyReLU(slope, inplace=inplace)
