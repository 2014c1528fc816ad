"""Peak extra memory of watching a model, against the model's size.

Method
------
- **Models**: a stack of ``Linear(d, d) + ReLU`` blocks, trained with Adam on random
  batches (``--batch`` rows), from about 1M to 100M parameters by default
  (``--sizes``; 100M parameters with Adam and gradients is about 1.6 GB).
- **Runs** (each on its own fresh model and optimizer, from the same state): one
  untimed step to create Adam's state, gradients set to ``None``, then ``--steps``
  steps measured. *Unwatched*: the plain step. *Watched*: ``gradvitals.watch(model,
  opt, every=--every, samples=--samples, console=False)`` (repair off) called at the
  start of the measurement, plus ``observe_loss`` each step and ``close()`` at the end,
  so every byte gradvitals keeps or allocates, at attach or on sampled steps, falls
  inside the measurement. The warm-up makes the first steps sampled.
- ``--repair``: the watched run has ``repair=True`` with
  ``RepairPolicy(offload_to_cpu=True)``: the healthy snapshot (taken at attach and
  after each clean window: a copy of the weights and of Adam's two moments, about 3x
  the parameter bytes) then falls inside the measurement too. Its size as the
  snapshot reports it (``Snapshot.nbytes``) is shown beside the measured extra.
- **Peak**: the highest number of live tensor bytes allocated since the measurement
  started, over the measured steps. *Extra* = peak(watched) - peak(unwatched), the
  memory a user must budget for watching; reported per byte of parameters.
- **How the bytes are counted.**

  - ``cuda``: ``torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()``
    measured from the start (after ``reset_peak_memory_stats``).
  - ``cpu``: ``tracemalloc`` sees no tensor (their storage is allocated in C++), and
    the process RSS is blurred by ``malloc`` keeping freed pages and by everything
    else in the process. Instead the measured steps run under
    ``torch.profiler.profile(profile_memory=True)``: PyTorch's CPU allocator then
    reports every tensor allocation and free (``[memory]`` events with the address
    and the bytes). Replaying them in time order, counting the blocks allocated
    inside the measurement until they are freed, gives the peak of live tensor bytes
    allocated since the start: the CUDA measure, on the CPU. Memory that is not a torch tensor
    (numpy host copies of a window, Python objects) is not counted; for gradvitals
    those are a few kilobytes per window.

Usage::

    python benchmarks/memory.py                   # CPU, 1M / 10M / 100M parameters, ~1-2 min
    python benchmarks/memory.py --repair          # the same with repair on (the snapshot)
    python benchmarks/memory.py --smoke           # one tiny model, seconds
    python benchmarks/memory.py --device cuda --sizes 1e6,1e8,1e9
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import gradvitals
from gradvitals import RepairPolicy

DEFAULT_SIZES = (1e6, 1e7, 1e8)
SMOKE_SIZES = (2e4,)


@dataclass
class Result:
    """One model size: its shape and the peaks, in bytes."""

    params: int
    width: int
    depth: int
    param_bytes: int
    peak_unwatched: int
    peak_watched: int
    snapshot_bytes: int = 0
    findings: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()

    @property
    def extra(self) -> int:
        return self.peak_watched - self.peak_unwatched

    @property
    def extra_per_param_byte(self) -> float:
        return self.extra / self.param_bytes


def shape_for(params: float) -> tuple[int, int]:
    r"""``(width, depth)`` of a Linear stack with about ``params`` parameters.

    The width is the power of two nearest to :math:`\sqrt{P / 16}` (16 to 4096), the
    depth makes up the rest (at least 2 blocks).

    >>> shape_for(1e6), shape_for(1e7), shape_for(1e8)
    ((256, 15), (1024, 10), (2048, 24))
    """
    width = 2 ** round(math.log2(math.sqrt(params / 16)))
    width = min(4096, max(16, width))
    depth = max(2, round(params / (width * width + width)))
    return width, depth


def make_model(
    width: int, depth: int, device: torch.device, init: str = "default"
) -> nn.Sequential:
    """``depth`` blocks of ``Linear(width, width) + ReLU``; ``init="he"`` He-initialises
    the weights (PyTorch's default init shrinks the signal layer by layer, and a deep
    stack then has really vanishing gradients, which a watched run reports)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        if init == "he":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers).to(device)


