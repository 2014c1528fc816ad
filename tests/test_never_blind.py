"""Never blind: every model PyTorch trains is watched, and what cannot be measured is said.

Each case was once a silent "stopped watching after an internal error": float64,
complex and sparse parameters, parameters unfrozen mid-run, empty expert batches,
zero gradients everywhere, torch.func, an AMP scaler that skips every step, a forgotten
``monitor.step()``. The suite runs with GRADVITALS_STRICT=1, so an internal error here
raises instead of passing silently.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import gradvitals
from gradvitals.errors import UsageError

Batch = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def _fit(model: nn.Module, opt: torch.optim.Optimizer, steps: int, make_batch: Batch) -> Any:
    mon = gradvitals.watch(model, opt, every=4, lint=False, console=False)
    for t in range(steps):
        x, y = make_batch(t)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    return mon


def _all_layers_measured(mon: Any) -> bool:
    sampled = [r for r in mon.history if any(lay.n_samples for lay in r.layers.values())]
    return bool(sampled) and all(
        lay.has_grad and math.isfinite(lay.grad_norm) and math.isfinite(lay.update_ratio)
        for lay in sampled[-1].layers.values()
    )


@pytest.mark.parametrize(("lr", "diverges"), [(1e-4, False), (2e-3, True)])
def test_a_float64_regression_on_unscaled_targets_is_watched(lr: float, diverges: bool) -> None:
    """y = x^3 + x^2 + x with reduction='sum': the curvature is 2 sum x^2 ~ 1700, so SGD
    diverges above lr ~ 1.2e-3 (by a factor |1 - 1700 lr| per step) and converges below."""
    x = torch.linspace(-5, 5, 100, dtype=torch.float64).unsqueeze(1)
    model = nn.Linear(1, 1).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = gradvitals.watch(model, opt, every=5, lint=False, console=False)
    for _ in range(40):
        loss = nn.functional.mse_loss(model(x), x**3 + x**2 + x, reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    assert not mon.disabled and _all_layers_measured(mon)
    kinds = {f.kind.value for f in mon.findings}
    assert bool(kinds & {"exploding_gradient", "nonfinite"}) is diverges


def test_a_model_moved_to_float64_after_watch_is_replanned_not_dropped() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradvitals.watch(model, opt, every=4, lint=False, console=False)
    model.double()
    for _ in range(12):
        loss = model(torch.randn(16, 4, dtype=torch.float64)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    assert not mon.disabled and _all_layers_measured(mon)


def test_complex_parameters_are_watched_by_magnitude() -> None:
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(8, 8, dtype=torch.cfloat) * 0.1)
    model = nn.Module()
    model.w = w  # type: ignore[assignment]
    opt = torch.optim.Adam([w], lr=0.01)
    mon = gradvitals.watch(model, opt, every=2, lint=False, console=False)
    target = torch.randn(8, 8, dtype=torch.cfloat)
    for _ in range(8):  # no forward call of the module: the optimizer steps are counted
        loss = (w - target).abs().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    layer = mon.history[-2].layers["Module"]
    assert not mon.disabled and layer.has_grad and layer.grad_norm > 0
    assert math.isfinite(layer.update_ratio)


@pytest.mark.parametrize("opt_name", ["sgd", "sparse_adam"])
def test_sparse_embedding_gradients_are_watched(opt_name: str) -> None:
    torch.manual_seed(0)
    emb = nn.Embedding(50, 8, sparse=True)
    head = nn.Linear(8, 1)
    model = nn.ModuleDict({"emb": emb, "head": head})
    if opt_name == "sgd":
        opts = [torch.optim.SGD(model.parameters(), lr=0.1)]
    else:
        opts = [
            torch.optim.SparseAdam(emb.parameters(), lr=0.01),
            torch.optim.Adam(head.parameters()),
        ]
    mon = gradvitals.watch(model, opts[0], every=2, lint=False, console=False)
    for _ in range(8):
        ids = torch.randint(0, 50, (16,))
        loss = head(emb(ids)).pow(2).mean()
        for o in opts:
            o.zero_grad()
        loss.backward()
        for o in opts:
            o.step()
        mon.observe_loss(loss)
    mon.close()
    layers = mon.history[-2].layers
    assert not mon.disabled and layers["emb"].has_grad and math.isfinite(layers["emb"].grad_norm)


def test_progressive_unfreezing_is_replanned_at_the_next_window() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    for p in model[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradvitals.watch(model, opt, every=4, lint=False, console=False)
    seen: list[set[str]] = []
    for t in range(24):
        if t == 10:
            for p in model[0].parameters():
                p.requires_grad_(True)
        loss = model(torch.randn(16, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
        seen.append(set(mon.history[-1].layers) if mon.history else set())
    mon.close()
    assert not mon.disabled
    assert "0" not in seen[5] and "0" in mon.history[-2].layers
    assert mon.history[-2].layers["0"].has_grad


def test_an_expert_that_gets_no_token_is_skipped_not_fatal() -> None:
    torch.manual_seed(0)

    class MoE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.experts = nn.ModuleList(
                [nn.Sequential(nn.Linear(4, 8), nn.ReLU()) for _ in range(2)]
            )
            self.out = nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            route = x[:, 0] > 10  # expert 1 never gets a token
            h = torch.zeros(len(x), 8)
            h[~route] = self.experts[0](x[~route])
            h[route] = self.experts[1](x[route])
            return self.out(h)

    model = MoE()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = _fit(model, opt, 12, lambda t: (torch.randn(16, 4), torch.randn(16, 1)))
    assert not mon.disabled and "experts.0.1" in mon.history[-2].sites
    assert mon.findings == []


def test_zero_gradients_everywhere_do_not_break_the_monitor() -> None:
    """A one-unit softmax output is constant 1.0: every gradient is exactly zero."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1), nn.Softmax(dim=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = _fit(model, opt, 40, lambda t: (torch.randn(32, 4), torch.rand(32, 1)))
    assert not mon.disabled and len(mon.history) > 5


