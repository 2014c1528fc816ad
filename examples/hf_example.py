"""gradvitals in a Hugging Face ``Trainer`` run: ``callbacks=[VitalsCallback()]``.

    python examples/hf_example.py            # CPU, no downloads, a few seconds
    python examples/hf_example.py --repair   # the same run, repaired in flight

Any ``nn.Module`` whose forward returns ``{"loss": ...}`` trains with ``Trainer``; a
``PreTrainedModel`` works the same way. AdamW at lr=1 without clipping makes the
gradients explode and kills the second ReLU layer, and the callback finds both. It
reads the loss of every step from the model's outputs, gradients before
``max_grad_norm`` clipping, and sends the vital signs to the ``report_to``
integrations (TensorBoard here, as ``train/gradvitals/...``). With ``--repair`` it
rolls back and lowers the learning rate of the Trainer's optimizer and scheduler.
Under ``torchrun``/``accelerate launch`` the statistics are combined across ranks and
only process zero logs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import Trainer, TrainingArguments

from gradvitals.huggingface import VitalsCallback


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {"loss": (out - labels).pow(2).mean(), "logits": out}


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 32 * 40) -> None:
        self.x = torch.randn(n, 8, generator=torch.Generator().manual_seed(100))
        w = torch.randn(8, 1, generator=torch.Generator().manual_seed(7))
        self.y = self.x @ w * 10 + 5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def main() -> None:
    torch.manual_seed(0)
    vitals = VitalsCallback(every=4, repair="--repair" in sys.argv)
    out = tempfile.mkdtemp()
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=32,
        max_steps=40,
        learning_rate=1.0,  # far too high
        max_grad_norm=0.0,  # and no clipping
        lr_scheduler_type="constant",
        logging_steps=10,
        save_strategy="no",
        report_to=["tensorboard"] if tensorboard else [],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=Regressor(), args=args, train_dataset=Rows(), callbacks=[vitals])
    trainer.train()
    assert vitals.monitor is not None
    if trainer.is_world_process_zero():
        print(vitals.monitor.report())
        if tensorboard:
            print(f"vital signs: tensorboard --logdir {out}/runs")


if __name__ == "__main__":
    main()