#: what the last watched measurement found and repaired (findings change nothing in
#: memory; a repair that changes the model, e.g. inserts norms, re-allocates the snapshot)
LAST_RUN: dict[str, list[str]] = {}


@contextmanager
def peak_meter(device: torch.device) -> Iterator[Callable[[], int]]:
    """Measure the peak of live tensor bytes allocated inside the block.

    Yields a function that returns the peak once the block has exited.
    """
    box: dict[str, int] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield lambda: box["peak"]
        torch.cuda.synchronize(device)
        box["peak"] = torch.cuda.max_memory_allocated(device) - start
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        yield lambda: box["peak"]
    box["peak"] = _cpu_peak(prof)


def _cpu_peak(prof: Any) -> int:
    """The peak of live CPU tensor bytes allocated during the profile.

    Replays the ``[memory]`` events (``Bytes`` > 0: an allocation at ``Addr``, < 0: a
    free) in time order, counting only blocks allocated inside this profile: the
    allocator's own *Total Allocated* keeps blocks of earlier profiles in the same
    process, so it is not used.
    """
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as fh:
            trace = json.load(fh)
    events = [
        ev
        for ev in trace.get("traceEvents", [])
        if ev.get("name") == "[memory]" and ev.get("args", {}).get("Device Type", 0) == 0
    ]
    events.sort(key=lambda ev: (ev.get("ts", 0), ev["args"].get("Ev Idx", 0)))
    alive: dict[int, int] = {}
    live = peak = 0
    for ev in events:
        addr, n = ev["args"]["Addr"], int(ev["args"]["Bytes"])
        if n > 0:
            alive[addr] = n
            live += n
            peak = max(peak, live)
        elif addr in alive:
            live -= alive.pop(addr)
    return peak


def measure(
    width: int, depth: int, *, watched: bool, args: argparse.Namespace, device: torch.device
) -> tuple[int, int]:
    """Peak extra bytes of ``--steps`` training steps, watched or not, and the bytes of
    the repair snapshot (0 without ``--repair``)."""
    torch.manual_seed(0)
    model = make_model(width, depth, device, args.init)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, width, device=device)

    def step(monitor: Any = None) -> None:
        opt.zero_grad(set_to_none=True)
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.observe_loss(loss)

    step()  # Adam's state exists before the measurement, as in a running job
    opt.zero_grad(set_to_none=True)
    gc.collect()
    snapshot = 0
    seen: dict[str, list[str]] = {"findings": [], "repairs": []}
    with peak_meter(device) as peak:
        monitor = None
        if watched:
            kw: dict[str, Any] = {}
            if args.repair:
                kw = {"repair": True, "policy": RepairPolicy(offload_to_cpu=True)}
            monitor = gradvitals.watch(
                model, opt, every=args.every, samples=args.samples, console=False, **kw
            )
        for _ in range(args.steps):
            step(monitor)
        if monitor is not None:
            if args.repair:
                host: Any = getattr(monitor.session.repair, "host", None)
                snapshot = int(host.snapshot.nbytes) if host is not None else 0
            monitor.close()
            assert monitor.history, "no window was closed: measure more steps"
            seen["findings"] = [f"{f.kind.value}@{f.step}" for f in monitor.findings]
            seen["repairs"] = [f"{r['action']}@{r['step']}" for r in monitor.repairs]
        del monitor
    LAST_RUN.clear()
    LAST_RUN.update(seen)
    return peak(), snapshot