def test_torch_func_per_sample_gradients_keep_the_rest_watched() -> None:
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradvitals.watch(model, opt, every=2, lint=False, console=False)
    params = dict(model.named_parameters())

    def loss_one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (functional_call(model, p, (x.unsqueeze(0),)) - y).pow(2).mean()

    for _ in range(8):
        x, y = torch.randn(16, 4), torch.randn(16, 1)
        per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
        for name, p in params.items():
            p.grad = per_sample[name].mean(0)  # DP-SGD style: set by hand, not by autograd
        opt.step()
        with torch.no_grad():
            mon.observe_loss(loss_one(params, x[0], y[0]))
    mon.close()
    assert not mon.disabled and len(mon.history) >= 3
    assert any(math.isfinite(lay.update_ratio) for lay in mon.history[-2].layers.values())
    assert mon.session.coverage.not_measured["1"] == "inside a torch.func transform"
    assert "no gradient reached it through autograd" in mon.report()


def test_an_input_normalising_model_has_no_dead_inputs_and_repair_leaves_it_alone() -> None:
    """A bag-of-words model that normalises its input in forward(): zero features are
    not dead units (the docs promise the model's input is never a site)."""

    class BoW(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(100, 16)
            self.fc2 = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x / x.sum(1, keepdim=True).clamp_min(1)  # transformed input, still no site
            return self.fc2(torch.relu(self.fc1(x)))

    def run(watch: bool) -> tuple[nn.Module, object]:
        torch.manual_seed(0)
        model = BoW()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        mon = (
            gradvitals.watch(model, opt, every=4, repair=True, lint=False, console=False)
            if watch
            else None
        )
        g = torch.Generator().manual_seed(1)
        for _ in range(30):
            x = (torch.rand(32, 100, generator=g) < 0.05).float()  # 61%+ features zero all window
            x[:, 60:] = 0
            y = (x[:, 0] > 0).long()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if mon is not None:
                mon.observe_loss(loss)
        if mon is not None:
            mon.close()
        return model, mon

    watched, mon = run(True)
    plain, _ = run(False)
    assert mon.findings == [] and mon.repairs == []  # type: ignore[attr-defined]
    assert "fc1" not in mon.history[-2].sites  # type: ignore[attr-defined]
    assert "fc2" in mon.history[-2].sites  # the functional ReLU's output is a site  # type: ignore[attr-defined]
    for a, b in zip(watched.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


def test_an_amp_scaler_that_skips_every_step_is_reported_within_a_window() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    found_at: list[int] = []
    mon = gradvitals.watch(
        model,
        opt,
        every=10,
        scaler=scaler,
        lint=False,
        console=False,
        on_finding=lambda f: found_at.append(f.step),
    )
    forwards = 0
    for _ in range(5000):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(torch.randn(8, 4)).pow(2).mean() * float("nan")  # persistent NaN
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)  # skipped: inf/NaN gradients
        scaler.update()
        mon.observe_loss(loss)
        forwards += 1
        if found_at and forwards == 40:
            break
    assert mon.step_count == 0  # not one optimizer step ran
    assert [f.kind.value for f in mon.findings][:1] == ["nonfinite"]
    assert forwards <= 40  # within about one window of the first skipped steps
    assert mon.history[-1].skipped_steps > 0
    # and the buffers stay bounded over a long run
    for _ in range(5000):
        loss = model(torch.randn(8, 4)).pow(2).mean() * float("nan")
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        mon.observe_loss(loss)
    assert len(mon._losses) <= 2 * mon.every + 8  # private, on purpose: the bound itself
    mon.close()


def test_a_forgotten_monitor_step_is_reported_not_called_healthy() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradvitals.watch(model, None, every=5, lint=False, console=False)
    with pytest.warns(UserWarning, match="no monitor.step"):
        for _ in range(40):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.observe_loss(loss)
    mon.close()
    text = mon.report()
    assert "call monitor.step() after each optimizer step" in text
    assert not mon.disabled


def test_a_run_that_never_closed_a_window_is_not_called_healthy() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    mon = gradvitals.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), lint=False)
    mon.close()
    assert "not judged: no window closed" in mon.report()
    assert "healthy" not in mon.report()


