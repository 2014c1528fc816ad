"""Step-time overhead of gradvitals, side by side with the tools users pick today.

Method
------
- **Modes** (each on its own copy of the model, all copies built from one seeded init):

  ============================  ====================================================
  ``none``                      the plain training step (the reference)
  ``gradvitals``                ``gradvitals.watch(model, opt)`` at its defaults
                                (``every=20, samples=2``) + ``observe_loss(loss)``
  ``gradvitals_every1``         ``watch(model, opt, every=1, samples=1)``: statistics on
                                every step, one host copy per step
  ``gradvitals_samples1``       ``watch(model, opt, samples=1)``: one sampled step per
                                20-step window (not with ``--smoke``)
  ``gradvitals_every50``        ``watch(model, opt, every=50)``: 50-step windows, two
                                sampled steps each (not with ``--smoke``)
  ``trainwatch``                ``trainwatch.Watcher()`` at its defaults, fed
                                ``loss.item()`` each step (its API takes a float)
  ``wandb_hist@N``              wandb.watch-style per-parameter gradient histograms
                                logged every N backward calls (``_peers.WandbStyleHooks``);
                                N = 1000 is wandb's default ``log_freq``
  ``lightning``                 ``grad_norm(model, 2)`` after each backward +
                                ``SpikeDetection()`` fed the loss each step
  ============================  ====================================================

  ``gradscope`` 0.1.0 is listed with its import error: its wheel lacks
  ``gradscope.backends``.
- **Interleaved, paired repeats.** Every variant has an unwatched *twin* (the same
  model and optimizer, the same batches, the same number of steps, so both compute
  on identical weights). After an untimed warm-up of every model (past gradvitals'
  warm-up windows of 1, 2, 4... steps), each repeat visits every variant (the order
  rotating by one per repeat) and times one block of ``--steps`` steps of its twin
  and one of the variant back to back (twin first on even repeats, second on odd
  ones). A block is a multiple of 20 steps, so every block
  holds the same number of gradvitals windows, their closes included (for
  ``gradvitals_every50`` too at the default 100 steps).
- **Total-time ratio.** The headline number is the sum of a variant's block times over
  the sum of its paired unwatched block times: the time of *every* step, so that a
  windowed tool, which pays on a few steps of each window, is charged in full (a
  median over steps would hide that). The per-repeat ratios give the spread (median,
  inter-quartile range, min-max). The one-time cost of attaching a tool (``watch()``
  with its pre-flight lint, hook installation) is reported separately ("attach ms").
- **Clocks.** CPU: one torch thread; each block is timed on the thread's CPU time
  (``time.thread_time``: other processes on a shared machine do not count) *and* on
  wall time; both are reported. CUDA: ``torch.cuda.Event`` records at the block's
  start and end and one ``synchronize()`` after it, and wall time to that sync;
  nothing else synchronizes inside the timed region except what a tool does itself
  (which is what is being measured). On CUDA a separate untimed pass counts each
  tool's host syncs with ``torch.cuda.set_sync_debug_mode("warn")``.
- **Data** is a pool of 4 random batches already on the device (no loader cost, which
  makes the ratio an upper bound for real input pipelines).
- ``--profile N`` adds, for N windows of gradvitals at its defaults and the same
  number of steps every step: the inclusive thread CPU time per window of its main
  functions, from timing wrappers only (``BREAKDOWN``), and a cProfile listing of
  its functions (slower, finer).

Usage::

    python benchmarks/overhead.py                       # CPU: MLP and small CNN, ~4 min
    python benchmarks/overhead.py --only mlp --profile 50   # the 2 ms MLP, and where the time goes
    python benchmarks/overhead.py --smoke               # seconds
    python benchmarks/overhead.py --device cuda --out DIR   # GPU sizes; DIR/overhead.json
    python benchmarks/overhead.py --full                # adds a larger model
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _peers  # noqa: E402

import gradvitals  # noqa: E402

WINDOW = 20  # gradvitals' default ``every``


# -- models ----------------------------------------------------------------------------------
def mlp(width: int, depth: int, n_in: int, n_out: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, n_out))


def small_cnn(n_out: int = 10) -> nn.Module:
    """3 conv layers on 3x32x32 inputs."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, n_out),
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(y)) + self.down(x))


