"""Run a test's scenarios on several CPU processes (gloo) and collect their results.

Each rank writes its results to ``rank<k>.json`` and then leaves with ``os._exit(0)``
(:func:`finish_rank`): tearing a gloo process group down at interpreter exit sometimes
aborts the process (``terminate called without an active exception``, SIGABRT) while
the machine is loaded, with or without gradvitals attached (measured on
``examples/ddp.py``'s loop without the monitor: 1 of 20 runs under load). That abort
comes after the rank's work is done and written, so :func:`run_ranks` judges the
ranks by their result files, and by their exit codes only when a file is missing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp


def finish_rank(out: str | Path, rank: int, result: dict[str, Any]) -> None:
    """Write this rank's results, leave the process group and exit at once."""
    path = Path(out, f"rank{rank}.json")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)  # whole or absent, never half written
    if dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(
    worker: Callable[..., None], nprocs: int, args: tuple[Any, ...], out: Path, timeout_s: float
) -> list[dict[str, Any]]:
    """Spawn ``worker(rank, *args)`` on ``nprocs`` processes; their results, by rank.

    Fails the test when a rank wrote no results (its exit code is in the message), when
    the ranks take longer than ``timeout_s``, or when a scenario reported an error.
    """
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    ctx = mp.start_processes(worker, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while any(p.is_alive() for p in ctx.processes):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {nprocs} ranks did not finish within {timeout_s:.0f} s")
        time.sleep(0.2)
    results = []
    for r, p in enumerate(ctx.processes):
        p.join()
        path = out / f"rank{r}.json"
        if not path.exists():
            pytest.fail(f"rank {r} wrote no results (exit code {p.exitcode})")
        results.append(json.loads(path.read_text()))
    for r, res in enumerate(results):
        for name, v in res.items():
            if isinstance(v, dict) and "error" in v:
                pytest.fail(f"rank {r}, scenario {name}:\n{v['error']}")
    return results
