"""Run the corpus of public buggy training programs under gradvitals and score it.

For each case (``--ids``, ``--framework`` filter them) the runner trains:

1. the **buggy** variant, watched: ``gradvitals.watch(model, optimizer, console=False)``
   (Keras: ``gradvitals.keras.VitalsCallback(probe=..., console=False)``), seed 0;
2. the **fixed** variant, watched the same way, seed 0 (any finding there is a false alarm);
3. both variants unwatched for seeds ``1..--seeds-1``, to check that the bug reproduces;
4. for ``repairable`` cases, the buggy variant again with repair on, for seeds
   ``0..--seeds-1``. The repair policy opts in to every opt-in action (``guard_op``):
   the runner plays a user who allows repair to change the model's forward.

It records per case:

- **symptom found**: some training finding's ``kind`` equals the case's symptom; the
  table marks a symptom the installed gradvitals has no detector for with
  ``(no detector)``;
- **cause right**: the *first* training finding's ``cause`` equals the case's cause;
- **first remedy right**: the first finding's ``remedies[0].key`` equals ``first_remedy``;
- **false alarm**: any training finding on the fixed variant;
- **repaired**: the repaired runs' mean score is within the case's margin of the fixed
  variant's mean (accuracy: 5 points; R²: 0.10, after clipping R² to [-1, 1]) and no
  repaired run emitted a "could not repair" finding; ``n/a`` when the bug does not
  reproduce (nothing to repair). Seeds are averaged because one run's final score in a
  noisy regime is not a measure of the repair (the JSON keeps each seed's score and the
  seed-0-only judgement as ``repair.seed0``);
- **reproduces**: the buggy variant's mean score over the seeds is below the fixed
  variant's mean minus the margin.

The gradvitals API is read defensively (``getattr(f, "cause", None)``): fields that a
version lacks read as missing, never as an error. Pre-flight lint findings are listed
apart and scored as nothing.

Usage::

    python benchmarks/bugs/run.py                       # every case, 2 seeds
    python benchmarks/bugs/run.py --quick               # 3-case smoke subset, seconds
    python benchmarks/bugs/run.py --framework torch --seeds 3 --json results.json
    python benchmarks/bugs/run.py --ids torch_nan_inputs keras_zero_std
    python benchmarks/bugs/run.py --list
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bugs`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bugs._case import NULL_TAP, BugCase, Outcome, Tap
from bugs._registry import select

#: The smoke subset of ``--quick``: three fast PyTorch cases, one of them repairable.
QUICK_IDS = ("torch_lr_warmup_nan", "torch_relu_before_ce", "torch_nan_targets")


# -- watching ----------------------------------------------------------------------------
class MonitorTap:
    """A :class:`~bugs._case.Tap` over a ``gradvitals`` PyTorch monitor."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def observe(self, loss: Any) -> None:
        self.monitor.observe_loss(loss)

    def step(self) -> None:
        if getattr(self.monitor, "optimizer", None) is None:
            self.monitor.step()

    def close(self) -> None:
        self.monitor.close()


