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
- **Interleaved repeats.** After an untimed warm-up of every mode (past gradvitals'
  warm-up windows of 1, 2, 4... steps), each repeat times one block of ``--steps``
  steps per mode, the mode order rotating by one each repeat. A block is a multiple of
  20 steps, so every block holds the same number of gradvitals-sampled steps.
- **Ratios are paired:** watched/unwatched ms per step within the same repeat, then
  the median, inter-quartile range and min-max over repeats.
- **Timing.** CPU: one torch thread and the thread's CPU time (``time.thread_time``)
  around each block, so that other processes on a shared machine do not count
  (``--clock wall --threads 0`` for wall time with torch's threads). CUDA: ``torch.cuda.Event``
  records at the block's start and end and one ``synchronize()`` after it; nothing
  else synchronizes inside the timed region except what a tool does itself (which is
  what is being measured). On CUDA a separate untimed pass counts each tool's host
  syncs with ``torch.cuda.set_sync_debug_mode("warn")``.
- **Data** is a pool of 4 random batches already on the device (no loader cost, which
  makes the ratio an upper bound for real input pipelines).

Usage::

    python benchmarks/overhead.py                       # CPU: MLP and small CNN, ~2-3 min
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
    def __init__(self, model: nn.Module, opt: Any, device: str, **kw: Any) -> None:
        super().__init__(model, opt, device)
        self.name = "gradvitals" if not kw else "gradvitals_every1"
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
        "gradvitals_every1": lambda m, o, d: GradvitalsMode(m, o, d, every=1, samples=1),
    }
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
class Timer:
    """CUDA events on a GPU; on CPU the thread's CPU time (``clock="thread"``) or wall time.

    Thread CPU time counts only this thread's work, so other processes on a shared
    machine do not inflate a block; with one torch thread all of the step's work
    (forward, autograd, optimizer and every tool's hooks) runs on this thread.
    """

    def __init__(self, device: str, clock: str) -> None:
        self.cuda = device.startswith("cuda")
        self.now = time.thread_time if clock == "thread" else time.perf_counter

    def start(self) -> Any:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return self.now()

    def stop(self, start: Any) -> float:
        """Milliseconds since ``start``; on CUDA the one sync of the block."""
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        return (self.now() - start) * 1e3


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


def bench_workload(
    w: Workload,
    factories: dict[str, Callable[..., Mode]],
    device: str,
    steps: int,
    repeats: int,
    warmup: int,
    clock: str = "wall",
) -> dict[str, Any]:
    torch.manual_seed(0)
    base = w.build().to(device)
    gen = torch.Generator(device="cpu").manual_seed(1)
    data = [
        (
            torch.randn(w.batch, *w.input_shape, generator=gen).to(device),
            torch.randint(0, 10, (w.batch,), generator=gen).to(device),
        )
        for _ in range(4)
    ]
    modes: dict[str, Mode] = {}
    for name, make in factories.items():
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=w.lr, momentum=0.9)
        modes[name] = make(model, opt, device)
    timer = Timer(device, clock)
    pos = dict.fromkeys(modes, 0)
    for name, mode in modes.items():  # untimed warm-up (kernels, allocator, watch warm-up)
        run_steps(mode, data, warmup, pos[name])
        pos[name] += warmup
    syncs: dict[str, float] = {}
    if timer.cuda:
        for name, mode in modes.items():
            n = 2 * WINDOW
            syncs[name] = count_syncs(mode, data, n, pos[name]) / n
            pos[name] += n
    names = list(modes)
    ms: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t = timer.start()
            run_steps(modes[name], data, steps, pos[name])
            ms[name].append(timer.stop(t) / steps)
            pos[name] += steps
    extra = {name: mode.close() for name, mode in modes.items()}
    out: dict[str, Any] = {}
    for name in names:
        ratios = sorted(a / b for a, b in zip(ms[name], ms["none"], strict=True))
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        out[name] = {
            "ms_per_step": ms[name],
            "ms_median": statistics.median(ms[name]),
            "ratio_median": statistics.median(ratios),
            "ratio_q1": q[0],
            "ratio_q3": q[2],
            "ratio_min": ratios[0],
            "ratio_max": ratios[-1],
            "syncs_per_step": syncs.get(name),
            "info": extra[name],
        }
    return out


# -- reporting ---------------------------------------------------------------------------------
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
    head = "| model | mode | ms/step | ratio (median) | IQR | min–max |"
    sep = "|---|---|---:|---:|---|---|"
    if cuda:
        head += " host syncs/step |"
        sep += "---:|"
    lines = [head, sep]
    for wname, modes in results.items():
        for name, s in modes.items():
            row = (
                f"| {wname} | {name} | {s['ms_median']:.3f} | {s['ratio_median']:.3f} "
                f"| {s['ratio_q1']:.3f}–{s['ratio_q3']:.3f} "
                f"| {s['ratio_min']:.3f}–{s['ratio_max']:.3f} |"
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
        "--clock",
        choices=("thread", "wall"),
        help="CPU timer: thread CPU time (default with 1 thread) or wall time",
    )
    p.add_argument("--out", help="directory for overhead.json")
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda, but torch.cuda.is_available() is False")
    defaults = (20, 2, 40) if a.smoke else ((100, 5, 100) if cuda else (100, 7, 80))
    a.steps = a.steps or defaults[0]
    a.repeats = a.repeats or defaults[1]
    a.warmup = a.warmup or defaults[2]
    if a.threads is None:
        a.threads = 0 if cuda else 1
    if cuda:
        a.clock = "cuda-events"
    elif a.clock is None:
        a.clock = "thread" if a.threads == 1 else "wall"
    elif a.clock == "thread" and a.threads != 1:
        p.error("--clock thread needs --threads 1 (other threads' work would not be counted)")
    if a.steps % WINDOW:
        p.error(f"--steps must be a multiple of {WINDOW} (one gradvitals window)")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    factories, notes = mode_factories(args.smoke)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for w in workloads(args.device, args.full, args.smoke):
        t = time.perf_counter()
        results[w.name] = bench_workload(
            w, factories, args.device, args.steps, args.repeats, args.warmup, args.clock
        )
        print(f"[{w.name}: {time.perf_counter() - t:.1f} s]", file=sys.stderr)
    wall = time.perf_counter() - t0
    env = environment(args.device)
    cuda = args.device.startswith("cuda")
    print(f"## Overhead: watched / unwatched step time ({args.device})")
    print()
    print(
        f"{args.repeats} interleaved repeats of {args.steps} steps per mode after {args.warmup} "
        f"warm-up steps; ratio = mode / none within a repeat; clock: {args.clock}. "
        f"torch {env['torch']}, {env.get('gpu') or env.get('Model name', '?')}, "
        f"{env['threads']} thread(s). Wall time {wall:.0f} s."
    )
    print()
    print(table(results, cuda))
    print()
    for tool, note in notes.items():
        print(f"- {tool}: {note}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": vars(args),
            "environment": env,
            "notes": notes,
            "wall_seconds": wall,
            "results": results,
        }
        (out / "overhead.json").write_text(json.dumps(payload, indent=1))
        print(f"\nWrote {out / 'overhead.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
