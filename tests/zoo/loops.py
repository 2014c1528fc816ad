"""Training loops for the zoo, written the way the models' own scripts train them.

- :func:`train`: the plain PyTorch loop (forward, loss, ``zero_grad``, backward, step),
  with the realistic bugs the tests inject: a NaN in one input batch, a forgotten
  ``optimizer.zero_grad()``;
- :func:`train_nanogpt`: nanoGPT's ``train.py`` loop: AdamW with weight-decay groups, a
  warm-up + cosine learning rate written into every ``param_group`` each step, gradient
  accumulation over ``micro_steps`` micro-batches, gradient clipping, bf16 autocast on
  CPU, optional ``torch.compile``;
- :func:`fit_lightning`, :func:`train_hf`: a Lightning ``Trainer.fit`` and a Hugging Face
  ``Trainer.train`` run, offline, with gradvitals' callback.

Every loop watches with ``gradvitals.watch`` (or the framework callback) and returns a
:class:`Run`: the monitor and the per-step losses.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import gradvitals
from zoo.models import left_padded

__all__ = [
    "WATCH",
    "Run",
    "cosine_lr",
    "fit_lightning",
    "poison",
    "sampler",
    "train",
    "train_hf",
    "train_nanogpt",
]

#: watch() settings for the zoo: windows of 5 steps (after the 1-2-4 warm-up), 2 sampled
#: steps each, no pre-flight lint, no console output.
WATCH: dict[str, Any] = dict(every=5, samples=2, lint=False, console=False)

Batch = tuple[torch.Tensor, ...]


@dataclass
class Run:
    """What a loop leaves: the (closed) monitor and the loss of every optimizer step."""

    monitor: Any
    losses: list[float] = field(default_factory=list)


def sampler(
    *tensors: torch.Tensor, batch: int, seed: int = 1
) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """``step -> batch``: seeded random rows of the given tensors (same rows for each)."""
    g = torch.Generator().manual_seed(seed)
    n = len(tensors[0])

    def next_batch(step: int) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(0, n, (batch,), generator=g)
        return tuple(t[idx] for t in tensors)

    return next_batch


def poison(batch: Batch) -> Batch:
    """The same batch with one NaN in the first value of its first floating-point tensor."""
    out = list(batch)
    for i, t in enumerate(out):
        if t.is_floating_point():
            t = t.clone()
            t.view(-1)[0] = float("nan")
            out[i] = t
            break
    else:
        raise ValueError("poison() needs a floating-point tensor in the batch")
    return tuple(out)


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    next_batch: Callable[[int], Batch],
    loss_of: Callable[[nn.Module, Batch], torch.Tensor],
    *,
    steps: int,
    watch: dict[str, Any] | None = None,
    nan_input_at: int | None = None,
    zero_grad: bool = True,
    clip: float | None = None,
) -> Run:
    """The plain loop; ``nan_input_at``/``zero_grad=False`` inject the two input/loop bugs.

    Args:
        next_batch: ``step -> batch`` (see :func:`sampler`).
        loss_of: ``(model, batch) -> scalar loss``.
        watch: ``gradvitals.watch`` settings (default :data:`WATCH`).
        nan_input_at: the step whose batch gets one NaN (:func:`poison`).
        zero_grad: False forgets ``optimizer.zero_grad()``: gradients pile up.
        clip: ``clip_grad_norm_`` threshold, if any.
    """
    model.train()
    monitor = gradvitals.watch(model, opt, **(WATCH if watch is None else watch))
    run = Run(monitor)
    for step in range(steps):
        batch = next_batch(step)
        if step == nan_input_at:
            batch = poison(batch)
        loss = loss_of(model, batch)
        monitor.observe_loss(loss)
        if zero_grad:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        run.losses.append(loss.item())
    monitor.close()
    return run


# -- nanoGPT -------------------------------------------------------------------------------


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup: int, decay_steps: int) -> float:
    """nanoGPT's schedule: linear warm-up to ``lr``, cosine decay to ``min_lr``, then flat.

    >>> [round(cosine_lr(s, lr=1.0, min_lr=0.1, warmup=2, decay_steps=10), 3)
    ...  for s in (0, 1, 2, 6, 10, 11)]
    [0.333, 0.667, 1.0, 0.55, 0.1, 0.1]
    """
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay_steps:
        return min_lr
    ratio = (step - warmup) / max(1, decay_steps - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (lr - min_lr)


def train_nanogpt(
    model: nn.Module,
    data: torch.Tensor,
    *,
    steps: int = 42,
    batch: int = 16,
    micro_steps: int = 2,
    lr: float = 3e-3,
    min_lr: float = 3e-4,
    warmup: int = 5,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    grad_clip: float = 1.0,
    bf16: bool = False,
    compile: bool = False,
    pad: int = 0,
    zero_grad: bool = True,
    watch: dict[str, Any] | None = None,
    seed: int = 1,
) -> Run:
    """nanoGPT's ``train.py`` inner loop on token sequences ``data`` (N, block_size + 1).

    Each optimizer step sums ``micro_steps`` micro-batch losses divided by
    ``micro_steps``; gradients are clipped to ``grad_clip`` before the step.
    ``pad`` > 0 left-pads every batch by that many tokens with a key-padding mask (the
    fully-masked-row bug of :class:`~zoo.models.CausalSelfAttention`); ``zero_grad=False``
    forgets ``optimizer.zero_grad()``, so every step's gradient holds all earlier ones.
    """
    optimizer = model.configure_optimizers(weight_decay, lr, betas)  # type: ignore[operator]
    net: Any = torch.compile(model) if compile else model
    monitor = gradvitals.watch(net, optimizer, **(WATCH if watch is None else watch))
    run = Run(monitor)
    next_batch = sampler(data, batch=batch, seed=seed)
    model.train()
    for step in range(steps):
        for g in optimizer.param_groups:  # the schedule is written in by hand, every step
            g["lr"] = cosine_lr(step, lr=lr, min_lr=min_lr, warmup=warmup, decay_steps=steps)
        total = torch.zeros(())
        for _ in range(micro_steps):
            (seq,) = next_batch(step)
            if pad:
                x, y, mask = left_padded(seq, pad)
            else:
                x, y, mask = seq[:, :-1], seq[:, 1:], None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                _, loss = net(x, y, mask)
                loss = loss / micro_steps  # scale for accumulation
            loss.backward()
            total += loss.detach().float()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        monitor.observe_loss(total)
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        run.losses.append(total.item())
    monitor.close()
    return run


# -- Lightning and Hugging Face -------------------------------------------------------------


def lightning_module(
    model: nn.Module,
    loss_of: Callable[[nn.Module, Sequence[torch.Tensor]], torch.Tensor],
    lr: float,
) -> Any:
    """A ``LightningModule`` around ``model``: ``training_step`` calls ``loss_of``; AdamW."""
    import lightning.pytorch as pl

    class Lit(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return loss_of(self.model, batch)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=lr)

    return Lit()


def fit_lightning(
    module: Any,
    tensors: Sequence[torch.Tensor],
    *,
    max_steps: int,
    batch: int = 32,
    watch: dict[str, Any] | None = None,
    **trainer_kw: Any,
) -> Run:
    """``Trainer.fit`` on CPU with ``gradvitals.lightning.VitalsCallback``; no logger, no files."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from gradvitals.lightning import VitalsCallback

    kw = dict(WATCH if watch is None else watch)
    cb = VitalsCallback(**kw)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        **trainer_kw,
    )
    g = torch.Generator().manual_seed(1)
    loader = DataLoader(TensorDataset(*tensors), batch_size=batch, shuffle=True, generator=g)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*max_steps.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        trainer.fit(module, loader)
    return Run(cb.monitor)


class _Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A dict-per-row dataset, the shape ``transformers.Trainer`` expects."""

    def __init__(self, columns: dict[str, torch.Tensor]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.columns.items()}


def train_hf(
    model: nn.Module,
    columns: dict[str, torch.Tensor],
    output_dir: str,
    *,
    max_steps: int,
    watch: dict[str, Any] | None = None,
    **args: Any,
) -> Run:
    """``transformers.Trainer.train`` on CPU with ``gradvitals.huggingface.VitalsCallback``."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from gradvitals.huggingface import VitalsCallback

    cb = VitalsCallback(**dict(WATCH if watch is None else watch))
    defaults: dict[str, Any] = dict(
        output_dir=output_dir,
        per_device_train_batch_size=32,
        max_steps=max_steps,
        learning_rate=3e-3,
        optim="adamw_torch",
        lr_scheduler_type="constant",
        logging_steps=1,  # the callback reads the loss from the logs
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    defaults.update(args)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**defaults),
        train_dataset=_Rows(columns),
        callbacks=[cb],
    )
    trainer.remove_callback(PrinterCallback)  # a log line per step otherwise
    trainer.train()
    return Run(cb.monitor)