@dataclass
class Watch:
    """The ``watch`` hook handed to a case; remembers what it attached.

    PyTorch cases call it as ``watch(model, optimizer, scheduler=None)``, Keras cases as
    ``watch((x_probe, y_probe))``.
    """

    framework: str
    repair: bool = False
    attached: list[Any] = field(default_factory=list)
    attach_error: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._keras(*args) if self.framework == "keras" else self._torch(*args, **kwargs)

    def _torch(self, model: Any, optimizer: Any = None, scheduler: Any = None) -> Tap:
        import gradvitals
        from gradvitals.errors import GradvitalsError

        kwargs: dict[str, Any] = {"console": False}
        if self.repair:
            kwargs["repair"] = True
            kwargs["policy"] = repair_policy(scheduler=scheduler)
        try:
            monitor = gradvitals.watch(model, optimizer, **kwargs)
        except GradvitalsError as e:  # refused at attach: recorded, training goes on
            self.attach_error = f"{type(e).__name__}: {e}"
            return NULL_TAP
        self.attached.append(monitor)
        return MonitorTap(monitor)

    def _keras(self, probe: Any) -> list[Any]:
        from gradvitals.errors import GradvitalsError
        from gradvitals.keras import VitalsCallback

        try:
            policy = repair_policy() if self.repair else None
            callback = VitalsCallback(probe=probe, console=False, repair=self.repair, policy=policy)
        except GradvitalsError as e:
            self.attach_error = f"{type(e).__name__}: {e}"
            return []
        self.attached.append(callback)
        return [callback]

    # -- what the attached monitors saw (read defensively) --
    def findings(self) -> list[Any]:
        return [f for m in self.attached for f in getattr(m, "findings", [])]

    def preflight(self) -> list[Any]:
        return [f for m in self.attached for f in getattr(m, "preflight", [])]

    def repairs(self) -> list[dict[str, Any]]:
        return [r for m in self.attached for r in getattr(m, "repairs", [])]


def _value(x: Any) -> Any:
    """An enum's ``.value``, a string as is, None as None."""
    return getattr(x, "value", x)


def describe_finding(f: Any) -> dict[str, Any]:
    """The fields the scoring reads, whichever of them this gradvitals version has."""
    remedies = getattr(f, "remedies", None) or []
    return {
        "kind": _value(getattr(f, "kind", None)),
        "cause": _value(getattr(f, "cause", None)),
        "first_remedy": getattr(remedies[0], "key", None) if remedies else None,
        "layer": getattr(f, "layer", None),
        "step": getattr(f, "step", None),
        "final": bool(getattr(f, "final", False)),
    }


def detector_kinds() -> set[str]:
    """The failure modes the installed gradvitals has a training detector for."""
    try:
        from gradvitals.session import DetectorSuite

        return set(getattr(DetectorSuite(), "detectors", {}))
    except Exception:  # an older or broken gradvitals: assume the original five
        return {"nonfinite", "dying_relu", "saturation", "vanishing_gradient", "exploding_gradient"}


def repair_policy(**fields: Any) -> Any:
    """The runner's policy: defaults, plus every opt-in action this gradvitals has."""
    import gradvitals

    try:
        from gradvitals.remedies import ACTION_SPECS

        opt_in = [n for n, spec in ACTION_SPECS.items() if getattr(spec, "opt_in", False)]
        return gradvitals.RepairPolicy(opt_in=opt_in, **fields)
    except (ImportError, TypeError):  # a gradvitals without opt-in actions
        return gradvitals.RepairPolicy(**fields)


# -- one case ----------------------------------------------------------------------------
@dataclass
class Watched:
    outcome: Outcome
    findings: list[dict[str, Any]]
    preflight: list[dict[str, Any]]
    repairs: list[dict[str, Any]]
    attach_error: str | None
    seconds: float


def run_watched(case: BugCase, variant: str, *, seed: int, steps: int, repair: bool) -> Watched:
    watch = Watch(case.framework, repair=repair)
    t0 = time.perf_counter()
    outcome = case.run(variant, watch, steps, seed)
    return Watched(
        outcome=outcome,
        findings=[describe_finding(f) for f in watch.findings()],
        preflight=[describe_finding(f) for f in watch.preflight()],
        repairs=[{k: _value(v) for k, v in r.items()} for r in watch.repairs()],
        attach_error=watch.attach_error,
        seconds=time.perf_counter() - t0,
    )