def test_report_opens_with_what_was_watched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LSTM(8, 8, batch_first=True))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradvitals.watch(model, opt, every=2, lint=False, console=False)
    for _ in range(6):
        out, _ = model(torch.randn(4, 3, 4))
        loss = out.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    first = mon.report().splitlines()[0]
    assert first.startswith("gradvitals: watched activation sites: 2 of 2; layers: 2 of 2")
    assert "2 gates (inside the fused kernel" in first
    assert "2" in mon.history[-1].sites and mon.history[-1].sites["2"].activation == "tanh"


# -- clear errors at the boundaries ------------------------------------------------------
def test_observe_loss_rejects_what_is_not_a_loss_and_keeps_watching() -> None:
    model = nn.Linear(2, 1)
    mon = gradvitals.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), lint=False)
    for bad in ("abc", None, [1.0], True):
        with pytest.raises(UsageError, match="observe_loss\\(\\) takes the loss tensor"):
            mon.observe_loss(bad)
    mon.observe_loss(torch.tensor(1.0))
    assert not mon.disabled
    mon.close()


def test_torchscript_modules_are_refused_clearly() -> None:
    scripted = torch.jit.script(nn.Linear(2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(UsageError, match=r"cannot watch a torch\.jit\.script"):
            gradvitals.watch(scripted, torch.optim.SGD(scripted.parameters(), lr=0.1))


def test_an_unwritable_log_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    model = nn.Linear(2, 1)
    with pytest.raises(UsageError, match=r"log dir|TensorBoard log"):
        gradvitals.watch(
            model, torch.optim.SGD(model.parameters(), lr=0.1), log_dir=str(blocker / "run")
        )
    assert not model._forward_pre_hooks


def test_repair_works_on_a_module_with_extra_state() -> None:
    class Tagged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 1)
            self.tag = {"version": 3}

        def get_extra_state(self) -> dict[str, int]:
            return self.tag

        def set_extra_state(self, state: dict[str, int]) -> None:
            self.tag = state

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    model = Tagged()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradvitals.watch(model, opt, repair=True, lint=False, every=2)
    for _ in range(6):
        loss = model(torch.randn(4, 2)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    assert mon.session.repair is not None and mon.session.repair.host.restore() is not None
    assert model.tag == {"version": 3} and not mon.disabled
    mon.close()


def test_the_html_report_opens_with_the_coverage_line(tmp_path: Path) -> None:
    from gradvitals.report import write_report

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LSTM(8, 8, batch_first=True))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradvitals.watch(model, opt, every=2, lint=False, console=False, log_dir=str(tmp_path))
    for _ in range(6):
        out, _ = model(torch.randn(4, 3, 4))
        loss = out.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.observe_loss(loss)
    mon.close()
    page = write_report(tmp_path, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "activation sites: <strong>2 of 2</strong>" in page
    assert "<code>2 gates</code> (inside the fused kernel" in page
