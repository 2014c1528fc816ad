"""What an experiment gets from the runner: where to write, the seed, a progress bar.

>>> import tempfile
>>> from pathlib import Path
>>> ctx = LabContext("demo", Path(tempfile.mkdtemp()), seed=3, size="smoke", show_progress=False)
>>> ctx.figure("curves").name, Path(ctx.log_dir("relu-lr0.1")).parts[-2:]
('curves.png', ('tb', 'relu-lr0.1'))
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from gradvitals._progress import Progress

__all__ = ["LabContext"]


@dataclass
class LabContext:
    """The runner's side of an experiment.

    Attributes:
        name: the experiment's name.
        out_dir: its output folder (created).
        seed: the base seed; runs derive theirs from it.
        size: ``"smoke"``, ``"default"`` or ``"full"``.
        show_progress: draw progress bars on stderr.
    """

    name: str
    out_dir: Path
    seed: int = 0
    size: str = "default"
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def log_dir(self, run: str) -> str:
        """A fresh TensorBoard folder ``out_dir/tb/<run>`` for ``gradvitals.watch``
        (a previous run's files of the same name are replaced)."""
        path = self.out_dir / "tb" / run
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return str(path)

    def figure(self, stem: str) -> Path:
        """The path of a PNG figure in the output folder."""
        return self.out_dir / f"{stem}.png"

    def bar(self, total: int, desc: str | None = None) -> Progress:
        """A progress bar over ``total`` units of work (shown after 2 s)."""
        return Progress(total, desc or f"lab {self.name}", disable=not self.show_progress)
