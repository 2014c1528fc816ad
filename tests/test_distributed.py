"""torch.distributed: statistics combined across 2 CPU ranks (gloo), decisions in step.

One spawn of 2 processes runs every scenario (process start-up dominates the cost);
each rank writes what it saw to a JSON file and the tests below compare them.
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import gradvitals
from _ranks import finish_rank, run_ranks
from conftest import THREADS, seeded  # imported in the spawned ranks too: same seeds, threads
from gradvitals.errors import UsageError
from gradvitals.stats import Layout, Reduce
from gradvitals.torch._dist import combine, make_reducer

WORLD = 2
TIMEOUT_S = 50.0


# -- scenarios (run in each rank) -------------------------------------------------------
def _alive_elsewhere(rank: int, log_dir: Path) -> dict[str, Any]:
    """Every hidden unit's input is x[:, 0]: negative on rank 0, positive on rank 1."""

    def build() -> nn.Sequential:
        m = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
        with torch.no_grad():
            m[0].weight.zero_()
            m[0].weight[:, 0] = 1.0
            m[0].bias.zero_()
            m[2].weight.fill_(0.1)
        return m

    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(32, 2, generator=gen)
    x[:, 0] = (x[:, 0].abs() + 0.1) * (-1.0 if rank == 0 else 1.0)
    y = torch.ones(32, 1)

    def train(model: nn.Module, opt: torch.optim.Optimizer, mon: Any) -> float:
        g = float("nan")
        for _ in range(11):  # windows of 1, 2, 4, 4 steps
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            first = build_first(model)
            grads = [first.weight.grad, first.bias.grad]
            g = float(torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in grads])))
            opt.step()
            mon.observe_loss(loss)
        mon.close()
        return g

    def build_first(model: nn.Module) -> nn.Linear:
        inner = model.module if isinstance(model, DDP) else model
        return inner[0]

    # the same rank's data alone: every unit is dead (the control)
    local = build()
    opt = torch.optim.SGD(local.parameters(), lr=0.0)  # weights fixed: exact norms
    solo = gradvitals.watch(local, opt, every=4, distributed=False, console=False, lint=False)
    train(local, opt, solo)

    inner = build()
    ddp = DDP(inner)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.0)
    mon = gradvitals.watch(ddp, opt, every=4, log_dir=str(log_dir / f"rank{rank}"))
    reduced_grad = train(ddp, opt, mon)
    last = [rec for rec in mon.history if rec.sites][-1]
    return {
        "solo_kinds": [f.kind.value for f in solo.findings],
        "kinds": [f.kind.value for f in mon.findings],
        "layer_names": list(last.layers),
        "site_names": list(last.sites),
        "dead_fraction": last.sites["1"].dead_fraction,
        "n_examples": last.sites["1"].n_examples,
        "grad_norm_seen": last.layers["0"].grad_norm,
        "grad_norm_reduced": reduced_grad,
        "loss_count": sum(rec.loss.count for rec in mon.history if rec.loss),
        "main": mon.is_main_process,
    }


def _dying(rank: int, repair: bool = False) -> dict[str, Any]:
    """Adam at lr=1 kills a ReLU layer within a few windows (seeded, per-rank data)."""
    torch.manual_seed(0)
    inner = nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
    )
    ddp = DDP(inner)
    torch.manual_seed(1000 + rank)  # per-rank global RNG, as data pipelines often have
    opt = torch.optim.Adam(ddp.parameters(), lr=1.0)
    kw: dict[str, Any] = {"repair": True} if repair else {}
    mon = gradvitals.watch(ddp, opt, every=4, **kw)
    gen = torch.Generator().manual_seed(seeded(100 + rank))
    w = torch.randn(8, 1, generator=torch.Generator().manual_seed(seeded(7)))
    for _ in range(30):
        x = torch.randn(32, 8, generator=gen)
        loss = (ddp(x) - (x @ w * 10 + 5)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    flat = torch.cat([p.detach().reshape(-1) for p in inner.parameters()])
    every = [torch.empty_like(flat) for _ in range(WORLD)]
    dist.all_gather(every, flat)
    return {
        "findings": [
            {k: v for k, v in f.to_dict().items() if k != "remedies"} for f in mon.findings
        ],
        "repairs": [r["action"] for r in mon.repairs],
        "weights_equal": all(torch.equal(every[0], t) for t in every),
    }


def _reducer(rank: int) -> dict[str, Any]:
    """Sharded squared norms add; mismatched layouts are refused."""
    full = torch.arange(1.0, 7.0, dtype=torch.float64)  # one layer's weights, 2 shards
    shard = full[rank * 3 : rank * 3 + 3]
    layout = Layout(sites=(), n_layers=1)  # grad_sq_sum first, loss_sum after the layers
    flat = torch.zeros(layout.size, dtype=torch.float64)
    flat[0] = shard.square().sum()
    flat[4] = 1.0 + rank
    out = make_reducer(sharded=True)(flat, layout)
    bad = Layout(sites=(("act", 1 + rank),), n_layers=0)  # rank 1 packs one more unit
    try:  # must raise on both ranks, not abort inside gloo
        make_reducer()(torch.zeros(bad.size, dtype=torch.float64), bad)
        mismatch = "no error"
    except UsageError as e:
        mismatch = str(e)
    return {
        "sharded_norm": float(out[0].sqrt()),
        "full_norm": float(torch.linalg.vector_norm(full)),
        "sum": float(out[4]),
        "mismatch": mismatch,
    }


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(THREADS)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logging.getLogger("gradvitals").addHandler(Keep(logging.WARNING))
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=30),
    )
    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "alive_elsewhere": lambda: _alive_elsewhere(rank, Path(out)),
        "dying": lambda: _dying(rank),
        "reducer": lambda: _reducer(rank),
    }
    if importlib.util.find_spec("gradvitals.torch._repair") is not None:
        scenarios["repair"] = lambda: _dying(rank, repair=True)
    result: dict[str, Any] = {}
    for name, fn in scenarios.items():
        records.clear()
        try:
            result[name] = fn()
        except Exception:
            result[name] = {"error": traceback.format_exc()}
        result[name]["logged"] = len(records)
    finish_rank(out, rank, result)