def resnet_ish(widths: tuple[int, ...] = (64, 128, 256, 512), n_out: int = 10) -> nn.Module:
    """ResNet-10-like: stride-2 stem, one basic block per stage, for 3x64x64 inputs."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    c = widths[0]
    for i, w in enumerate(widths):
        layers.append(BasicBlock(c, w, 1 if i == 0 else 2))
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_out))


@dataclass
class Workload:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]  # without the batch dimension
    batch: int
    lr: float = 0.01


def workloads(device: str, full: bool, smoke: bool) -> list[Workload]:
    if smoke:
        return [Workload("mlp 2x64 B=32", lambda: mlp(64, 2, 64), (64,), 32)]
    if device.startswith("cuda"):
        out = [
            Workload("mlp 8x2048 B=512", lambda: mlp(2048, 8, 2048), (2048,), 512),
            Workload("resnet-ish 64x64 B=256", resnet_ish, (3, 64, 64), 256),
        ]
        if full:
            out.append(Workload("mlp 8x2048 B=4096", lambda: mlp(2048, 8, 2048), (2048,), 4096))
        return out
    out = [
        Workload("mlp 4x256 B=128", lambda: mlp(256, 4, 256), (256,), 128),
        Workload("cnn 3-conv 32x32 B=32", small_cnn, (3, 32, 32), 32),
    ]
    if full:
        out.append(
            Workload(
                "resnet-ish 64x64 B=16", lambda: resnet_ish((16, 32, 64, 128)), (3, 64, 64), 16
            )
        )
    return out


# -- modes -------------------------------------------------------------------------------------
class Mode:
    """One way of training: ``before_step`` runs after backward, ``after_step`` after it."""

    name = "none"

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, device: str) -> None:
        self.model, self.opt, self.device = model, opt, device

    def after_backward(self) -> None:
        pass

    def after_step(self, loss: torch.Tensor, i: int) -> None:
        pass

    def close(self) -> dict[str, Any]:
        return {}


class GradvitalsMode(Mode):
    def __init__(
        self, model: nn.Module, opt: Any, device: str, name: str = "gradvitals", **kw: Any
    ) -> None:
        super().__init__(model, opt, device)
        self.name = name
        self.monitor = gradvitals.watch(model, opt, console=False, **kw)

    def after_step(self, loss: torch.Tensor, i: int) -> None:
        self.monitor.observe_loss(loss)

    def close(self) -> dict[str, Any]:
        m = self.monitor
        m.close()
        return {
            "steps": m.step_count,
            "windows": len(m.history),
            "findings": [f.kind.value for f in m.findings],
            "disabled": m.disabled,
        }


class TrainwatchMode(Mode):
    name = "trainwatch"

    def __init__(self, model: nn.Module, opt: Any, device: str) -> None:
        super().__init__(model, opt, device)
        self.loop = _peers.TrainwatchLoop()

    def after_step(self, loss: torch.Tensor, i: int) -> None:
        self.loop.step(loss)


class WandbMode(Mode):
    def __init__(self, model: nn.Module, opt: Any, device: str, log_freq: int) -> None:
        super().__init__(model, opt, device)
        self.name = f"wandb_hist@{log_freq}"
        self.hooks = _peers.WandbStyleHooks(model, log_freq=log_freq)

    def close(self) -> dict[str, Any]:
        self.hooks.remove()
        return {"histograms": len(self.hooks.logged)}


class LightningMode(Mode):
    name = "lightning"

    def __init__(self, model: nn.Module, opt: Any, device: str) -> None:
        super().__init__(model, opt, device)
        self.spike = _peers.SpikeLoop(device)
        self.norms: dict[str, Any] = {}

    def after_backward(self) -> None:
        self.norms = _peers.lightning_grad_norm(self.model)

    def after_step(self, loss: torch.Tensor, i: int) -> None:
        self.spike.step(loss, i % 1000)

    def close(self) -> dict[str, Any]:
        return {"spikes": self.spike.spikes}


def mode_factories(smoke: bool) -> tuple[dict[str, Callable[..., Mode]], dict[str, str]]:
    """Available modes, and a note for each tool that could not be included."""
    f: dict[str, Callable[..., Mode]] = {
        "none": Mode,
        "gradvitals": GradvitalsMode,
        "gradvitals_every1": lambda m, o, d: GradvitalsMode(
            m, o, d, "gradvitals_every1", every=1, samples=1
        ),
    }
    if not smoke:  # cheaper settings than the defaults: what they save
        f["gradvitals_samples1"] = lambda m, o, d: GradvitalsMode(
            m, o, d, "gradvitals_samples1", samples=1
        )
        f["gradvitals_every50"] = lambda m, o, d: GradvitalsMode(
            m, o, d, "gradvitals_every50", every=50
        )
    notes: dict[str, str] = {}
    tw = _peers.trainwatch_status()
    if tw == "not installed":
        notes["trainwatch"] = "not installed (pip install trainwatch)"
    else:
        f["trainwatch"] = TrainwatchMode
    for freq in (1000, 1) if smoke else (1000, 100, 1):
        f[f"wandb_hist@{freq}"] = lambda m, o, d, freq=freq: WandbMode(m, o, d, freq)
    lt = _peers.lightning_status()
    if lt.startswith("not installed"):
        notes["lightning"] = lt
    else:
        f["lightning"] = LightningMode
    notes["gradscope"] = _peers.gradscope_status()
    return f, notes


# -- timing ------------------------------------------------------------------------------------
class Clocks:
    """Two clocks read around each block: the primary one and wall time.

    CPU: the primary clock is the thread's CPU time (``time.thread_time``), which counts
    only this thread's work, so other processes on a shared machine do not inflate a
    block; with one torch thread all of the step's work (forward, autograd, optimizer
    and every tool's hooks) runs on this thread. Wall time (``time.perf_counter``) is
    read around the same block. CUDA: the primary clock is a pair of
    ``torch.cuda.Event`` records (device time), and wall time runs to the block's one
    ``synchronize()``.
    """

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.names = ("cuda", "wall") if self.cuda else ("thread", "wall")

    def start(self) -> tuple[Any, float]:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e, time.perf_counter()
        return time.thread_time(), time.perf_counter()

    def stop(self, start: tuple[Any, float]) -> dict[str, float]:
        """Milliseconds on each clock since ``start``; on CUDA the one sync of the block."""
        first, wall0 = start
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return {
                "cuda": float(first.elapsed_time(end)),
                "wall": (time.perf_counter() - wall0) * 1e3,
            }
        cpu = time.thread_time()
        wall = time.perf_counter()
        return {"thread": (cpu - first) * 1e3, "wall": (wall - wall0) * 1e3}


def seeded_setup(
    w: Workload, device: str
) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The workload's model from seed 0 and its pool of 4 batches from seed 1, on ``device``
    (the same for every mode, the timing and the profiles)."""
    torch.manual_seed(0)
    model = w.build().to(device)
    gen = torch.Generator(device="cpu").manual_seed(1)
    data = [
        (
            torch.randn(w.batch, *w.input_shape, generator=gen).to(device),
            torch.randint(0, 10, (w.batch,), generator=gen).to(device),
        )
        for _ in range(4)
    ]
    return model, data