def score_case(
    case: BugCase, *, seeds: int, steps: int, repair: bool, detectors: set[str]
) -> dict[str, Any]:
    """Run one case as the module docstring describes; returns its result row."""
    t0 = time.perf_counter()
    buggy = run_watched(case, "buggy", seed=0, steps=steps, repair=False)
    fixed = run_watched(case, "fixed", seed=0, steps=steps, repair=False)
    buggy_outcomes, fixed_outcomes = [buggy.outcome], [fixed.outcome]
    for seed in range(1, seeds):
        buggy_outcomes.append(case.run("buggy", None, steps, seed))
        fixed_outcomes.append(case.run("fixed", None, steps, seed))

    training = [f for f in buggy.findings if not f["final"]]
    first = training[0] if training else None
    symptom = case.symptom.value
    row: dict[str, Any] = {
        "id": case.id,
        "framework": case.framework,
        "url": case.url,
        "symptom": symptom,
        "cause": case.cause.value,
        "first_remedy": case.first_remedy,
        "repairable": case.repairable,
        "has_detector": symptom in detectors,
        "found_kinds": sorted({f["kind"] for f in training if f["kind"]}),
        "preflight_kinds": sorted({f["kind"] for f in buggy.preflight if f["kind"]}),
        "attach_error": buggy.attach_error,
        "symptom_found": any(f["kind"] == symptom for f in training),
        "first_finding": first,
        "cause_right": bool(first and first["cause"] == case.cause.value),
        "remedy_right": bool(first and first["first_remedy"] == case.first_remedy),
        "fixed_kinds": sorted({f["kind"] for f in fixed.findings if f["kind"]}),
        "false_alarm": bool(fixed.findings),
        "buggy": [o.to_dict() for o in buggy_outcomes],
        "fixed": [o.to_dict() for o in fixed_outcomes],
    }
    b_mean = statistics.fmean(o.score for o in buggy_outcomes)
    f_mean = statistics.fmean(o.score for o in fixed_outcomes)
    row["buggy_score"], row["fixed_score"] = b_mean, f_mean
    row["reproduces"] = b_mean < f_mean - case.margin

    row["repaired"] = None
    if case.repairable and repair:
        reps = [run_watched(case, "buggy", seed=s, steps=steps, repair=True) for s in range(seeds)]
        gave_up = [any(f["final"] for f in rep.findings) for rep in reps]
        r_mean = statistics.fmean(rep.outcome.score for rep in reps)
        row["repair"] = {
            "outcomes": [rep.outcome.to_dict() for rep in reps],
            "score": r_mean,
            "actions": [[str(r.get("action")) for r in rep.repairs] for rep in reps],
            "gave_up": gave_up,
            "attach_error": reps[0].attach_error,
            # the single-run judgement this runner used before it averaged seeds
            "seed0": (reps[0].outcome.score >= fixed.outcome.score - case.margin and not gave_up[0])
            if buggy.outcome.score < fixed.outcome.score - case.margin
            else None,
        }
        within = r_mean >= f_mean - case.margin
        row["repaired"] = (within and not any(gave_up)) if row["reproduces"] else None
    row["seconds"] = time.perf_counter() - t0
    return row