# -- the spawn, once per module ---------------------------------------------------------
@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("dist")
    # a file rendezvous: no free port to pick and then lose to another process before
    # rank 0 binds it
    results = run_ranks(_worker, WORLD, (str(out / "rendezvous"), str(out)), out, TIMEOUT_S)
    results[0]["log_dir"] = str(out)
    return results


def test_unit_alive_on_another_rank_is_not_dead(ranks: list[dict[str, Any]]) -> None:
    r0, r1 = (r["alive_elsewhere"] for r in ranks)
    assert "dying_relu" in r0["solo_kinds"]  # the control: rank 0's data alone kills it
    # lr=0 keeps the weights fixed (exact norms), which the stalled detector rightly
    # reports on both ranks; no dead unit is
    assert r0["kinds"] == r1["kinds"] == ["stalled"]
    assert r0["dead_fraction"] == r1["dead_fraction"] == 0.0
    assert r0["n_examples"] == r1["n_examples"] == 2 * 2 * 32  # 2 samples x 2 ranks
    assert r0["loss_count"] == r1["loss_count"] == WORLD * 11


def test_layer_names_lose_the_ddp_prefix(ranks: list[dict[str, Any]]) -> None:
    r0 = ranks[0]["alive_elsewhere"]
    assert r0["layer_names"] == ["0", "2"]
    assert r0["site_names"] == ["1"]


def test_gradients_are_read_after_the_all_reduce(ranks: list[dict[str, Any]]) -> None:
    # rank 0's first layer gets no local gradient (its units are dead there); what the
    # monitor saw is the DDP-averaged gradient, the same on both ranks
    r0, r1 = (r["alive_elsewhere"] for r in ranks)
    assert r0["grad_norm_seen"] > 0
    assert r0["grad_norm_seen"] == pytest.approx(r0["grad_norm_reduced"], rel=1e-5)
    assert r0["grad_norm_seen"] == r1["grad_norm_seen"]


def test_a_dying_run_is_found_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    def flat(fs: list[dict[str, Any]]) -> list[dict[str, Any]]:  # roots and consequences
        return [g for f in fs for g in [f, *flat(f.get("consequences", []))]]

    kinds = [{f["kind"] for f in flat(r["dying"]["findings"])} for r in ranks]
    assert all("dying_relu" in k for k in kinds)


def test_findings_are_identical_across_ranks(ranks: list[dict[str, Any]]) -> None:
    assert ranks[0]["dying"]["findings"]
    assert ranks[0]["dying"]["findings"] == ranks[1]["dying"]["findings"]


def test_weights_stay_identical_after_a_repair(ranks: list[dict[str, Any]]) -> None:
    if "repair" not in ranks[0]:
        pytest.skip("gradvitals.torch._repair is not there yet")
    r0, r1 = (r["repair"] for r in ranks)
    assert r0["findings"] == r1["findings"]
    assert r0["repairs"] and r0["repairs"] == r1["repairs"]
    assert r0["weights_equal"] and r1["weights_equal"]


def test_only_rank_0_logs(ranks: list[dict[str, Any]]) -> None:
    assert ranks[0]["dying"]["logged"] > 0
    assert ranks[1]["dying"]["logged"] == 0
    assert ranks[0]["alive_elsewhere"]["main"] and not ranks[1]["alive_elsewhere"]["main"]
    out = Path(ranks[0]["log_dir"])
    assert any((out / "rank0").iterdir())
    assert not (out / "rank1").exists()


def test_sharded_squared_norms_add_exactly(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        red = r["reducer"]
        assert red["sharded_norm"] == pytest.approx(red["full_norm"])
        assert red["sum"] == 3.0
        assert "different activation sites or layers" in red["mismatch"]


def test_combine_by_segment() -> None:
    gathered = torch.tensor(
        [[1.0, 0.0, 1.0, 5.0, 3.0], [2.0, 1.0, 0.0, -1.0, 4.0]], dtype=torch.float64
    )
    codes = torch.tensor([Reduce.SUM, Reduce.MAX, Reduce.MAX, Reduce.MIN, Reduce.PARAM_SUM])
    assert combine(gathered, codes).tolist() == [3.0, 1.0, 1.0, -1.0, 3.0]
    assert combine(gathered, codes, sharded=True)[-1].item() == pytest.approx(7.0)