def run(args: argparse.Namespace) -> list[Result]:
    device = torch.device(args.device)
    sizes = SMOKE_SIZES if args.smoke else tuple(float(s) for s in args.sizes.split(","))
    results = []
    for size in sizes:
        width, depth = shape_for(size)
        params = depth * (width * width + width)
        t0 = time.perf_counter()
        peaks = []
        for watch_it in (False, True):
            peaks.append(measure(width, depth, watched=watch_it, args=args, device=device))
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        (plain, _), (watched, snapshot) = peaks
        results.append(
            Result(
                params,
                width,
                depth,
                params * 4,
                plain,
                watched,
                snapshot,
                tuple(LAST_RUN.get("findings", ())),
                tuple(LAST_RUN.get("repairs", ())),
            )
        )
        print(
            f"  {params / 1e6:.2f}M parameters: {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    return results


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def table(results: list[Result], args: argparse.Namespace) -> str:
    repair = "repair on, RepairPolicy(offload_to_cpu=True)" if args.repair else "repair off"
    lines = [
        f"Peak extra memory of `gradvitals.watch` (every={args.every}, samples={args.samples}, "
        f"{repair}), {args.steps} Adam steps, batch {args.batch}, {args.init} init, "
        f"device {args.device}, "
        f"torch {torch.__version__}, {platform.machine()}.",
        "",
        "Peaks are of tensor memory allocated during the steps, above the model and "
        "Adam's state already resident.",
        "",
        "| parameters | width x depth | parameter MiB | step peak unwatched MiB "
        "| step peak watched MiB | extra MiB | extra / parameter bytes |"
        + (" snapshot MiB (nbytes) | snapshot / parameter bytes |" if args.repair else ""),
        "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.repair else ""),
    ]
    for r in results:
        row = (
            f"| {r.params / 1e6:,.2f}M | {r.width} x {r.depth} | {_mb(r.param_bytes)} "
            f"| {_mb(r.peak_unwatched)} | {_mb(r.peak_watched)} | {_mb(r.extra)} "
            f"| {100 * r.extra_per_param_byte:.1f}% |"
        )
        if args.repair:
            row += f" {_mb(r.snapshot_bytes)} | {100 * r.snapshot_bytes / r.param_bytes:.0f}% |"
        lines.append(row)
    notes = [
        f"- {r.params / 1e6:,.2f}M: findings {', '.join(r.findings) or 'none'}; "
        f"repairs {', '.join(r.repairs) or 'none'}"
        for r in results
        if r.findings or r.repairs
    ]
    if notes:
        lines += ["", "During the watched measurement:", *notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument(
        "--sizes",
        default=",".join(f"{s:g}" for s in DEFAULT_SIZES),
        help="comma-separated parameter counts (default 1e6,1e7,1e8)",
    )
    p.add_argument("--steps", type=int, default=4, help="measured steps (default 4)")
    p.add_argument("--batch", type=int, default=8, help="rows per batch (default 8)")
    p.add_argument("--every", type=int, default=20, help="watch(every=...) (default 20)")
    p.add_argument("--samples", type=int, default=2, help="watch(samples=...) (default 2)")
    p.add_argument("--smoke", action="store_true", help="one tiny model, seconds")
    p.add_argument(
        "--init",
        choices=("default", "he"),
        default="default",
        help="weight init of the Linear stack (default: PyTorch's)",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="watch with repair=True, RepairPolicy(offload_to_cpu=True): the snapshot counts",
    )
    p.add_argument("--out", type=Path, help="also write DIR/memory.json")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps = min(args.steps, 3)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda needs a CUDA build of torch and a GPU; use --device cpu")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = run(args)
    print(table(results, args))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        data = {
            "device": args.device,
            "torch": torch.__version__,
            "gradvitals": gradvitals.__version__,
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "results": [
                {**asdict(r), "extra": r.extra, "extra_per_param_byte": r.extra_per_param_byte}
                for r in results
            ],
        }
        (args.out / "memory.json").write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
