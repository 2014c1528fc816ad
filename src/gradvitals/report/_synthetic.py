"""Hand-made window records for each failure mode: report demos and tests, no torch.

A 5-module MLP (``net.0`` Linear, ``net.1`` activation, ``net.2`` Linear, ``net.3``
activation, ``net.4`` Linear) whose statistics follow the textbook picture of one
failure, plus the finding a detector would raise (with the catalog's remedies).

>>> records, findings = synthetic_run("dying_relu")
>>> len(records), findings[0].kind.value, findings[0].layer
(12, 'dying_relu', 'net.3')
>>> synthetic_run("healthy")[1]
[]
"""

from __future__ import annotations

import numpy as np

from gradvitals.findings import FailureMode, Finding
from gradvitals.remedies import remedies_for
from gradvitals.stats import LayerStats, LossStats, SiteStats, WindowRecord

__all__ = ["MODES", "synthetic_run"]

MODES = (
    "healthy",
    "dying_relu",
    "vanishing_gradient",
    "exploding_gradient",
    "saturation",
    "nonfinite",
)

_UNITS = 32
_EXAMPLES = 256


def _site(name: str, act: str, w: int, mode: str, rng: np.random.Generator) -> SiteStats:
    n_el = _UNITS * _EXAMPLES
    ever = np.ones(_UNITS, bool)
    if mode == "dying_relu" and name == "net.3":
        ever[: min(_UNITS, 4 + 3 * w)] = False  # 4, 7, 10 ... dead units
    zero = 0.5 + 0.05 * rng.random() if act == "relu" else 0.0
    sat = 0.05
    if mode == "saturation":
        sat = min(0.97, 0.1 + 0.09 * w)
    return SiteStats(
        name=name,
        activation=act,
        units=_UNITS,
        n_examples=_EXAMPLES,
        n_elements=n_el,
        n_zero=int(zero * n_el),
        n_saturated=int(sat * n_el) if act != "relu" else 0,
        min_value=0.0 if act == "relu" else -1.0,
        ever_positive=ever,
    )


def _grad(layer: int, w: int, mode: str) -> float:
    base = 0.5
    if mode == "vanishing_gradient":
        return base * 10.0 ** (-2.0 * (2 - layer)) * 0.9**w  # 1e-4, 1e-2, 1 toward the output
    if mode == "exploding_gradient":
        return base * 10.0 ** (0.45 * w + 0.5 * (2 - layer))
    if mode == "nonfinite" and w >= 9:
        return 1e3 * 10.0 ** (w - 9)
    return base * (1.0 + 0.1 * np.sin(w + layer))


def synthetic_run(
    mode: str, n_windows: int = 12, every: int = 10
) -> tuple[list[WindowRecord], list[Finding]]:
    """Records of one run in ``mode`` (one of :data:`MODES`) and its findings.

    Args:
        mode: ``"healthy"`` or a failure mode's value.
        n_windows: windows to make.
        every: optimizer steps per window.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    rng = np.random.default_rng(0)
    act = "tanh" if mode in ("saturation", "vanishing_gradient") else "relu"
    records = []
    for w in range(n_windows):
        sites = {name: _site(name, act, w, mode, rng) for name in ("net.1", "net.3")}
        layers = {}
        for i, name in enumerate(("net.0", "net.2", "net.4")):
            g = _grad(i, w, mode)
            layers[name] = LayerStats(
                name=name,
                grad_norm=g,
                weight_norm=4.0,
                update_norm=min(4.0e-3 * g / 0.5, 40.0),
                numel=_UNITS * _UNITS,
                n_samples=every,
                kind="Linear",
            )
        loss_mean = 2.3 * 0.93**w if mode == "healthy" else 2.3 - 0.01 * w
        loss = LossStats(sum=loss_mean * every, count=every, min=loss_mean, max=loss_mean)
        if mode == "nonfinite" and w == n_windows - 1:
            loss = LossStats(sum=loss_mean * (every - 3), count=every, n_nonfinite=3)
        records.append(
            WindowRecord(
                index=w,
                step_start=w * every + 1,
                step_end=(w + 1) * every,
                sites=sites,
                layers=layers,
                loss=loss,
            )
        )
    return records, _findings(mode, records)


def _findings(mode: str, records: list[WindowRecord]) -> list[Finding]:
    if mode == "healthy":
        return []
    kind = FailureMode(mode)
    at = records[len(records) * 2 // 3]
    if mode == "dying_relu":
        frac = at.sites["net.3"].dead_fraction
        layer, msg, ev = "net.3", f"{frac:.0%} of units dead for 3 windows", {"dead_fraction": frac}
        rem = remedies_for(kind)
    elif mode == "vanishing_gradient":
        g0, g2 = at.layers["net.0"].grad_norm, at.layers["net.4"].grad_norm
        layer = "net.0"
        msg = f"gradient norm {g0:.1e} is {g2 / g0:.0e}x smaller than the last layer's"
        ev, rem = {"grad_norm": g0, "ratio": g2 / g0}, remedies_for(kind, activation="tanh")
    elif mode == "exploding_gradient":
        layer = None
        msg = f"global gradient norm {at.total_grad_norm:.1e} is 100x its median"
        ev, rem = {"grad_norm_total": at.total_grad_norm}, remedies_for(kind, clip_norm=1.2)
    elif mode == "saturation":
        s = at.sites["net.3"].saturation
        layer, msg, ev = "net.3", f"{s:.0%} of tanh outputs at +-1", {"saturation": s}
        rem = remedies_for(kind, activation="tanh")
    else:  # nonfinite
        at = records[-1]
        layer, msg, ev = None, "the loss was NaN/Inf at 3 steps", {"n_nonfinite": 3}
        rem = remedies_for(kind)
    return [Finding(kind, layer, at.step, msg, evidence=ev, remedies=rem)]