# -- report ------------------------------------------------------------------------------
def _mark(x: bool | None) -> str:
    return "n/a" if x is None else ("yes" if x else "no")


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| case | fw | expected symptom | found (training) | symptom | cause | remedy "
        "| false alarm | repaired | reproduces (buggy / fixed) | s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        found = ", ".join(r["found_kinds"]) or "-"
        if r["attach_error"]:
            found += " (refused at attach)"
        sym = _mark(r["symptom_found"]) + ("" if r["has_detector"] else " (no detector)")
        first = r["first_finding"] or {}
        cause = f"{_mark(r['cause_right'])} ({first.get('cause') or '-'})"
        remedy = f"{_mark(r['remedy_right'])} ({first.get('first_remedy') or '-'})"
        fa = "yes: " + ", ".join(r["fixed_kinds"]) if r["false_alarm"] else "no"
        repaired = _mark(r["repaired"]) if r["repairable"] else "-"
        repro = f"{_mark(r['reproduces'])} ({r['buggy_score']:.2f} / {r['fixed_score']:.2f})"
        lines.append(
            f"| {r['id']} | {r['framework']} | {r['symptom']} | {found} | {sym} | {cause} "
            f"| {remedy} | {fa} | {repaired} | {repro} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    with_det = [r for r in rows if r["has_detector"]]
    rep = [r for r in rows if r["repaired"] is not None]
    return {
        "cases": n,
        "symptom_found": sum(r["symptom_found"] for r in rows),
        "symptom_found_with_detector": sum(r["symptom_found"] for r in with_det),
        "cases_with_detector": len(with_det),
        "cause_right": sum(r["cause_right"] for r in rows),
        "remedy_right": sum(r["remedy_right"] for r in rows),
        "any_finding_on_buggy": sum(bool(r["found_kinds"]) for r in rows),
        "refused_at_attach": sum(bool(r["attach_error"]) for r in rows),
        "false_alarms": sum(r["false_alarm"] for r in rows),
        "repairable": sum(r["repairable"] for r in rows),
        "repaired": sum(bool(r["repaired"]) for r in rep),
        "repair_scored": len(rep),
        "reproduces": sum(r["reproduces"] for r in rows),
    }


def totals_text(t: dict[str, Any], seconds: float) -> str:
    return (
        f"Cases: {t['cases']}. Symptom found: {t['symptom_found']}/{t['cases']} "
        f"({t['symptom_found_with_detector']}/{t['cases_with_detector']} where a detector "
        f"exists). Any training finding on the buggy run: {t['any_finding_on_buggy']}/"
        f"{t['cases']}; refused at attach: {t['refused_at_attach']}. Cause right: "
        f"{t['cause_right']}/{t['cases']}. First remedy right: {t['remedy_right']}/"
        f"{t['cases']}. False alarms on the fixed runs: {t['false_alarms']}/{t['cases']}. "
        f"Repaired: {t['repaired']}/{t['repair_scored']} scored ({t['repairable']} "
        f"repairable). Bug reproduces: {t['reproduces']}/{t['cases']}. "
        f"Wall time {seconds:.0f} s."
    )


def _quiet() -> None:
    """Silence framework chatter: training logs, TF's C++ logs, Keras warnings."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("gradvitals").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    warnings.filterwarnings("ignore", category=RuntimeWarning)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--ids", nargs="*", default=None, help="case ids (default: all)")
    ap.add_argument("--framework", choices=("torch", "keras"), default=None)
    ap.add_argument("--seeds", type=int, default=2, help="seeds for 'reproduces' (default 2)")
    ap.add_argument("--steps", type=int, default=0, help="override every case's steps")
    ap.add_argument("--no-repair", action="store_true", help="skip the repair=True runs")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {', '.join(QUICK_IDS)}")
    ap.add_argument("--json", default=None, help="write the per-case results to this file")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    _quiet()
    try:
        cases = select(list(QUICK_IDS) if args.quick else args.ids, args.framework)
    except KeyError as e:
        ap.error(str(e.args[0]))
    if args.list:
        for c in cases:
            print(f"{c.id:40s} {c.framework:6s} {c.symptom.value:20s} {c.cause.value:22s} {c.url}")
        return 0
    seeds = 1 if args.quick else args.seeds

    import torch

    torch.set_num_threads(1)
    if any(c.framework == "keras" for c in cases):
        try:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except (ImportError, RuntimeError):
            pass

    detectors = detector_kinds()
    t0 = time.perf_counter()
    rows = []
    for case in cases:
        row = score_case(
            case, seeds=seeds, steps=args.steps, repair=not args.no_repair, detectors=detectors
        )
        rows.append(row)
        print(
            f"{case.id}: found {row['found_kinds'] or '-'}, reproduces {row['reproduces']} "
            f"({row['seconds']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    seconds = time.perf_counter() - t0
    t = totals(rows)
    print(table(rows))
    print()
    print(totals_text(t, seconds))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"totals": t, "seconds": seconds, "seeds": seeds, "cases": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
