"""gradvitals in a Lightning run: ``Trainer(callbacks=[VitalsCallback()])``.

    python examples/lightning_example.py            # CPU, a few seconds
    python examples/lightning_example.py --repair   # the same run, repaired in flight

A regression MLP trained with Adam at lr=1: its gradients explode and its second ReLU
layer dies. The callback finds both during ``fit`` and writes the vital signs through
the Trainer's logger (a ``CSVLogger`` here: ``gradvitals/...`` columns in its
``metrics.csv``); its state goes into Lightning checkpoints. With ``--repair`` it rolls
back and lowers the learning rate of the optimizer from ``configure_optimizers``. Add
``devices=2, strategy="ddp"`` to the Trainer to see the same findings under DDP, from
rank 0 only.
"""

from __future__ import annotations

import sys
import tempfile

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradvitals.lightning import VitalsCallback


class Regressor(LightningModule):
    def __init__(self, lr: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
        )
        self.lr = lr

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        return (self.net(x) - y).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)  # far too high


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(32 * 40, 8, generator=torch.Generator().manual_seed(100))
    w = torch.randn(8, 1, generator=torch.Generator().manual_seed(7))
    loader = DataLoader(TensorDataset(x, x @ w * 10 + 5), batch_size=32)

    vitals = VitalsCallback(every=4, repair="--repair" in sys.argv)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=40,
        callbacks=[vitals],
        logger=CSVLogger(tempfile.mkdtemp()),  # gets the gradvitals/... metrics
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Regressor(), loader)
    assert vitals.monitor is not None
    if trainer.is_global_zero:
        print(vitals.monitor.report())
        print(f"vital signs: {trainer.logger.log_dir}/metrics.csv")


if __name__ == "__main__":
    main()
