"""Adapters for the tools users pick today, used side by side with gradvitals.

- ``trainwatch`` 0.1.0 (``Watcher``): reads only the loss, as a Python float each step
  (``watcher.step(loss=loss.item())``), prints every 10 steps, and after the first
  ``epoch_end()`` warns when the variance of the last 20 losses exceeds 5x the
  first epoch's. Optional: reported as "not installed" when absent.
- ``gradscope`` 0.1.0: its wheel does not import (``gradscope.backends`` is missing
  from the distribution); we only record the ImportError.
- a **wandb.watch-style** gradient histogram hook, re-implemented here so that no
  account or network is needed. It mirrors ``wandb/integration/torch/wandb_torch.py``
  (``log="gradients"``): one ``Tensor.register_hook`` per parameter; each call counts
  toward ``log_freq`` and on a logging call it clones the gradient, checks it for
  non-finite values (two host syncs), takes ``min().item()`` and ``max().item()``,
  a 64-bin ``torch.histc``, copies the histogram ``.cpu()`` and converts it to lists.
  The result is appended to an in-memory list instead of ``wandb.run._log``, so the
  numbers are a *lower bound* on wandb's cost (no serialisation or upload).
- Lightning's documented recipe: ``lightning.pytorch.utilities.grad_norm(model, 2)``
  after each backward (its total goes through ``torch.tensor(list_of_0d_tensors)``)
  plus ``lightning.fabric.utilities.spike.SpikeDetection`` fed the loss tensor each
  step through its ``on_train_batch_end(fabric, loss, batch, batch_idx)`` API with an
  unlaunched single-device ``Fabric``. It raises ``TrainingSpikeException`` on a
  spike (any non-finite loss, or a non-improving loss >= 2x the mean of the last 10).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


# -- availability --------------------------------------------------------------------------
def trainwatch_status() -> str:
    """``"trainwatch <version>"`` or ``"not installed"``."""
    try:
        import trainwatch
    except ImportError:
        return "not installed"
    return f"trainwatch {getattr(trainwatch, '__version__', '?')}"


def gradscope_status() -> str:
    """Whether ``import gradscope`` works; the error text when it does not."""
    try:
        import gradscope
    except ModuleNotFoundError as e:
        if e.name == "gradscope":
            return "not installed"
        return f"installed but fails to import: {type(e).__name__}: {e}"
    except Exception as e:  # any other import-time failure
        return f"installed but fails to import: {type(e).__name__}: {e}"
    return f"gradscope {getattr(gradscope, '__version__', '?')} imports"


def lightning_status() -> str:
    try:
        import lightning
        from lightning.fabric.utilities.spike import SpikeDetection  # noqa: F401
        from lightning.pytorch.utilities import grad_norm  # noqa: F401
    except ImportError as e:
        return f"not installed ({e})"
    return f"lightning {lightning.__version__}"


# -- trainwatch ----------------------------------------------------------------------------
class TrainwatchLoop:
    """A ``trainwatch.Watcher`` at its defaults, with its prints captured, not shown."""

    def __init__(self) -> None:
        from trainwatch import Watcher

        self.out = io.StringIO()
        with contextlib.redirect_stdout(self.out):
            self.watcher = Watcher()
        self.alarms = 0

    def step(self, loss: torch.Tensor | float) -> None:
        value = loss.item() if isinstance(loss, torch.Tensor) else float(loss)  # its API
        with contextlib.redirect_stdout(self.out):
            self.watcher.step(loss=value)

    def epoch_end(self) -> None:
        with contextlib.redirect_stdout(self.out):
            self.watcher.epoch_end()


def trainwatch_first_alarm(losses: Sequence[float], epoch_ends: Sequence[int]) -> int | None:
    """Replay a run's losses through trainwatch; the step of its first warning.

    Only its loss warning is a training-health alarm ("Loss variance spike"); its
    memory-leak and DataLoader warnings need a GPU and are not about the model.
    """
    loop = TrainwatchLoop()
    ends = set(epoch_ends)
    seen = 0
    for i, v in enumerate(losses):
        loop.step(v)
        if i + 1 in ends:
            loop.epoch_end()
        text = loop.out.getvalue()
        if len(text) > seen:
            if "variance spike" in text[seen:]:
                return i
            seen = len(text)
    return None


# -- Lightning SpikeDetection ----------------------------------------------------------------
_FABRIC: Any = None


def _fabric(device: str = "cpu") -> Any:
    global _FABRIC
    if _FABRIC is None or str(_FABRIC.device.type) != torch.device(device).type:
        import warnings

        from lightning.fabric import Fabric

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FABRIC = Fabric(accelerator="cuda" if device.startswith("cuda") else "cpu", devices=1)
    return _FABRIC


class SpikeLoop:
    """``SpikeDetection()`` at its defaults, driven from a plain loop."""

    def __init__(self, device: str = "cpu") -> None:
        from lightning.fabric.utilities.spike import SpikeDetection, TrainingSpikeException

        self._exc = TrainingSpikeException
        self.dir = tempfile.mkdtemp(prefix="gv-spike-")
        self.detector = SpikeDetection(exclude_batches_path=self.dir)
        self.fabric = _fabric(device)
        self.spikes = 0

    def step(self, loss: torch.Tensor, batch_idx: int) -> bool:
        """Feed one loss; True when SpikeDetection raised (training would stop there)."""
        try:
            self.detector.on_train_batch_end(self.fabric, loss.detach(), None, batch_idx)
        except self._exc:
            self.spikes += 1
            return True
        return False


def spike_first_alarm(losses: Sequence[float], batch_idx: Sequence[int]) -> int | None:
    """Replay a run's losses through SpikeDetection; the step of its first spike."""
    loop = SpikeLoop()
    for i, (v, b) in enumerate(zip(losses, batch_idx, strict=True)):
        if loop.step(torch.tensor(float(v)), b):
            return i
    return None


