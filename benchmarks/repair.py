"""In-flight repair benchmark: how many induced failures ``repair=True`` fixes, and at what cost.

Each configuration induces one failure on sklearn's digits (8x8 images, X/16, 1400
train / 397 test) with a small seeded MLP trained for a fixed number of steps. Per
configuration and seed it trains three times, with ``torch.set_num_threads(1)``:

- **broken**: the failing configuration, unwatched;
- **repaired**: the same, with ``gradvitals.watch(model, opt, repair=True)``;
- **healthy**: a healthy configuration of the same model (the fix applied from the
  start, e.g. a 10x lower learning rate), unwatched: the reference for accuracy and time;
- **healthy, watched**: the healthy configuration with ``repair=True``: any repair
  there is a false alarm, and its time is the monitor's own overhead.

A run counts as *repaired* when no "could not repair" finding was emitted and its test
accuracy is within ``--tolerance`` (5 points) of the healthy run's. *Accuracy gained*
is repaired minus broken accuracy. *Time* is the repaired run's training time over the
healthy run's (same number of steps; it includes the monitor's own overhead, which on
models this small is most of it), and over the watched healthy run's. There is no
retraining: a repair rolls back to the last healthy snapshot and training goes on.

Usage::

    python benchmarks/repair.py            # 6 configurations x 4 seeds = 24 failing runs
    python benchmarks/repair.py --smoke    # 2 configurations, 1 seed, 1 epoch: runs at all?
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class Config:
    """An induced failure and its healthy counterpart."""

    name: str
    failure: str
    broken: Callable[[], Setup]
    healthy: Callable[[], Setup]
    note: str = ""


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


def _s(model: nn.Module, lr: float, momentum: float = 0.0, scale: float = 1.0) -> Setup:
    return Setup(model, sgd(model, lr, momentum), input_scale=scale)


DEEP = [64] + [32] * 10 + [10]

CONFIGS: list[Config] = [
    Config(
        "exploding",
        "exploding_gradient",
        lambda: _s(mlp([64, 128, 128, 10], nn.LeakyReLU), 0.3, 0.9, scale=5.0),
        lambda: _s(mlp([64, 128, 128, 10], nn.LeakyReLU), 0.03, 0.9, scale=5.0),
        "LeakyReLU 64-128-128-10, inputs x5, SGD lr 0.3 momentum 0.9 (healthy: lr 0.03)",
    ),
    Config(
        "nonfinite",
        "nonfinite",
        warmup(2.0),
        warmup(0.2),
        "LeakyReLU 64-128-128-10, SGD momentum 0.9, LambdaLR warm-up to lr 2.0 (healthy: 0.2)",
    ),
    Config(
        "diverging",
        "nonfinite",
        lambda: _s(mlp([64, 128, 128, 10], nn.LeakyReLU), 3.0, 0.9, scale=5.0),
        lambda: _s(mlp([64, 128, 128, 10], nn.LeakyReLU), 0.03, 0.9, scale=5.0),
        "LeakyReLU 64-128-128-10, inputs x5, SGD lr 3.0 momentum 0.9: NaN within 6 steps "
        "(healthy: lr 0.03)",
    ),
    Config(
        "dying_relu",
        "dying_relu",
        lambda: _s(mlp([64, 64, 64, 64, 64, 10], nn.ReLU), 0.5, 0.9),
        lambda: _s(mlp([64, 64, 64, 64, 64, 10], nn.ReLU), 0.05, 0.9),
        "ReLU 4x64, SGD lr 0.5 momentum 0.9 (healthy: lr 0.05)",
    ),
    Config(
        "vanishing",
        "vanishing_gradient",
        lambda: _s(mlp(DEEP, nn.Sigmoid), 0.01, 0.9),
        lambda: _s(he_mlp(DEEP), 0.01, 0.9),
        "sigmoid 10x32, SGD lr 0.01 momentum 0.9 (healthy: LeakyReLU with He init)",
    ),
    Config(
        "saturation",
        "saturation",
        lambda: _s(mlp([64, 64, 64, 10], nn.Tanh, init_std=2.0), 0.05),
        lambda: _s(mlp([64, 64, 64, 10], nn.Tanh), 0.05),
        "tanh 64-64-64-10 with N(0, 2) init, SGD lr 0.05 (healthy: default init)",
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


def bench(config: Config, seeds: int, epochs: int, tolerance: float, verbose: bool) -> dict:
    """Run one configuration over ``seeds``; returns per-run lists."""
    out: dict[str, list[float]] = {
        k: [] for k in ("broken", "rep", "ok", "t_rep", "t_ok", "t_watch", "fixed", "fail", "false")
    }
    for seed in range(seeds):
        data = digits(seed)
        broken = train(config.broken, data, seed, epochs, repair=False)
        repaired = train(config.broken, data, seed, epochs, repair=True)
        healthy = train(config.healthy, data, seed, epochs, repair=False)
        watched = train(config.healthy, data, seed, epochs, repair=True)
        out["broken"].append(broken.acc)
        out["rep"].append(repaired.acc)
        out["ok"].append(healthy.acc)
        out["t_rep"].append(repaired.seconds)
        out["t_ok"].append(healthy.seconds)
        out["t_watch"].append(watched.seconds)
        out["fail"].append(float(broken.acc < healthy.acc - tolerance))
        out["fixed"].append(float(not repaired.gave_up and repaired.acc >= healthy.acc - tolerance))
        out["false"].append(float(bool(watched.repairs)))
        if verbose:
            acts = ", ".join(f"{x['kind']}:{x['action']}@{x['step']}" for x in repaired.repairs)
            print(
                f"{config.name} seed {seed}: broken {broken.acc:.3f} repaired {repaired.acc:.3f} "
                f"healthy {healthy.acc:.3f} watched {watched.acc:.3f} [{acts}]"
                + (f" FALSE REPAIRS {watched.repairs}" if watched.repairs else ""),
                file=sys.stderr,
            )
    return out


def _row(name: str, r: dict[str, list[float]]) -> str:
    n = len(r["fixed"])
    return (
        f"| {name} | {n} | {int(sum(r['fail']))}/{n} | {int(sum(r['fixed']))}/{n} "
        f"| {_mean(r['broken']):.1%} | {_mean(r['rep']):.1%} | {_mean(r['ok']):.1%} "
        f"| {_mean(r['rep']) - _mean(r['broken']):+.1%} "
        f"| {sum(r['t_rep']) / sum(r['t_ok']):.2f}x | {sum(r['t_rep']) / sum(r['t_watch']):.2f}x "
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
        "--tolerance", type=float, default=0.05, help="accuracy tolerance vs healthy (0.05)"
    )
    ap.add_argument(
        "--configs", nargs="*", default=None, help=f"subset of: {' '.join(c.name for c in CONFIGS)}"
    )
    ap.add_argument("--verbose", action="store_true", help="print each run and its repairs")
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

    total: dict[str, list[float]] = {}
    rows = []
    for c in configs:
        r = bench(c, seeds, epochs, args.tolerance, args.verbose)
        rows.append(_row(c.name, r))
        for k, v in r.items():
            total.setdefault(k, []).extend(v)
    print(
        f"Repair benchmark: {len(configs)} configurations x {seeds} seeds, {epochs} epochs; "
        f"torch {torch.__version__}, 1 thread, {_cpu()}\n"
    )
    print(
        "| configuration | runs | failing unrepaired | repaired | acc. broken | acc. repaired "
        "| acc. healthy | gained | time vs healthy | time vs healthy watched "
        "| repairs on healthy runs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(_row("**all**", total))
    n = len(total["fixed"])
    print(
        f"\nRepaired {int(sum(total['fixed']))}/{n} ({_mean(total['fixed']):.1%}); "
        f"time {sum(total['t_rep']) / sum(total['t_ok']):.2f}x the unwatched healthy runs."
    )
    print("\nConfigurations:")
    for c in configs:
        print(f"- {c.name}: {c.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
