"""Detection quality and latency of gradvitals, and of loss-only peers, on labelled runs.

Method
------
1. **Corpus.** ``_corpus.sample_corpus`` draws ``--runs`` (default 240) seeded training
   configs over architectures (MLP, CNN, residual MLP, ``nn.RNN``), activations (relu,
   leaky_relu, gelu, sigmoid, tanh), inits (default, He, Xavier, N(0, 1)), optimizers
   (SGD, SGD+momentum, Adam), learning rates, normalization (none, BatchNorm,
   LayerNorm) and offline datasets (sklearn digits, breast_cancer, wine, make_moons,
   make_circles). Recipes bias some draws toward a failure mode; a recipe is not a
   label.
2. **Training.** Each run trains ``--steps`` (300) minibatch steps with
   ``gradvitals.watch(model, opt)`` at its defaults and ``monitor.observe_loss(loss)``.
   A probe copy of the model measures outcomes on the *full training set* at steps
   0, 1, 2, 4, 8, 12, 16, 20, 30, ... and at the end, outside gradvitals' hooks.
3. **Labels** come from those measurements only (rules in ``_corpus``'s docstring):
   exploding (divergence), dying_relu, saturation, vanishing, healthy, other.
4. **Scoring.** A run is *flagged* for a mode when gradvitals reported a finding of
   that kind (``exploding_gradient`` or ``nonfinite`` count as exploding). Per mode:
   precision, recall, false-alarm rate on healthy runs, and latency = first finding's
   step minus the label's onset step (negative: found before the outcome measure
   crossed its threshold; onsets after step 16 are known to 10 steps).
5. **Peers.** trainwatch and Lightning's SpikeDetection see only the loss; their
   first alarm counts as an "exploding/nonfinite" flag, scored the same way.

Caching: each run's raw result (losses, checkpoint measurements, gradvitals' window
records) is stored under ``--cache-dir`` keyed by the config hash, the corpus version
and a hash of gradvitals' collection code (``src/gradvitals/torch``, ``stats``). The
*detectors* are replayed from the cached window records on every invocation
(``DetectorSuite.update``, exactly what the monitor calls), so detector or threshold
changes are measured without retraining.

Usage::

    python benchmarks/detection.py                 # the 240-run corpus (2 workers)
    python benchmarks/detection.py --smoke         # 8 short runs, seconds
    python benchmarks/detection.py --out results/  # also write results/detection.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _corpus  # noqa: E402
import _peers  # noqa: E402

ROOT = HERE.parent
MODES = (
    "exploding",
    "dying_relu",
    "saturation",
    "vanishing",
    "stalled",
    "diverged_plateau",
    "output_activation",
)
KIND_TO_MODE = {
    "exploding_gradient": "exploding",
    "nonfinite": "exploding",
    "dying_relu": "dying_relu",
    "saturation": "saturation",
    "vanishing_gradient": "vanishing",
    "stalled": "stalled",
    "diverged_plateau": "diverged_plateau",
    "output_activation": "output_activation",
}
WINDOW = 20  # gradvitals' default sync interval (watch(every=20))


def collector_hash() -> str:
    """Hash of what shapes a cached run: gradvitals' collection code, corpus, torch.

    Hashed: every module of the PyTorch collector (``src/gradvitals/torch/*.py``: the
    monitor, its hooks, accumulators, lint and provenance), the statistics table and
    record assembly (``stats/*.py``) and the corpus version. The detectors, the
    session and the remedies are not: they are replayed.
    """
    import torch

    import gradvitals

    src = Path(gradvitals.__file__).resolve().parent
    h = hashlib.sha1()
    for f in sorted([*(src / "torch").glob("*.py"), *(src / "stats").glob("*.py")]):
        h.update(f"{f.parent.name}/{f.name}".encode())
        h.update(f.read_bytes())
    h.update(f"corpus-{_corpus.CORPUS_VERSION} torch-{torch.__version__}".encode())
    return h.hexdigest()[:12]


def replay(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the current session (detectors, cascade) over a run's cached window records.

    Returns every finding the user would see, roots and the consequences nested under
    them (``"root": False``), by step.
    """
    from gradvitals.session import Session
    from gradvitals.stats import WindowRecord

    session = Session(console=False)
    for d in history:
        session.submit(WindowRecord.from_dict(d))
    out = [
        {"kind": f.kind.value, "step": f.step, "layer": f.layer, "root": f is root}
        for root in session.findings
        for f in root.walk()
    ]
    return sorted(out, key=lambda f: f["step"])


def evaluate(job: tuple[_corpus.RunConfig, str | None, str]) -> dict[str, Any]:
    """Train (or load from cache) one run, label it, replay detectors and peers."""
    cfg, cache_dir, chash = job
    path = Path(cache_dir) / chash / f"{cfg.key()}.json" if cache_dir else None
    cached = path is not None and path.exists()
    if cached:
        assert path is not None
        run = json.loads(path.read_text())
    else:
        run = _corpus.to_jsonable(_corpus.train_run(cfg))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(run))
            tmp.replace(path)
    label = _corpus.label_run(run)
    run["preflight"] = [f["kind"] for f in run["preflight"]]
    t = time.perf_counter()
    findings = replay(run["history"])
    replay_s = time.perf_counter() - t
    peers: dict[str, Any] = {}
    if _peers.trainwatch_status() != "not installed":
        peers["trainwatch"] = _peers.trainwatch_first_alarm(run["losses"], run["epoch_ends"])
    if not _peers.lightning_status().startswith("not installed"):
        peers["spike_detection"] = _peers.spike_first_alarm(run["losses"], run["batch_idx"])
    live = sorted((f["kind"], f["step"]) for f in run["findings"])
    # pre-flight findings (the lint at watch()) count at step 0
    pre = [
        {"kind": k, "step": 0, "layer": None, "root": True, "preflight": True}
        for k in run["preflight"]
        if k in KIND_TO_MODE
    ]
    return {
        "config": dict(run["config"], run_id=cfg.run_id, recipe=cfg.recipe),
        "describe": cfg.describe(),
        **label,
        "findings": pre + findings,
        "replay_matches_live": live == sorted((f["kind"], f["step"]) for f in findings),
        "preflight": run["preflight"],
        "peers": peers,
        "train_seconds": run["train_seconds"],
        "replay_seconds": replay_s,
        "cached": cached,
        "steps_run": len(run["losses"]),
    }


def _init_worker(path: list[str]) -> None:
    import torch

    sys.path[:] = path
    torch.set_num_threads(1)


# -- scoring -------------------------------------------------------------------------------
def first_flag(r: dict[str, Any], mode: str) -> int | None:
    steps = [f["step"] for f in r["findings"] if KIND_TO_MODE.get(f["kind"]) == mode]
    return min(steps) if steps else None


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def score(
    results: list[dict[str, Any]], flag: Any, modes: tuple[str, ...] = MODES
) -> dict[str, dict[str, Any]]:
    """Per-mode precision, recall, false alarms on healthy runs and latency.

    ``flag(run, mode) -> step | None`` gives the detector's first alarm for the mode.
    """
    healthy = [r for r in results if r["class"] == "healthy"]
    out = {}
    for m in modes:
        # runs that ended non-finite carry only the exploding label: the other modes
        # cannot be judged there, so they are scored on the runs that ended finite
        pool = results if m == "exploding" else [r for r in results if r["assessable"]]
        labelled = [r for r in pool if m in r["labels"]]
        flagged = [r for r in pool if flag(r, m) is not None]
        tp = [r for r in flagged if m in r["labels"]]
        fa = [r for r in healthy if flag(r, m) is not None]
        lat = sorted(flag(r, m) - r["onset"][m] for r in tp)
        nested = [
            r
            for r in flagged
            if r.get("findings")
            and all(
                not f.get("root", True) for f in r["findings"] if KIND_TO_MODE.get(f["kind"]) == m
            )
        ]
        out[m] = {
            "labelled": len(labelled),
            "flagged": len(flagged),
            "tp": len(tp),
            "nested": len(nested),
            "precision": _ratio(len(tp), len(flagged)),
            "recall": _ratio(len(tp), len(labelled)),
            "false_alarms": len(fa),
            "healthy": len(healthy),
            "false_alarm_rate": _ratio(len(fa), len(healthy)),
            "latency": lat,
            "latency_median": statistics.median(lat) if lat else float("nan"),
            "latency_p90": lat[min(len(lat) - 1, int(0.9 * len(lat)))] if lat else float("nan"),
            "latency_max": lat[-1] if lat else float("nan"),
            "within_window": _ratio(sum(1 for x in lat if x <= WINDOW), len(lat)),
            "not_judged": len(results) - len(pool),
            "false_positive_runs": [r["config"]["run_id"] for r in flagged if m not in r["labels"]],
            "missed_runs": [r["config"]["run_id"] for r in labelled if flag(r, m) is None],
        }
    return out


def _fmt(x: float, pct: bool = False) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "–"
    if pct:
        return f"{x:.0%}"
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def _lat(s: dict[str, Any]) -> str:
    if not s["latency"]:
        return "–"
    return (
        f"{s['latency_median']:g} / {s['latency_p90']:g} / {s['latency_max']:g} "
        f"({s['within_window']:.0%} ≤ {WINDOW})"
    )


def score_table(title: str, scores: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"### {title}",
        "",
        "| mode | labelled | flagged | of which nested | TP | precision | recall "
        "| false alarms (healthy) | latency median / p90 / max, steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m, s in scores.items():
        lines.append(
            f"| {m} | {s['labelled']} | {s['flagged']} | {s['nested']} | {s['tp']} "
            f"| {_fmt(s['precision'])} "
            f"| {_fmt(s['recall'])} | {s['false_alarms']}/{s['healthy']} "
            f"({_fmt(s['false_alarm_rate'], pct=True)}) | {_lat(s)} |"
        )
    return "\n".join(lines)


def _group(r: dict[str, Any]) -> str:
    if r["class"] != "failing":
        return r["class"]
    key = "+".join(r["labels"])
    return key if r["assessable"] else f"{key} (ended non-finite)"


def composition_table(results: list[dict[str, Any]]) -> str:
    rows = Counter(_group(r) for r in results)
    archs = Counter(r["config"]["arch"] for r in results)
    acts = Counter(r["config"]["act"] for r in results)
    lines = ["### Corpus", "", "| class / labels | runs |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(rows.items(), key=lambda kv: -kv[1])]
    lines += [
        "",
        "Architectures: "
        + ", ".join(f"{k} {v}" for k, v in sorted(archs.items()))
        + "; activations: "
        + ", ".join(f"{k} {v}" for k, v in sorted(acts.items()))
        + ".",
    ]
    return "\n".join(lines)


def confusion_table(results: list[dict[str, Any]]) -> str:
    """What gradvitals reported, by the run's label set (runs with any finding of a kind)."""
    kinds = [
        "exploding_gradient",
        "nonfinite",
        "dying_relu",
        "saturation",
        "vanishing_gradient",
        "stalled",
        "diverged_plateau",
        "output_activation",
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(_group(r), []).append(r)
    head = "| label | runs | " + " | ".join(kinds) + " | none |"
    lines = ["### What gradvitals reported, by label", "", head, "|---" * (len(kinds) + 3) + "|"]
    for key, rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        counts = [sum(1 for r in rs if any(f["kind"] == k for f in r["findings"])) for k in kinds]
        none = sum(1 for r in rs if not r["findings"])
        lines.append(f"| {key} | {len(rs)} | " + " | ".join(map(str, counts)) + f" | {none} |")
    return "\n".join(lines)


def peer_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "### Loss-only peers (alarms mapped to exploding/nonfinite)",
        "",
        "| tool | alarms | precision | recall | false alarms (healthy) | alarms on other "
        "failing runs | latency median / p90 / max, steps |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]

    def gv(r: dict[str, Any], m: str) -> int | None:
        return first_flag(r, m)

    tools: list[tuple[str, Any]] = [("gradvitals (exploding+nonfinite)", gv)]
    for name in ("trainwatch", "spike_detection"):
        if results and name in results[0]["peers"]:
            tools.append((name, lambda r, m, name=name: r["peers"].get(name)))
    for name, fn in tools:
        s = score(results, fn, modes=("exploding",))["exploding"]
        other = sum(
            1
            for r in results
            if r["class"] == "failing"
            and "exploding" not in r["labels"]
            and fn(r, "exploding") is not None
        )
        lines.append(
            f"| {name} | {s['flagged']} | {_fmt(s['precision'])} | {_fmt(s['recall'])} "
            f"| {s['false_alarms']}/{s['healthy']} ({_fmt(s['false_alarm_rate'], pct=True)}) "
            f"| {other} | {_lat(s)} |"
        )
    missing = [
        n for n, st in (("trainwatch", _peers.trainwatch_status()),) if st == "not installed"
    ]
    if missing:
        lines.append("")
        lines.append(f"Not installed (skipped): {', '.join(missing)}.")
    return "\n".join(lines)


def errors_list(results: list[dict[str, Any]], scores: dict[str, dict[str, Any]]) -> str:
    by_id = {r["config"]["run_id"]: r for r in results}
    lines = ["### gradvitals' errors", ""]
    for m, s in scores.items():
        for kind, ids in (("false positive", s["false_positive_runs"]), ("miss", s["missed_runs"])):
            for i in ids:
                r = by_id[i]
                got = sorted({f["kind"] for f in r["findings"]})
                lines.append(
                    f"- {m} {kind}: run {i} [{r['class']}: {'+'.join(r['labels']) or '-'}] "
                    f"{r['describe']}; acc {r['final_acc']:.2f}, dead {r['max_dead']:.2f}, "
                    f"never+ (leaky/gelu) {r['max_never_positive_other']:.2f}, sat "
                    f"{r['max_saturation']:.2f}, grad ratio {r['init_grad_ratio']:.1e}→"
                    f"{r['final_grad_ratio']:.1e}; found {got or 'nothing'}"
                )
    if len(lines) == 2:
        lines.append("None.")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="8 short runs, sequential (seconds)")
    p.add_argument("--runs", type=int, default=240, help="corpus size (default 240)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    p.add_argument("--cache-dir", default=str(HERE / ".cache" / "detection"))
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--out", help="directory for detection.json")
    p.add_argument("--errors", action="store_true", help="list every false positive and miss")
    a = p.parse_args(argv)
    if a.smoke:
        a.runs, a.steps, a.workers = 8, 60, 1
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    configs = _corpus.sample_corpus(args.runs, seed=args.seed, steps=args.steps)
    chash = collector_hash()
    cache = None if args.no_cache else args.cache_dir
    jobs = [(c, cache, chash) for c in configs]
    if args.workers > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_init_worker, initargs=(list(sys.path),)) as pool:
            results = pool.map(evaluate, jobs, chunksize=1)
    else:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny nets: one thread is fastest and steadiest
        try:
            results = [evaluate(j) for j in jobs]
        finally:
            torch.set_num_threads(threads)
    wall = time.perf_counter() - t0

    gv = score(results, first_flag)
    n_cached = sum(r["cached"] for r in results)
    train_s = sum(r["train_seconds"] for r in results)
    mismatches = [r["config"]["run_id"] for r in results if not r["replay_matches_live"]]
    print(
        f"## Detection benchmark ({len(results)} runs, {args.steps} steps each, seed {args.seed})"
    )
    print()
    print(
        f"Wall time {wall:.1f} s with {args.workers} worker(s); {n_cached} runs from cache; "
        f"training time (when generated) {train_s:.0f} s in total, "
        f"{train_s / max(len(results), 1):.2f} s per run. Peers: {_peers.trainwatch_status()}, "
        f"{_peers.lightning_status()}; gradscope: {_peers.gradscope_status()}."
    )
    if mismatches:
        print(
            f"Note: replayed findings differ from the live ones for {len(mismatches)} run(s) "
            "(expected after a detector change since the cache was written)."
        )
    print()
    print(composition_table(results))
    print()
    print(score_table("gradvitals at defaults (watch(model, opt), every=20, samples=2)", gv))
    print()
    print(
        f"Every mode but exploding is scored on the {len(results) - gv['dying_relu']['not_judged']} "
        "runs whose model ended finite; exploding on all. Latency = first finding's step "
        "minus onset (negative: before the full-set measure crossed). *Nested*: flagged "
        "only as a consequence of an earlier finding (the cascade). No run has an "
        "output activation: output_activation flags are false alarms, its recall is "
        "not measured here."
    )
    print()
    print(peer_table(results))
    print()
    print(confusion_table(results))
    if args.errors:
        print()
        print(errors_list(results, gv))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": vars(args),
            "collector_hash": chash,
            "wall_seconds": wall,
            "scores": gv,
            "peers": {
                name: score(
                    results, lambda r, m, name=name: r["peers"].get(name), modes=("exploding",)
                )
                for name in ("trainwatch", "spike_detection")
                if results and name in results[0]["peers"]
            },
            "runs": results,
        }
        (out / "detection.json").write_text(json.dumps(payload, indent=1, default=str))
        print(f"\nWrote {out / 'detection.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
