"""How fast ``gradvitals report`` reads a log: MB/s of ``read_run`` on a synthetic log.

Writes a log of a GPT-2-small-shaped model (12 blocks: 76 layers with parameters, 12
ReLU activation sites; about 180 statistics, 8 KB, per window, plus a finding and its
remedies every 500 windows) with the real :class:`~gradvitals.report.TensorBoardSink`,
then times reading it back:

- ``framing``: walking the records and checking their CRC-32Cs, no decoding;
- ``read_run``: the whole reader (framing, decoding, findings, NaN marking), with
  checksums verified (the default) and with ``--no-verify``;
- ``gradvitals report``: reading plus the figures and the page (the figures
  summarise long runs, so their cost grows slowly with the log);
- ``read_run, pure-Python CRC``: the fallback when no C CRC-32C is installed, on a
  separate ``--pure-mb`` MB log (it runs at a few MB/s).

The file stays in the page cache after writing, so these are warm-cache numbers (a
cold read adds the disk's own speed). The sink's checksum is swapped for the C one
while writing, or writing 1 GB would take minutes.

Usage::

    python benchmarks/report_read.py            # 200 MB log in /tmp
    python benchmarks/report_read.py --full     # 1 GB
    python benchmarks/report_read.py --size-mb 2 --pure-mb 0.3 --no-page  # seconds (a test runs it)
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from gradvitals.findings import FailureMode, Finding
from gradvitals.remedies import remedies_for
from gradvitals.report import TensorBoardSink, _records, read_run, write_report
from gradvitals.stats import LayerStats, LossStats, SiteStats, WindowRecord

BLOCK_LAYERS = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
UNITS = 64


def layer_names(blocks: int = 12) -> list[str]:
    names = ["transformer.wte", "transformer.wpe"]
    for b in range(blocks):
        names += [f"transformer.h.{b}.{m}" for m in BLOCK_LAYERS]
    return [*names, "transformer.ln_f", "lm_head"]


def window(index: int, every: int, rng: np.random.Generator, blocks: int = 12) -> WindowRecord:
    """One window of a healthy-looking run: statistics jitter around typical values."""
    sites = {}
    for b in range(blocks):
        name = f"transformer.h.{b}.mlp.act"
        ever = rng.random(UNITS) > 0.02
        sites[name] = SiteStats(
            name,
            "relu",
            units=UNITS,
            n_examples=64,
            n_elements=64 * UNITS,
            n_zero=int(64 * UNITS * rng.uniform(0.5, 0.7)),
            ever_positive=ever,
        )
    layers = {
        name: LayerStats(
            name,
            grad_norm=float(rng.lognormal(-2, 0.3)),
            weight_norm=10.0,
            update_norm=float(rng.lognormal(np.log(1e-2), 0.2)),
            numel=4096,
            n_samples=2,
        )
        for name in layer_names(blocks)
    }
    loss = 3.0 / (1 + index / 1000)
    return WindowRecord(
        index=index,
        step_start=index * every + 1,
        step_end=(index + 1) * every,
        sites=sites,
        layers=layers,
        loss=LossStats(sum=loss * every, count=every, min=loss, max=loss),
    )


def write_log(log_dir: Path, size_mb: float, every: int = 20, seed: int = 0) -> tuple[int, int]:
    """Write windows with TensorBoardSink until the event file reaches ``size_mb``.

    Returns ``(windows, bytes)``.
    """
    from tensorboard.summary.writer import record_writer

    rng = np.random.default_rng(seed)
    target = int(size_mb * 1e6)
    saved = record_writer.masked_crc32c
    record_writer.masked_crc32c = _records.masked_crc32c  # C speed while writing
    try:
        with TensorBoardSink(
            log_dir, run_info={"model": "gpt2-small-shaped", "every": every}
        ) as sink:
            n = 0
            while sink.path.stat().st_size < target:
                rec = window(n, every, rng)
                findings = []
                if n % 500 == 499:
                    findings = [
                        Finding(
                            FailureMode.DYING_RELU,
                            "transformer.h.3.mlp.act",
                            rec.step,
                            "40% of units dead for 3 windows",
                            evidence={"dead_fraction": 0.4},
                            remedies=remedies_for(FailureMode.DYING_RELU),
                        )
                    ]
                sink.write_window(rec, findings)
                n += 1
            sink.write_final([])
            size = sink.path.stat().st_size
    finally:
        record_writer.masked_crc32c = saved
    return n, size


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, float]:
    """The best wall time and the best CPU time (this process) of ``repeat`` calls, in
    seconds. On a shared machine the CPU time is the steadier of the two."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200.0, help="log size (default 200)")
    parser.add_argument("--full", action="store_true", help="a 1 GB log (same as --size-mb 1000)")
    parser.add_argument(
        "--pure-mb", type=float, default=20.0, help="log size for the pure-Python CRC timing"
    )
    parser.add_argument("--repeat", type=int, default=2, help="timings per case; the best is kept")
    parser.add_argument("--dir", default=None, help="where to write the logs (default: under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the logs afterwards")
    parser.add_argument("--no-page", action="store_true", help="skip the end-to-end report")
    args = parser.parse_args(argv)
    size_mb = 1000.0 if args.full else args.size_mb

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="gv-report-read-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        windows, size = write_log(root / "big", size_mb)
        write_s = time.perf_counter() - t0
        (event,) = (root / "big").glob("events.out.tfevents.*")
        mb = size / 1e6
        print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        print(f"CRC-32C: {_records.crc_implementation()}")
        print(f"log: {mb:.0f} MB, {windows} windows, written in {write_s:.1f}s ({root})")
        print()
        print("| case | wall s | MB/s | CPU s | MB/s of CPU |")
        print("|---|---|---|---|---|")

        def row(name: str, times: tuple[float, float], megabytes: float = mb) -> None:
            wall, cpu = times
            print(
                f"| {name} | {wall:.2f} | {megabytes / wall:.0f} | {cpu:.2f} | "
                f"{megabytes / max(cpu, 1e-9):.0f} |",
                flush=True,
            )

        row("framing + CRC", timed(lambda: _records.check_event_file(event), args.repeat))
        row(
            "framing, no CRC",
            timed(lambda: sum(1 for _ in _records.iter_records(event, verify=False)), args.repeat),
        )
        run = None

        def read(verify: bool) -> None:
            nonlocal run
            run = read_run(root / "big", verify=verify)

        row("read_run (verify)", timed(lambda: read(True), args.repeat))
        row("read_run --no-verify", timed(lambda: read(False), args.repeat))
        assert run is not None and len(run.steps()) == windows, "every window read back"
        if not args.no_page:
            out = root / "report.html"
            row(
                "gradvitals report (read + figures + HTML)",
                timed(lambda: write_report(root / "big", out)),
            )

        small_windows, small = write_log(root / "small", args.pure_mb)
        stub = importlib.import_module("tensorboard.compat.tensorflow_stub.pywrap_tensorflow")
        with mock.patch.object(_records, "_crc32c", lambda: (stub.crc32c, "pure Python")):
            row(
                f"read_run (verify), pure-Python CRC, {small / 1e6:.1f} MB",
                timed(lambda: read_run(root / "small"), 1),
                small / 1e6,
            )
        assert small_windows > 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
