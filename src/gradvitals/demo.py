"""The demo: tiny nets on bundled data that fail in each classic way, diagnosed live.

Every case trains an MLP on scikit-learn's 8x8 digits (bundled, no download) for a
few hundred steps on the CPU, with ``gradvitals.watch`` attached and TensorBoard logs
written, then prints what gradvitals found and recommends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CASES", "DemoCase", "run_demo"]


@dataclass(frozen=True)
class DemoCase:
    name: str
    story: str
    activation: str
    depth: int
    width: int
    optimizer: str
    lr: float
    momentum: float = 0.0
    input_scale: float = 1.0
    weight_std: float | None = None
    steps: int = 200
    unsafe_loss: bool = False  # log(softmax(z)) instead of log_softmax: log(0) = -inf


CASES: dict[str, DemoCase] = {
    c.name: c
    for c in [
        DemoCase("healthy", "ReLU MLP, He-scale init, SGD lr 0.1", "relu", 3, 64, "sgd", 0.1),
        DemoCase(
            "vanishing",
            "10 sigmoid layers, default init, SGD lr 0.1",
            "sigmoid",
            10,
            32,
            "sgd",
            0.1,
        ),
        DemoCase(
            "exploding",
            "ReLU MLP, SGD lr 0.5 + momentum 0.9, inputs x5",
            "relu",
            4,
            64,
            "sgd",
            0.5,
            0.9,
            5.0,
            steps=60,
        ),
        DemoCase(
            "dying-relu", "ReLU MLP, SGD lr 0.5 + momentum 0.9", "relu", 4, 64, "sgd", 0.5, 0.9
        ),
        DemoCase(
            "saturation",
            "tanh MLP with N(0, 2) weights",
            "tanh",
            3,
            64,
            "sgd",
            0.01,
            weight_std=2.0,
        ),
        DemoCase(
            "nonfinite",
            "ReLU MLP with N(0, 3) weights and loss log(softmax(z)) instead of log_softmax",
            "relu",
            2,
            32,
            "sgd",
            0.01,
            weight_std=3.0,
            steps=60,
            unsafe_loss=True,
        ),
    ]
}


def _train(case: DemoCase, log_dir: Path | None, on_step: Callable[[], None]) -> Any:
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    import gradvitals

    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    torch.manual_seed(0)
    x_np, y_np = load_digits(return_X_y=True)
    x = torch.tensor(x_np / 16.0, dtype=torch.float32) * case.input_scale
    y = torch.tensor(y_np)
    layers: list[nn.Module] = []
    d = 64
    for _ in range(case.depth):
        lin = nn.Linear(d, case.width)
        if case.weight_std is not None:
            nn.init.normal_(lin.weight, 0.0, case.weight_std)
        layers += [lin, acts[case.activation]()]
        d = case.width
    layers.append(nn.Linear(d, 10))
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=case.lr, momentum=case.momentum)
    g = torch.Generator().manual_seed(1)
    monitor = gradvitals.watch(
        model, opt, log_dir=None if log_dir is None else str(log_dir), console=False
    )
    with monitor:
        for _ in range(case.steps):
            idx = torch.randint(0, len(x), (64,), generator=g)
            z = model(x[idx])
            if case.unsafe_loss:  # the classic bug: softmax underflows to 0, log(0) = -inf
                loss = nn.functional.nll_loss(torch.log(torch.softmax(z, 1)), y[idx])
            else:
                loss = nn.functional.cross_entropy(z, y[idx])
            monitor.observe_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            on_step()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    return monitor, acc


def run_demo(
    cases: list[str] | None = None,
    log_dir: str | Path | None = "gradvitals-demo",
    report: bool = True,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo cases; returns ``{case: monitor}``. Writes logs/reports under ``log_dir``."""
    from gradvitals._progress import Progress
    from gradvitals.errors import UsageError
    from gradvitals.report import cause_text

    names = cases or list(CASES)
    for n in names:
        if n not in CASES:
            raise UsageError(f"unknown demo case {n!r}; choose from: {', '.join(CASES)}")
    root = Path(log_dir) if log_dir is not None else None
    total = sum(CASES[n].steps for n in names)
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    bar = Progress(total, "gradvitals demo")
    for n in names:
        case = CASES[n]
        bar.set_description(f"demo: {n}")
        run_dir = root / n if root is not None else None
        monitor, acc = _train(case, run_dir, lambda: bar.update())
        results[n] = monitor
        results[n].demo_accuracy = acc
    bar.close()
    for n in names:
        case, monitor = CASES[n], results[n]
        out(f"\n== {n}: {case.story} (train accuracy {monitor.demo_accuracy:.0%})")
        if not monitor.findings:
            out("   healthy: no findings")
        for f in monitor.findings:
            where = f" in {f.layer}" if f.layer else ""
            out(f"   step {f.step}: {f.kind.value}{where}: {f.message}")
            cause = cause_text(f)
            if cause:
                out(f"     {cause}")
            if f.remedies:
                first, *more = f.remedies[0].code.splitlines() or [""]
                out(f"     -> {f.remedies[0].action}:  {first}")
                for line in more:  # a multi-line snippet stays aligned under its first line
                    out(f"        {line}")
    if root is not None:
        out(f"\nTensorBoard logs: tensorboard --logdir {root}")
        if report:
            from gradvitals.report import write_report

            for n in names:
                path = write_report(root / n)
                out(f"HTML report ({n}): {path}")
    out(f"\ndone in {time.perf_counter() - t0:.1f}s")
    return results
