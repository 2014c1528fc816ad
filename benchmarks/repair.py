"""In-flight repair benchmark: does ``repair=True`` bring a broken run to the real fix's outcome?

Each configuration induces one failure on sklearn's digits (8x8 images, X/16, 1400
train / 397 test) with a small seeded network trained for a fixed number of steps,
and names its **real fix**: what an engineer would change in the code (the correct
learning rate, gradient clipping for the recurrent net, the right init or
activation). Per configuration and seed it trains four times, with
``torch.set_num_threads(1)``:

- **broken**: the failing configuration, unwatched;
- **repaired**: the same, with ``gradvitals.watch(model, opt, repair=True)``;
- **real fix**: the configuration with the fix applied from the start, unwatched: the
  outcome a repair is judged against, and the reference for time;
- **real fix, watched**: the fixed configuration with ``repair=True``: any repair
  there is a false repair, and its time is the monitor's own overhead.

A repair is judged by the run's *outcome*, not by the absence of later findings: the
test accuracy of the repaired run against the real fix's, per seed and averaged over
seeds (mean, and min-max over seeds). A run counts as *repaired* when no "could not
repair" finding was emitted and its accuracy is within ``--tolerance`` (5 points) of
the real fix's on the same seed; a configuration is *within the margin* when its mean
repaired accuracy is within ``--tolerance`` of its mean real-fix accuracy. *Time* is
the repaired run's training time over the real fix's (same number of steps; it
includes the monitor's own overhead, which on models this small is most of it), and
over the watched real fix's. There is no retraining: a repair rolls back to the last
healthy snapshot and training goes on.

Usage::

    python benchmarks/repair.py            # 7 configurations x 4 seeds = 28 failing runs
    python benchmarks/repair.py --smoke    # 2 configurations, 1 seed, 1 epoch: runs at all?
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import gradvitals
from gradvitals.remedies._policy import RepairPolicy

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class Setup:
    """One training run's ingredients."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    input_scale: float = 1.0
    clip: float | None = None  # clip_grad_norm_ before each step (the real fix of a net)


@dataclass
class Config:
    """An induced failure and its real fix."""

    name: str
    failure: str
    broken: Callable[[], Setup]
    fix: Callable[[], Setup]
    note: str = ""
    fix_note: str = ""


@dataclass
class Run:
    acc: float
    seconds: float
    findings: list[str] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    gave_up: bool = False


def mlp(
    widths: list[int], act: Callable[[], nn.Module], init_std: float | None = None
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        lin = nn.Linear(widths[i], widths[i + 1])
        if init_std is not None:
            nn.init.normal_(lin.weight, 0.0, init_std)
            nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def he_mlp(widths: list[int]) -> nn.Sequential:
    model = mlp(widths, lambda: nn.LeakyReLU(0.01))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0.01, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)
    return model


