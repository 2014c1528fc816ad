"""gradvitals under DistributedDataParallel: an exploding run whose ReLUs die, on every rank.

    torchrun --nproc_per_node=2 examples/ddp.py      # 2 CPU processes (gloo), ~10 s

Each rank trains on its own data shard. The monitor combines each window's
statistics across ranks (a unit is dead only if it is dead on every rank's data), so
all ranks reach the same findings; only rank 0 prints them. Run without torchrun it
trains in one process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import gradvitals


def main() -> None:
    distributed = "RANK" in os.environ  # set by torchrun
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    torch.set_num_threads(1)

    torch.manual_seed(0)  # the same initial weights on every rank (DDP checks)
    model = nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
    )
    ddp = DDP(model) if distributed else model
    opt = torch.optim.Adam(ddp.parameters(), lr=1.0)  # far too high: it explodes, ReLUs die

    monitor = gradvitals.watch(ddp, opt, every=4)  # detects torch.distributed by itself
    data = torch.Generator().manual_seed(100 + rank)  # this rank's shard
    w = torch.randn(8, 1, generator=torch.Generator().manual_seed(7))
    for _ in range(40):
        x = torch.randn(32, 8, generator=data)
        loss = (ddp(x) - (x @ w * 10 + 5)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.observe_loss(loss)
    monitor.close()  # every rank: the last window is combined across ranks too

    # the root findings and what they caused (nested under them)
    found = sorted({(g.kind.value, g.layer or "") for f in monitor.findings for g in f.walk()})
    print(f"rank {rank}: {found}", flush=True)  # the same on every rank
    if rank == 0:
        print(monitor.report())
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