# -- Lightning grad_norm ---------------------------------------------------------------------
def lightning_grad_norm(model: nn.Module) -> dict[str, Any]:
    from lightning.pytorch.utilities import grad_norm

    return grad_norm(model, norm_type=2)


# -- wandb.watch-style histograms ------------------------------------------------------------
class WandbStyleHooks:
    """Per-parameter gradient histograms every ``log_freq`` backward calls (see module doc)."""

    def __init__(self, model: nn.Module, log_freq: int = 1000, bins: int = 64) -> None:
        self.log_freq = log_freq
        self.bins = bins
        self.logged: list[tuple[str, list[float], list[float]]] = []
        self.handles = []
        for name, p in model.named_parameters():
            if p.requires_grad:
                count = [0]
                self.handles.append(p.register_hook(self._make(name, count)))

    def _make(self, name: str, count: list[int]) -> Any:
        def hook(grad: torch.Tensor) -> None:
            count[0] += 1
            if count[0] < self.log_freq:
                return
            count[0] = 0
            self._log(name, grad)

        return hook

    def _log(self, name: str, grad: torch.Tensor) -> None:
        flat = grad.detach().clone().reshape(-1).float()
        if flat.numel() == 0 or bool((~torch.isfinite(flat)).all().item()):
            return
        if not bool(torch.isfinite(flat).all()):
            flat = flat[torch.isfinite(flat)]
        tmin, tmax = flat.min().item(), flat.max().item()
        if tmin > tmax:
            tmin, tmax = tmax, tmin
        if tmin == tmax:
            hist = torch.tensor([float(flat.numel())])
            edges = torch.tensor([tmin, tmax])
        else:
            hist = flat.histc(bins=self.bins, min=tmin, max=tmax).cpu()
            edges = torch.linspace(tmin, tmax, steps=self.bins + 1)
        self.logged.append((name, hist.tolist(), edges.tolist()))
        if len(self.logged) > 4096:  # keep memory flat in long runs
            del self.logged[:2048]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