class RowRNN(nn.Module):
    """An Elman ``nn.RNN(relu)`` reading a digit's 8 rows as 8 steps; a linear head on
    the last hidden state."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.rnn = nn.RNN(8, hidden, batch_first=True, nonlinearity="relu")
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.view(-1, 8, 8))
        return self.head(out[:, -1])


def sgd(model: nn.Module, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def warmup(peak: float) -> Callable[[], Setup]:
    """SGD with a linear warm-up to ``peak`` over 200 steps (stepped every batch)."""

    def make() -> Setup:
        model = mlp([64, 128, 128, 10], nn.LeakyReLU)
        opt = sgd(model, peak, 0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.01 + 0.99 * min(1.0, s / 200))
        return Setup(model, opt, sched)

    return make


def _s(
    model: nn.Module,
    lr: float,
    momentum: float = 0.0,
    scale: float = 1.0,
    clip: float | None = None,
) -> Setup:
    return Setup(model, sgd(model, lr, momentum), input_scale=scale, clip=clip)


DEEP = [64] + [32] * 10 + [10]

CONFIGS: list[Config] = [
    Config(
        "exploding",
        "exploding_gradient",
        lambda: _s(mlp([64, 128, 128, 10], nn.LeakyReLU), 0.3, 0.9, scale=5.0),
        lambda: _s(mlp([64, 128, 128, 10], nn.LeakyReLU), 0.03, 0.9, scale=5.0),
        "LeakyReLU 64-128-128-10, inputs x5, SGD lr 0.3 momentum 0.9",
        "lr 0.03",
    ),
    Config(
        "nonfinite",
        "nonfinite",
        warmup(2.0),
        warmup(0.2),
        "LeakyReLU 64-128-128-10, SGD momentum 0.9, LambdaLR warm-up to lr 2.0",
        "warm-up to lr 0.2",
    ),
    Config(
        "diverging",
        "nonfinite",
        lambda: _s(mlp([64, 128, 128, 10], nn.LeakyReLU), 3.0, 0.9, scale=5.0),
        lambda: _s(mlp([64, 128, 128, 10], nn.LeakyReLU), 0.03, 0.9, scale=5.0),
        "LeakyReLU 64-128-128-10, inputs x5, SGD lr 3.0 momentum 0.9: NaN within 6 steps",
        "lr 0.03",
    ),
    Config(
        "rnn_exploding",
        "exploding_gradient",
        lambda: _s(RowRNN(), 0.1, 0.9),
        lambda: _s(RowRNN(), 0.1, 0.9, clip=1.0),
        "nn.RNN(relu) 8x8 rows, hidden 64, SGD lr 0.1 momentum 0.9",
        "clip_grad_norm_(1.0), same lr",
    ),
    Config(
        "dying_relu",
        "dying_relu",
        lambda: _s(mlp([64, 64, 64, 64, 64, 10], nn.ReLU), 0.5, 0.9),
        lambda: _s(mlp([64, 64, 64, 64, 64, 10], nn.ReLU), 0.05, 0.9),
        "ReLU 4x64, SGD lr 0.5 momentum 0.9",
        "lr 0.05",
    ),
    Config(
        "vanishing",
        "vanishing_gradient",
        lambda: _s(mlp(DEEP, nn.Sigmoid), 0.01, 0.9),
        lambda: _s(he_mlp(DEEP), 0.01, 0.9),
        "sigmoid 10x32, SGD lr 0.01 momentum 0.9",
        "LeakyReLU with He init",
    ),
    Config(
        "saturation",
        "saturation",
        lambda: _s(mlp([64, 64, 64, 10], nn.Tanh, init_std=2.0), 0.05),
        lambda: _s(mlp([64, 64, 64, 10], nn.Tanh), 0.05),
        "tanh 64-64-64-10 with N(0, 2) init, SGD lr 0.05",
        "PyTorch's default init",
    ),
]


def digits(seed: int) -> Batch:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def train(
    make: Callable[[], Setup],
    data: Batch,
    seed: int,
    epochs: int,
    *,
    repair: bool,
    batch: int = 32,
) -> Run:
    """Train one configuration; returns test accuracy (0 when the output is NaN).

    Time is the process's CPU time for the training loop (one thread), which other
    load on the machine barely disturbs.
    """
    torch.manual_seed(seed)
    s = make()
    xtr, ytr, xte, yte = data
    xtr, xte = xtr * s.input_scale, xte * s.input_scale
    monitor = None
    if repair:
        policy = RepairPolicy(scheduler=s.scheduler)
        monitor = gradvitals.watch(s.model, s.optimizer, repair=True, policy=policy, lint=False)
    order = torch.Generator().manual_seed(seed + 1000)
    t0 = time.process_time()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=order)
        for i in range(0, len(xtr), batch):
            idx = perm[i : i + batch]
            loss = nn.functional.cross_entropy(s.model(xtr[idx]), ytr[idx])
            s.optimizer.zero_grad()
            loss.backward()
            if s.clip is not None:
                nn.utils.clip_grad_norm_(s.model.parameters(), s.clip)
            s.optimizer.step()
            if s.scheduler is not None:
                s.scheduler.step()
            if monitor is not None:
                monitor.observe_loss(loss)
    if monitor is not None:
        monitor.close()
    seconds = time.process_time() - t0
    with torch.no_grad():
        out = s.model(xte)
    acc = float((out.argmax(1) == yte).float().mean()) if torch.isfinite(out).all() else 0.0
    run = Run(acc=acc, seconds=seconds)
    if monitor is not None:
        run.findings = [f"{f.kind.value}@{f.step}" for f in monitor.findings]
        run.repairs = list(monitor.repairs)
        run.gave_up = any(f.final for f in monitor.findings)
    return run


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


KEYS = ("broken", "rep", "fix", "t_rep", "t_fix", "t_watch", "fixed", "fail", "false", "gave_up")


def bench(config: Config, seeds: int, epochs: int, tolerance: float, verbose: bool) -> dict:
    """Run one configuration over ``seeds``; returns per-run lists."""
    out: dict[str, list[float]] = {k: [] for k in KEYS}
    for seed in range(seeds):
        data = digits(seed)
        broken = train(config.broken, data, seed, epochs, repair=False)
        repaired = train(config.broken, data, seed, epochs, repair=True)
        fix = train(config.fix, data, seed, epochs, repair=False)
        watched = train(config.fix, data, seed, epochs, repair=True)
        out["broken"].append(broken.acc)
        out["rep"].append(repaired.acc)
        out["fix"].append(fix.acc)
        out["t_rep"].append(repaired.seconds)
        out["t_fix"].append(fix.seconds)
        out["t_watch"].append(watched.seconds)
        out["fail"].append(float(broken.acc < fix.acc - tolerance))
        out["fixed"].append(float(not repaired.gave_up and repaired.acc >= fix.acc - tolerance))
        out["gave_up"].append(float(repaired.gave_up))
        out["false"].append(float(bool(watched.repairs)))
        if verbose:
            acts = ", ".join(f"{x['kind']}:{x['action']}@{x['step']}" for x in repaired.repairs)
            print(
                f"{config.name} seed {seed}: broken {broken.acc:.3f} repaired {repaired.acc:.3f} "
                f"fix {fix.acc:.3f} fix watched {watched.acc:.3f} [{acts}]"
                + (" GAVE UP" if repaired.gave_up else "")
                + (f" FALSE REPAIRS {watched.repairs}" if watched.repairs else ""),
                file=sys.stderr,
            )
    return out


def _acc(xs: list[float]) -> str:
    """Mean accuracy and its min-max over seeds, in percent."""
    if len(xs) == 1:
        return f"{100 * xs[0]:.1f}"
    return f"{100 * _mean(xs):.1f} ({100 * min(xs):.0f}–{100 * max(xs):.0f})"


def within_margin(r: dict[str, list[float]], tolerance: float) -> bool:
    """The mean repaired accuracy is within ``tolerance`` of the mean real-fix one.

    >>> within_margin({"rep": [0.90, 0.94], "fix": [0.95, 0.95]}, 0.05)
    True
    >>> within_margin({"rep": [0.50, 0.94], "fix": [0.95, 0.95]}, 0.05)
    False
    """
    return _mean(r["rep"]) >= _mean(r["fix"]) - tolerance


def _row(name: str, r: dict[str, list[float]], tolerance: float, fix_note: str = "") -> str:
    n = len(r["fixed"])
    gap = 100 * (_mean(r["rep"]) - _mean(r["fix"]))
    return (
        f"| {name} | {fix_note} | {n} | {int(sum(r['fail']))}/{n} | {_acc(r['broken'])} "
        f"| {_acc(r['rep'])} | {_acc(r['fix'])} | {gap:+.1f} "
        f"| {'yes' if within_margin(r, tolerance) else 'no'} | {int(sum(r['fixed']))}/{n} "
        f"| {int(sum(r['gave_up']))}/{n} "
        f"| {sum(r['t_rep']) / sum(r['t_fix']):.2f}x | {sum(r['t_rep']) / sum(r['t_watch']):.2f}x "
        f"| {int(sum(r['false']))}/{n} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="2 configurations, one seed, 1 epoch: checks that it runs",
    )
    ap.add_argument("--seeds", type=int, default=4, help="seeds per configuration (default 4)")
    ap.add_argument("--epochs", type=int, default=15, help="epochs per run (default 15)")
    ap.add_argument(
        "--tolerance", type=float, default=0.05, help="accuracy margin vs the real fix (0.05)"
    )
    ap.add_argument(
        "--configs", nargs="*", default=None, help=f"subset of: {' '.join(c.name for c in CONFIGS)}"
    )
    ap.add_argument("--verbose", action="store_true", help="print each run and its repairs")
    ap.add_argument("--out", type=Path, help="also write DIR/repair.json (every run's numbers)")
    args = ap.parse_args(argv)
    seeds, epochs = (1, 1) if args.smoke else (args.seeds, args.epochs)
    torch.set_num_threads(1)
    logging.getLogger("gradvitals").setLevel(logging.ERROR)
    names = [c.name for c in CONFIGS]
    unknown = sorted(set(args.configs or []) - set(names))
    if unknown:
        ap.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    chosen = args.configs or (["exploding", "saturation"] if args.smoke else names)
    configs = [c for c in CONFIGS if c.name in chosen]

    t0 = time.perf_counter()
    total: dict[str, list[float]] = {}
    rows = []
    per_config: dict[str, dict[str, list[float]]] = {}
    for c in configs:
        r = bench(c, seeds, epochs, args.tolerance, args.verbose)
        per_config[c.name] = r
        rows.append(_row(c.name, r, args.tolerance, c.fix_note))
        for k, v in r.items():
            total.setdefault(k, []).extend(v)
    tol = f"{100 * args.tolerance:g}"
    print(
        f"Repair benchmark: {len(configs)} configurations x {seeds} seeds, {epochs} epochs; "
        f"torch {torch.__version__}, 1 thread, {_cpu()}; "
        f"{time.perf_counter() - t0:.0f} s\n"
    )
    print(
        "| configuration | real fix | runs | broken fails | acc. broken | acc. repaired "
        f"| acc. real fix | repaired − fix, points | mean within {tol} pts? "
        f"| runs within {tol} pts | gave up | time vs fix | time vs fix watched "
        "| false repairs (fix, watched) |"
    )
    print("|---|---|---:|---:|---|---|---|---:|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(_row("**all**", total, args.tolerance))
    n = len(total["fixed"])
    met = sum(within_margin(r, args.tolerance) for r in per_config.values())
    print(
        f"\nAccuracy: mean over seeds (min–max). Repaired runs within {tol} accuracy points of "
        f"the real fix: {met} of {len(per_config)} configurations (mean over seeds), "
        f"{int(sum(total['fixed']))} of {n} runs ({_mean(total['fixed']):.0%}, seed by seed). "
        f"Repaired {int(sum(total['fixed']))}/{n}; false repairs on {int(sum(total['false']))} "
        f"of {n} real-fix runs; time {sum(total['t_rep']) / sum(total['t_fix']):.2f}x the "
        "unwatched real-fix runs."
    )
    print("\nConfigurations (broken; the real fix is in the table):")
    for c in configs:
        print(f"- {c.name}: {c.note}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "seeds": seeds,
            "epochs": epochs,
            "tolerance": args.tolerance,
            "torch": torch.__version__,
            "gradvitals": gradvitals.__version__,
            "configs": {
                c.name: {"note": c.note, "fix": c.fix_note, **per_config[c.name]} for c in configs
            },
        }
        (args.out / "repair.json").write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