def run_steps(mode: Mode, data: list[tuple[torch.Tensor, torch.Tensor]], n: int, i0: int) -> None:
    model, opt = mode.model, mode.opt
    for i in range(i0, i0 + n):
        x, y = data[i % len(data)]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        mode.after_backward()
        opt.step()
        mode.after_step(loss, i)


def count_syncs(mode: Mode, data: list[Any], n: int, i0: int) -> int:
    """Host syncs in ``n`` untimed steps, as reported by the CUDA sync debug mode."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_steps(mode, data, n, i0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum(1 for w in caught if "synchroniz" in str(w.message))


def ratio_stats(pairs: list[tuple[float, float]], steps: int) -> dict[str, Any]:
    """Total-time ratio and the spread of per-repeat ratios, from ``(mode ms, none ms)``.

    ``ratio_total`` = sum of the mode's block times / sum of the paired unwatched block
    times: the time of every step, window closes included. The per-repeat ratios give
    the spread.

    >>> s = ratio_stats([(110.0, 100.0), (100.0, 100.0), (130.0, 100.0)], steps=100)
    >>> round(s["ratio_total"], 3), s["ratio_min"], s["ratio_max"], s["ms_per_step"]
    (1.133, 1.0, 1.3, 1.1333333333333333)
    """
    mode_ms = [a for a, _ in pairs]
    none_ms = [b for _, b in pairs]
    ratios = sorted(a / b for a, b in pairs)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return {
        "block_ms": mode_ms,
        "paired_none_ms": none_ms,
        "ms_per_step": sum(mode_ms) / (len(mode_ms) * steps),
        "ratio_total": sum(mode_ms) / sum(none_ms),
        "ratio_median": statistics.median(ratios),
        "ratio_q1": q[0],
        "ratio_q3": q[2],
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
        "ratios": ratios,
    }


def bench_workload(
    w: Workload,
    factories: dict[str, Callable[..., Mode]],
    device: str,
    steps: int,
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """Time every mode on ``w``: interleaved, each paired with its own unwatched twin.

    Every variant gets an unwatched *twin*: a copy of the same model and optimizer,
    trained on the same batches for the same number of steps, so that the pair
    computes on identical weights (one shared reference trained 7x more steps than
    any variant ran 10% slower per step, likely from denormal floats as its gradients
    shrank, which made do-nothing peers look faster than no tool at all). Each repeat visits the variants in an order rotated by one per repeat and
    times one block of the twin and one of the variant back to back (twin first on
    even repeats, second on odd ones).
    """
    base, data = seeded_setup(w, device)
    clocks = Clocks(device)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(base)
        return model, torch.optim.SGD(model.parameters(), lr=w.lr, momentum=0.9)

    variants = [n for n in factories if n != "none"]
    modes: dict[str, Mode] = {}
    twins: dict[str, Mode] = {}
    setup: dict[str, dict[str, float]] = {}
    for name in variants:
        twins[name] = Mode(*fresh(), device)
        model, opt = fresh()
        t = clocks.start()
        modes[name] = factories[name](model, opt, device)  # attaching a tool: a one-time cost
        setup[name] = clocks.stop(t)
    setup["none"] = dict.fromkeys(clocks.names, 0.0)
    pos: dict[int, int] = {}
    for mode in [*modes.values(), *twins.values()]:  # untimed warm-up
        run_steps(mode, data, warmup, 0)
        pos[id(mode)] = warmup
    syncs: dict[str, float] = {}
    if clocks.cuda:
        n = 2 * WINDOW
        for name, mode in [("none", next(iter(twins.values()))), *modes.items()]:
            syncs[name] = count_syncs(mode, data, n, pos[id(mode)]) / n
        for name, mode in modes.items():  # keep each twin in step with its variant
            if name != variants[0]:
                run_steps(twins[name], data, n, pos[id(twins[name])])
            pos[id(twins[name])] += n
            pos[id(mode)] += n

    def block(mode: Mode) -> dict[str, float]:
        t = clocks.start()
        run_steps(mode, data, steps, pos[id(mode)])
        out = clocks.stop(t)
        pos[id(mode)] += steps
        return out

    pairs: dict[str, dict[str, list[tuple[float, float]]]] = {
        c: {v: [] for v in variants} for c in clocks.names
    }
    none_blocks: dict[str, list[float]] = {c: [] for c in clocks.names}
    for r in range(repeats):
        k = r % max(len(variants), 1)
        for v in variants[k:] + variants[:k]:
            if r % 2 == 0:
                t_none, t_v = block(twins[v]), block(modes[v])
            else:
                t_v, t_none = block(modes[v]), block(twins[v])
            for c in clocks.names:
                pairs[c][v].append((t_v[c], t_none[c]))
                none_blocks[c].append(t_none[c])
    closing: dict[str, dict[str, float]] = {"none": dict.fromkeys(clocks.names, 0.0)}
    extra: dict[str, dict[str, Any]] = {"none": {}}
    for name, mode in modes.items():
        t = clocks.start()
        extra[name] = mode.close()
        closing[name] = clocks.stop(t)
    out: dict[str, Any] = {}
    for name in ["none", *variants]:
        per_clock: dict[str, Any] = {}
        for c in clocks.names:
            if name == "none":
                per_clock[c] = ratio_stats([(x, x) for x in none_blocks[c]], steps)
            else:
                per_clock[c] = ratio_stats(pairs[c][name], steps)
        out[name] = {
            "clocks": per_clock,
            "ratio_total": per_clock[clocks.names[0]]["ratio_total"],
            "setup_ms": setup[name],
            "close_ms": closing[name],
            "syncs_per_step": syncs.get(name),
            "info": extra[name],
        }
    return out


#: gradvitals' entry points and main parts, timed by :func:`breakdown_gradvitals`:
#: (module, class, method). Times are inclusive, so nested ones add up to their caller.
BREAKDOWN = (
    ("gradvitals.torch._monitor", "Monitor", "_on_root_forward"),
    ("gradvitals.torch._batch", "BatchAccumulator", "add_input"),
    ("gradvitals.torch._monitor", "Monitor", "observe_loss"),
    ("gradvitals.torch._monitor", "Monitor", "_read_loss_graph"),
    ("gradvitals.torch._monitor", "Monitor", "_on_pre_step"),
    ("gradvitals.torch._params", "ParamAccumulator", "snapshot_weights"),
    ("gradvitals.torch._monitor", "Monitor", "_check_step"),
    ("gradvitals.torch._monitor", "Monitor", "_on_post_step"),
    ("gradvitals.torch._params", "ParamAccumulator", "commit"),
    ("gradvitals.torch._monitor", "Monitor", "_install"),
    ("gradvitals.torch._monitor", "Monitor", "_remove"),
    ("gradvitals.torch._monitor", "Monitor", "_freeze"),
    ("gradvitals.torch._monitor", "Monitor", "_resolve"),
    ("gradvitals.torch._monitor", "Monitor", "_collect"),
    ("gradvitals.session._session", "Session", "submit"),
    ("gradvitals.session._suite", "DetectorSuite", "update"),
    ("gradvitals.torch._sites", "SiteAccumulator", "add"),
    ("gradvitals.torch._params", "ParamAccumulator", "on_grad"),
)
#: the entry points that torch or the user call: their sum is gradvitals' own time
ENTRY_POINTS = ("_on_root_forward", "observe_loss", "_on_pre_step", "_on_post_step")


def breakdown_gradvitals(
    w: Workload, device: str, windows: int, warmup: int, **watch_kw: Any
) -> tuple[str, dict[str, Any]]:
    """Inclusive thread CPU time per window of gradvitals' main functions, unprofiled.

    Each method of :data:`BREAKDOWN` is wrapped in a timer (two ``thread_time`` reads,
    about 1 us a call) for ``windows`` windows of a watched run: far less distortion
    than cProfile, which times every Python call. The activation and gradient hooks
    are closures; their work is timed through ``SiteAccumulator.add`` and
    ``ParamAccumulator.on_grad``.
    """
    import importlib

    totals: dict[str, list[float]] = {}
    saved: list[tuple[Any, str, Any]] = []

    def wrap(key: str, fn: Any) -> Any:
        acc = totals.setdefault(key, [0.0, 0.0])

        def timed(*a: Any, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                acc[0] += time.thread_time() - t
                acc[1] += 1

        return timed

    for mod_name, cls_name, meth in BREAKDOWN:
        cls = getattr(importlib.import_module(mod_name), cls_name)
        saved.append((cls, meth, cls.__dict__[meth]))
        setattr(cls, meth, wrap(f"{cls_name}.{meth}", cls.__dict__[meth]))
    try:
        model, data = seeded_setup(w, device)
        opt = torch.optim.SGD(model.parameters(), lr=w.lr, momentum=0.9)
        mode = GradvitalsMode(model, opt, device, **watch_kw)
        run_steps(mode, data, warmup, 0)
        for v in totals.values():
            v[0] = v[1] = 0.0
        n = windows * int(watch_kw.get("every", WINDOW))
        t0 = time.thread_time()
        run_steps(mode, data, n, warmup)
        elapsed = time.thread_time() - t0
        mode.close()
    finally:
        for cls, meth, fn in saved:
            setattr(cls, meth, fn)
    own = sum(totals[f"Monitor.{m}"][0] for m in ENTRY_POINTS)
    hooks = totals["SiteAccumulator.add"][0] + totals["ParamAccumulator.on_grad"][0]
    lines = [
        f"Inclusive thread CPU time of gradvitals' functions over {windows} windows ({n} "
        f"steps) of `watch(model, opt"
        + "".join(f", {k}={v}" for k, v in watch_kw.items())
        + f")` on {w.name}, timing wrappers only (no profiler): the whole run took "
        f"{1e3 * elapsed / n:.3f} ms/step; gradvitals' entry points "
        f"({', '.join(ENTRY_POINTS)}) {1e3 * own / windows:.2f} ms per window, plus "
        f"{1e3 * hooks / windows:.2f} ms in the activation and gradient hooks "
        f"(`SiteAccumulator.add`, `ParamAccumulator.on_grad`).",
        "",
        "| function | calls / window | ms / window (inclusive) | µs / call |",
        "|---|---:|---:|---:|",
    ]
    for key, (secs, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        if calls:
            lines.append(
                f"| `{key}` | {calls / windows:.1f} | {1e3 * secs / windows:.3f} "
                f"| {1e6 * secs / calls:.1f} |"
            )
    data_out = {
        "windows": windows,
        "steps": n,
        "ms_per_step": 1e3 * elapsed / n,
        "entry_points_ms_per_window": 1e3 * own / windows,
        "hooks_ms_per_window": 1e3 * hooks / windows,
        "functions": {k: {"seconds": v[0], "calls": v[1]} for k, v in totals.items()},
    }
    return "\n".join(lines), data_out


def profile_gradvitals(
    w: Workload, device: str, windows: int, warmup: int, top: int, **watch_kw: Any
) -> str:
    """cProfile (on the thread's CPU clock) of ``windows`` windows of a watched run.

    Returns a markdown table of gradvitals' own functions: calls per window, own time
    (``tottime``) and time including callees (``cumtime``) per window, in ms. cProfile
    slows Python code down, so the absolute numbers are inflated; the shares are what
    to read (the unprofiled cost per window is in the overhead table).
    """
    import cProfile
    import pstats

    model, data = seeded_setup(w, device)
    every = int(watch_kw.get("every", WINDOW))
    n = windows * every
    totals = {}
    for watched in (False, True):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=w.lr, momentum=0.9)
        mode = GradvitalsMode(m, opt, device, **watch_kw) if watched else Mode(m, opt, device)
        run_steps(mode, data, warmup, 0)
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        run_steps(mode, data, n, warmup)
        prof.disable()
        mode.close()
        st = pstats.Stats(prof)
        totals[watched] = st.total_tt  # type: ignore[attr-defined]
    total = totals[True]
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if "gradvitals" not in file.replace("\\", "/"):
            continue
        short = file.replace("\\", "/").split("gradvitals/", 1)[-1]
        rows.append((ct, tt, nc, f"{short}:{line} {fn}"))
    rows.sort(reverse=True)
    lines = [
        f"cProfile of {windows} windows ({n} steps) of `watch(model, opt"
        + "".join(f", {k}={v}" for k, v in watch_kw.items())
        + f")` on {w.name}, thread CPU clock, under the profiler: {1e3 * total / n:.3f} "
        f"ms/step watched, {1e3 * totals[False] / n:.3f} unwatched: "
        f"{1e3 * (total - totals[False]) / windows:.2f} ms more per window.",
        "",
        "| function | calls / window | own ms / window | with callees ms / window |",
        "|---|---:|---:|---:|",
    ]
    for ct, tt, nc, name in rows[:top]:
        lines.append(
            f"| `{name}` | {nc / windows:.1f} | {1e3 * tt / windows:.3f} "
            f"| {1e3 * ct / windows:.3f} |"
        )
    return "\n".join(lines)


# -- reporting ---------------------------------------------------------------------------------
def loadavg() -> float | None:
    """The 1-minute load average (None where ``/proc/loadavg`` does not exist)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gradvitals": gradvitals.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in lscpu.splitlines():
            if line.startswith(("Model name", "CPU(s):")):
                k, v = line.split(":", 1)
                env[k.strip()] = v.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        env["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=HERE,
        ).stdout.strip()
    return env


def table(results: dict[str, dict[str, Any]], cuda: bool) -> str:
    first = "GPU" if cuda else "CPU"
    head = (
        f"| model | mode | {first} ms/step | **{first} total ratio** | per-repeat median (IQR) "
        f"| per-repeat min–max | wall ms/step | wall total ratio | wall min–max | attach ms |"
    )
    sep = "|---|---|---:|---:|---|---|---:|---:|---|---:|"
    if cuda:
        head += " host syncs/step |"
        sep += "---:|"
    lines = [head, sep]
    key = "cuda" if cuda else "thread"
    for wname, modes in results.items():
        for name, s in modes.items():
            p, wl = s["clocks"][key], s["clocks"]["wall"]
            row = (
                f"| {wname} | {name} | {p['ms_per_step']:.3f} | **{p['ratio_total']:.3f}** "
                f"| {p['ratio_median']:.3f} ({p['ratio_q1']:.3f}–{p['ratio_q3']:.3f}) "
                f"| {p['ratio_min']:.3f}–{p['ratio_max']:.3f} "
                f"| {wl['ms_per_step']:.3f} | {wl['ratio_total']:.3f} "
                f"| {wl['ratio_min']:.3f}–{wl['ratio_max']:.3f} | {s['setup_ms'][key]:.1f} |"
            )
            if cuda:
                row += f" {s['syncs_per_step']:.2f} |"
            lines.append(row)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--smoke", action="store_true", help="one tiny model, few steps")
    p.add_argument("--full", action="store_true", help="add a larger model")
    p.add_argument("--steps", type=int, help="steps per timed block (multiple of 20)")
    p.add_argument("--repeats", type=int, help="interleaved repeats")
    p.add_argument("--warmup", type=int, help="untimed warm-up steps per mode")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: 1 on CPU, torch's default on CUDA; 0: torch's default)",
    )
    p.add_argument(
        "--only",
        help="comma-separated workload name prefixes to run (e.g. 'mlp'); default all",
    )
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="WINDOWS",
        help="also cProfile this many windows of gradvitals at defaults and every step "
        "on the first workload",
    )
    p.add_argument("--out", help="directory for overhead.json")
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda, but torch.cuda.is_available() is False")
    defaults = (20, 2, 40) if a.smoke else ((100, 5, 100) if cuda else (100, 10, 80))
    a.steps = a.steps or defaults[0]
    a.repeats = a.repeats or defaults[1]
    a.warmup = a.warmup or defaults[2]
    if a.threads is None:
        a.threads = 0 if cuda else 1
    if not cuda and a.threads != 1:
        print(
            "note: with more than one torch thread the thread CPU clock misses the other "
            "threads' work; read the wall-clock columns",
            file=sys.stderr,
        )
    if a.steps % WINDOW:
        p.error(f"--steps must be a multiple of {WINDOW} (one gradvitals window)")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    factories, notes = mode_factories(args.smoke)
    t0 = time.perf_counter()
    load_before = loadavg()
    results: dict[str, dict[str, Any]] = {}
    chosen = workloads(args.device, args.full, args.smoke)
    if args.only:
        prefixes = tuple(s.strip() for s in args.only.split(","))
        chosen = [w for w in chosen if w.name.startswith(prefixes)]
    for w in chosen:
        t = time.perf_counter()
        results[w.name] = bench_workload(
            w, factories, args.device, args.steps, args.repeats, args.warmup
        )
        print(f"[{w.name}: {time.perf_counter() - t:.1f} s]", file=sys.stderr)
    wall = time.perf_counter() - t0
    load_after = loadavg()
    env = environment(args.device)
    env["loadavg_before"], env["loadavg_after"] = load_before, load_after
    cuda = args.device.startswith("cuda")
    primary = "CUDA events" if cuda else "thread CPU time"
    print(f"## Overhead: watched / unwatched total step time ({args.device})")
    print()
    print(
        f"{args.repeats} interleaved repeats; in each, every mode's block of {args.steps} "
        f"steps is timed next to a block of its unwatched twin; total ratio = sum of the "
        f"mode's block times / sum of the twin's (every step, window closes "
        f"included). Clocks: {primary} and wall. {args.warmup} untimed warm-up steps per "
        f"mode. torch {env['torch']}, {env.get('gpu') or env.get('Model name', '?')}, "
        f"{env['threads']} thread(s), load average {load_before} before, {load_after} "
        f"after. Wall time {wall:.0f} s."
    )
    print()
    print(table(results, cuda))
    print()
    for tool, note in notes.items():
        print(f"- {tool}: {note}")
    profiles: dict[str, Any] = {}
    if args.profile and chosen:
        w = chosen[0]
        for label, kw in (("defaults", {}), ("every step", {"every": 1, "samples": 1})):
            windows = args.profile * WINDOW // int(kw.get("every", WINDOW))
            text, data = breakdown_gradvitals(w, args.device, windows, args.warmup, **kw)
            prof = profile_gradvitals(w, args.device, windows, args.warmup, 25, **kw)
            profiles[label] = {"breakdown": data, "breakdown_table": text, "cprofile": prof}
            print()
            print(f"### Where the time goes, {label}")
            print()
            print(text)
            print()
            print(prof)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": vars(args),
            "environment": env,
            "notes": notes,
            "wall_seconds": wall,
            "results": results,
            "profiles": profiles,
        }
        (out / "overhead.json").write_text(json.dumps(payload, indent=1))
        print(f"\nWrote {out / 'overhead.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
