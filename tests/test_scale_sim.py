"""A simulated 64-rank window: the distributed combine is exact (docs/scale-out.md).

Each fake rank folds its own shard of the data into the monitor's own accumulators
(``SiteAccumulator``, ``ParamAccumulator``, the loss packer), packs a window in
``Layout`` order, and the ranks' rows are combined by the monitor's reducer
(``make_reducer`` with a stand-in for the two collectives), by
``gradvitals.torch._dist.combine`` and by ``gradvitals.stats.combine_rows``. The result
must equal the statistics of one process that saw all the data: dead masks, counts,
minima, squared norms (added over FSDP-style shards, taken once when replicated as
under DDP), and the loss. Ranks hold different numbers of examples.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from gradvitals.stats import (
    LayerInfo,
    Layout,
    Reduce,
    SiteInfo,
    WindowRecord,
    assemble_record,
    combine_rows,
)
from gradvitals.torch import _dist
from gradvitals.torch._batch import BatchAccumulator
from gradvitals.torch._monitor import _pack_loss
from gradvitals.torch._params import LayerTable, ParamAccumulator
from gradvitals.torch._sites import SiteAccumulator

R = 64  # ranks
STEPS = 2  # sampled steps in the window
UNITS = 48  # relu units of mlp.act
#: sites as the monitor names them: (name, activation, role, conv_like)
SITES = (
    ("fc1", "input", "input", False),
    ("mlp.act", "relu", "output", False),
    ("gate", "sigmoid", "output", False),
    ("conv.act", "relu", "output", True),
)
#: layer -> parameter shapes (registration order)
LAYERS: dict[str, list[tuple[int, ...]]] = {
    "fc1": [(UNITS, 16), (UNITS,)],
    "fc2": [(10, UNITS), (10,)],
    "norm": [(UNITS,)],
}


def batch_size(rank: int) -> int:
    """Uneven shards of the global batch: 1 to 9 examples per rank and step."""
    return 1 + (5 * rank) % 9


@dataclass
class World:
    """Every rank's inputs for one window, and the concatenated (one-process) view."""

    site_data: list[list[dict[str, torch.Tensor]]]  # [rank][step][site]
    weights: list[list[torch.Tensor]]  # [step 0..STEPS][param]: before each step, after last
    grads: list[list[torch.Tensor]]  # [step][param], the (all-reduced) gradient
    losses: list[list[float]]  # [rank][step]


def make_world(seed: int = 0, *, nonfinite: bool = False) -> World:
    g = torch.Generator().manual_seed(seed)
    site_data: list[list[dict[str, torch.Tensor]]] = []
    for r in range(R):
        steps = []
        for s in range(STEPS):
            b = batch_size(r)
            z = torch.randn(b, UNITS, generator=g) - 0.3 * (b - 5)  # bigger shards: sparser
            z[:, :10] = -1.0  # units 0-9: never positive anywhere (dead)
            z[:, 10:20] = -1.0  # units 10-19: positive on one rank only (alive)
            if s == 0 and r % 5 == 0:
                z[0, 10 + (r // 5) % 10] = 0.5
            conv = torch.randn(b, 6, 3, 3, generator=g)
            conv[:, 0] = -1.0  # channel 0 dead
            x = torch.randn(b, 16, generator=g) * (1 + r % 3)
            steps.append(
                {
                    "fc1": x,
                    "mlp.act": torch.relu(z),
                    "gate": torch.sigmoid(8 * torch.randn(b, 8, generator=g)),
                    "conv.act": torch.relu(conv),
                }
            )
        site_data.append(steps)
    shapes = [s for ps in LAYERS.values() for s in ps]
    weights = [[torch.randn(sh, generator=g) for sh in shapes]]
    grads = []
    for _ in range(STEPS):
        grads.append([torch.randn(sh, generator=g) for sh in shapes])
        weights.append([w - 1e-3 * torch.randn(w.shape, generator=g) for w in weights[-1]])
    losses = [[2.0 + float(torch.rand((), generator=g)) for _ in range(STEPS)] for _ in range(R)]
    if nonfinite:
        site_data[17][1]["mlp.act"][0, 30] = float("nan")
        site_data[40][0]["mlp.act"][0, 30] = float("nan")
        site_data[40][0]["mlp.act"][0, 31] = float("inf")
        grads[1][2][3, 5] = float("nan")  # fc2.weight: one element, in one rank's shard
        losses[9][1] = float("nan")
        losses[33][1] = float("inf")
    return World(site_data, weights, grads, losses)


def shard(t: torch.Tensor, rank: int) -> torch.Tensor:
    """This rank's piece of a flattened parameter, as FSDP splits it (may be empty)."""
    pieces = torch.flatten(t).chunk(R)
    return pieces[rank] if rank < len(pieces) else t.new_zeros(0)


def module(params: list[torch.Tensor]) -> nn.Module:
    """A module tree with LAYERS' names holding ``params`` (full tensors or shards)."""
    root = nn.Module()
    it = iter(params)
    for name, shapes in LAYERS.items():
        m = nn.Module()
        for k in range(len(shapes)):
            m.register_parameter(f"p{k}", nn.Parameter(next(it).clone()))
        root.add_module(name, m)
    return root


def pack_rank(
    data: list[dict[str, torch.Tensor]],
    weights: list[list[torch.Tensor]],
    grads: list[list[torch.Tensor]],
    losses: list[float],
    select: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, Layout, list[SiteInfo], ParamAccumulator]:
    """One rank's packed window, as ``Monitor._collect`` builds it.

    ``select(t)`` maps a full parameter tensor to what this rank holds (itself under
    DDP, its shard under FSDP)."""
    sites = {n: SiteAccumulator(n, act, role, conv) for n, act, role, conv in SITES}
    mod = module([select(w) for w in weights[0]])
    acc = ParamAccumulator(LayerTable.from_model(mod))
    params = acc.table.params
    for s, step in enumerate(data):
        for n, x in step.items():
            sites[n].add(x, 0.01)
        for i, p in enumerate(params):
            p.grad = select(grads[s][i])
            acc.on_grad(i, p)
        acc.snapshot_weights()
        with torch.no_grad():
            for p, w in zip(params, weights[s + 1], strict=True):
                p.copy_(select(w))
        acc.commit()
    layout = Layout(sites=tuple((n, sites[n].units) for n, *_ in SITES), n_layers=len(LAYERS))
    cpu = torch.device("cpu")
    loss = torch.tensor(losses, dtype=torch.float64)
    flat = torch.cat(
        [
            *(sites[n].pack(cpu) for n, *_ in SITES),
            acc.pack(),
            _pack_loss(loss, cpu),
            BatchAccumulator().pack(cpu),
        ]
    )
    infos = [SiteInfo(n, act, role) for n, act, role, _ in SITES]
    return flat, layout, infos, acc


def rank_rows(world: World, *, sharded: bool) -> tuple[torch.Tensor, Layout]:
    rows = []
    layout = None
    for r in range(R):

        def select(t: torch.Tensor, r: int = r) -> torch.Tensor:
            return shard(t, r) if sharded else t

        flat, lay, _, _ = pack_rank(
            world.site_data[r], world.weights, world.grads, world.losses[r], select
        )
        assert layout is None or lay == layout  # every rank packs the same layout
        layout = lay
        rows.append(flat)
    assert layout is not None
    return torch.stack(rows), layout


def one_process(world: World) -> tuple[torch.Tensor, list[SiteInfo], ParamAccumulator]:
    """What one process that saw the whole global batch packs (losses: all ranks')."""
    data = [
        {n: torch.cat([world.site_data[r][s][n] for r in range(R)]) for n, *_ in SITES}
        for s in range(STEPS)
    ]
    losses = [world.losses[r][s] for s in range(STEPS) for r in range(R)]
    flat, _, infos, acc = pack_rank(data, world.weights, world.grads, losses, lambda t: t)
    return flat, infos, acc


def reduce_like_the_monitor(
    rows: torch.Tensor, layout: Layout, rank: int, *, sharded: bool, monkeypatch: pytest.MonkeyPatch
) -> torch.Tensor:
    """``make_reducer``'s reduce on ``rank``, with the collectives played by ``rows``."""

    def all_reduce(head: torch.Tensor, op: object = None, group: object = None) -> None:
        pass  # every rank sends the same [n, h, -n, -h]: the max is unchanged

    def all_gather(out: torch.Tensor, inp: torch.Tensor, group: object = None) -> None:
        assert torch.equal(inp, rows[rank])
        out.copy_(rows.reshape(-1))

    monkeypatch.setattr(_dist.dist, "get_world_size", lambda group=None: R)
    monkeypatch.setattr(_dist.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(_dist, "_all_gather", all_gather)
    return _dist.make_reducer(sharded=sharded)(rows[rank].clone(), layout)


def record(
    flat: torch.Tensor, layout: Layout, infos: list[SiteInfo], acc: ParamAccumulator
) -> WindowRecord:
    t = acc.table
    return assemble_record(
        index=0,
        start=1,
        end=STEPS,
        layout=layout,
        host=flat.numpy(),
        sites=infos,
        layers=[LayerInfo(n, "Module", k) for n, k in zip(t.names, t.numel, strict=True)],
        has_grad=[True] * len(t.names),
        n_samples=STEPS,
        has_update=True,
    )


def assert_same_statistics(got: np.ndarray, want: np.ndarray, layout: Layout) -> None:
    """Counts, masks and minima exactly; squared norms to float32 rounding of the norms."""
    g, w = layout.unpack(got), layout.unpack(want)
    for name, _ in layout.sites:
        for field, v in w.sites[name].items():
            np.testing.assert_array_equal(g.sites[name][field], v, err_msg=f"{name}.{field}")
    for field, v in w.layers.items():
        np.testing.assert_allclose(g.layers[field], v, rtol=1e-6, atol=0, err_msg=field)
    for field, v in w.loss.items():
        if field == "first_nonfinite_index":
            continue  # an index into each rank's own losses: checked by the caller
        np.testing.assert_allclose(g.loss[field], v, rtol=1e-12, err_msg=field)


@pytest.mark.parametrize("sharded", [True, False], ids=["fsdp", "ddp"])
def test_64_ranks_combine_to_the_one_process_statistics(
    sharded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world()
    rows, layout = rank_rows(world, sharded=sharded)
    want, infos, acc = one_process(world)
    codes = layout.reduce_codes()

    by_reducer = reduce_like_the_monitor(rows, layout, 0, sharded=sharded, monkeypatch=monkeypatch)
    on_last_rank = reduce_like_the_monitor(
        rows, layout, R - 1, sharded=sharded, monkeypatch=monkeypatch
    )
    by_torch = _dist.combine(rows, torch.as_tensor(codes), sharded=sharded)
    by_numpy = combine_rows(rows.numpy(), codes, sharded=sharded)
    assert torch.equal(by_reducer, by_torch) and torch.equal(on_last_rank, by_torch)
    np.testing.assert_allclose(by_torch.numpy(), by_numpy, rtol=1e-12, atol=0)

    assert_same_statistics(by_torch.numpy(), want.numpy(), layout)
    got_rec = record(by_torch, layout, infos, acc)
    want_rec = record(want, layout, infos, acc)
    for name in got_rec.sites:
        a, b = got_rec.sites[name], want_rec.sites[name]
        assert (a.dead_fraction, a.zero_fraction, a.n_examples) == (
            b.dead_fraction,
            b.zero_fraction,
            b.n_examples,
        ), name
        if name == "gate":
            assert a.saturation == b.saturation and 0.1 < a.saturation < 0.9
    for name in got_rec.layers:
        a_l, b_l = got_rec.layers[name], want_rec.layers[name]
        assert a_l.grad_norm == pytest.approx(b_l.grad_norm, rel=1e-6)
        assert a_l.update_ratio == pytest.approx(b_l.update_ratio, rel=1e-6)
    assert got_rec.loss is not None and want_rec.loss is not None
    assert got_rec.loss.mean == pytest.approx(want_rec.loss.mean, rel=1e-12)


def test_dead_is_dead_on_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world()
    rows, layout = rank_rows(world, sharded=True)
    combined = layout.unpack(_dist.combine(rows, torch.as_tensor(layout.reduce_codes())).numpy())
    per_rank = [layout.unpack(row.numpy()).sites["mlp.act"]["ever_positive"] for row in rows]
    dead_per_rank = np.array([np.asarray(e) < 0.5 for e in per_rank])
    dead = np.asarray(combined.sites["mlp.act"]["ever_positive"]) < 0.5
    np.testing.assert_array_equal(dead, np.logical_and.reduce(dead_per_rank))  # AND of deads
    np.testing.assert_array_equal(~dead, np.logical_or.reduce(~dead_per_rank))  # OR of alive
    assert dead[:10].all() and not dead[10:].any()  # units 10-19 live on one rank each
    assert dead_per_rank[:, 10:20].sum() == R * 10 - 13  # so most ranks alone call them dead
    alone = layout.unpack(one_process(world)[0].numpy()).sites["mlp.act"]["ever_positive"]
    np.testing.assert_array_equal(np.asarray(alone) > 0.5, ~dead)


def test_uneven_batches_weigh_each_example_once() -> None:
    """Ranks hold 1 to 9 examples: the combined fraction is over all examples, unlike a
    mean of per-rank fractions."""
    world = make_world()
    rows, layout = rank_rows(world, sharded=True)
    combined = layout.unpack(_dist.combine(rows, torch.as_tensor(layout.reduce_codes())).numpy())
    site = combined.sites["mlp.act"]
    total = sum(batch_size(r) for r in range(R)) * STEPS
    assert site["n_examples"] == total and site["n_elements"] == total * UNITS
    per = [layout.unpack(row.numpy()).sites["mlp.act"] for row in rows]
    fractions = [float(s["n_zero"]) / float(s["n_elements"]) for s in per]
    exact = float(site["n_zero"]) / float(site["n_elements"])
    want = layout.unpack(one_process(world)[0].numpy()).sites["mlp.act"]
    assert exact == float(want["n_zero"]) / float(want["n_elements"])
    assert abs(np.mean(fractions) - exact) > 1e-4  # averaging would have been wrong


def test_the_parameter_rule_matters() -> None:
    """Shard norms must add (FSDP), replicated norms must not (DDP)."""
    world = make_world()
    fsdp, layout = rank_rows(world, sharded=True)
    ddp, _ = rank_rows(world, sharded=False)
    want = layout.unpack(one_process(world)[0].numpy()).layers["grad_sq_sum"]
    codes = torch.as_tensor(layout.reduce_codes())
    layout_values = {
        (name, flag): layout.unpack(_dist.combine(rows, codes, sharded=flag).numpy()).layers[
            "grad_sq_sum"
        ]
        for name, rows in (("fsdp", fsdp), ("ddp", ddp))
        for flag in (True, False)
    }
    np.testing.assert_allclose(layout_values["fsdp", True], want, rtol=1e-6)
    np.testing.assert_allclose(layout_values["ddp", False], want, rtol=1e-6)
    assert (layout_values["fsdp", False] < 0.2 * want).all()  # rank 0's shard only
    np.testing.assert_allclose(layout_values["ddp", True], R * want, rtol=1e-6)  # R times


def test_nonfinite_values_are_reported_after_the_combine() -> None:
    world = make_world(nonfinite=True)
    rows, layout = rank_rows(world, sharded=True)
    want, infos, acc = one_process(world)
    got = _dist.combine(rows, torch.as_tensor(layout.reduce_codes()), sharded=True)
    g, w = layout.unpack(got.numpy()), layout.unpack(want.numpy())
    # flags and counts of bad steps: exact
    np.testing.assert_array_equal(g.layers["n_grad_nonfinite"], w.layers["n_grad_nonfinite"])
    assert g.layers["n_grad_nonfinite"].tolist() == [0.0, 1.0, 0.0]
    assert g.loss["loss_nonfinite"] == w.loss["loss_nonfinite"] == 2
    assert g.loss["first_nonfinite_index"] == 1  # step 1 of the window, on ranks 9 and 33
    # a NaN unit: one process's max is NaN (not positive); ranks that saw it finite and
    # positive make it alive after the OR. Only non-finite units differ, and a window
    # with any is decided by the non-finite detector, which runs first.
    alive = np.asarray(g.sites["mlp.act"]["ever_positive"])
    differ = np.flatnonzero(alive != np.asarray(w.sites["mlp.act"]["ever_positive"]))
    assert differ.tolist() == [30] and alive[30] == 1  # unit 31's +inf is positive either way
    # non-finite units add over ranks (unit 30 is NaN on two): found, over-counted
    assert w.sites["mlp.act"]["n_nonfinite"] == 2 and g.sites["mlp.act"]["n_nonfinite"] == 3
    rec = record(got, layout, infos, acc)
    assert rec.sites["mlp.act"].n_nonfinite and not rec.sites["gate"].n_nonfinite
    assert rec.loss is not None and rec.loss.n_nonfinite == 2


def test_reduce_codes_cover_every_field() -> None:
    layout = Layout(sites=tuple((n, 4) for n, *_ in SITES), n_layers=len(LAYERS))
    codes = layout.reduce_codes()
    assert codes.shape == (layout.size,)
    assert set(codes.tolist()) == {int(r) for r in Reduce}


# -- benchmarks/memory.py ----------------------------------------------------------------


def _memory_benchmark() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"
    spec = importlib.util.spec_from_file_location("bench_memory", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_cpu_peak_meter_counts_live_tensor_bytes() -> None:
    memory = _memory_benchmark()
    before = torch.empty(4 << 20, dtype=torch.uint8)  # resident before: not counted
    with memory.peak_meter(torch.device("cpu")) as peak:
        a = torch.empty(1 << 20, dtype=torch.uint8)
        b = torch.empty(2 << 20, dtype=torch.uint8)
        del a, before  # freeing a block from before the measurement lowers nothing
        c = torch.empty(1 << 19, dtype=torch.uint8)
    assert peak() == 3 << 20  # a and b alive together; b and c are 2.5 MiB
    del b, c


def test_memory_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    memory = _memory_benchmark()
    assert memory.main(["--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| parameters | width x depth |" in out and "extra / parameter bytes" in out
    (row,) = json.loads((tmp_path / "memory.json").read_text())["results"]
    assert row["params"] == row["width"] * (row["width"] + 1) * row["depth"]
    # watching allocates something (accumulators at least), never frees the user's memory
    assert row["peak_watched"] > row["peak_unwatched"] > 0
    assert f"{100 * row['extra'] / row['param_bytes']:.1f}%" in out


def test_the_7b_layout_quoted_in_the_docs() -> None:
    """docs/scale-out.md: a Llama-7B shape packs 1,497,760 values (11.4 MiB) a window."""
    hidden, mlp, blocks = 4096, 11008, 32
    sites: list[tuple[str, int]] = []
    for b in range(blocks):
        sites += [(f"layers.{b}.{n}", hidden) for n in ("q", "k", "v", "o", "gate", "up")]
        sites += [(f"layers.{b}.act_fn", mlp), (f"layers.{b}.down", mlp)]
    sites.append(("lm_head", hidden))
    layout = Layout(sites=tuple(sites), n_layers=9 * blocks + 3)
    assert (len(sites), layout.n_layers) == (257, 291)
    assert layout.size == 1_497_760 and round(8 * layout.size / 2**20, 1) == 11.4
    codes = layout.reduce_codes()
    assert round(float((codes == Reduce.MAX).mean()), 3) == 0.998  # the per-unit flags
