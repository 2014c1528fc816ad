"""The experiments: name -> module and the claim it tests (no imports of torch here).

>>> names()
['linear-collapse', 'relu-vs-sigmoid', 'vanishing', 'exploding', 'dying-relu', 'born-dead']
>>> get("vanishing").module
'gradvitals.lab._vanishing'
>>> get("vanshing")
Traceback (most recent call last):
...
gradvitals.errors.UsageError: unknown experiment 'vanshing'; did you mean 'vanishing'? ...
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from gradvitals.errors import UsageError

__all__ = ["EXPERIMENTS", "Experiment", "get", "names"]


@dataclass(frozen=True)
class Experiment:
    """One lab experiment.

    Attributes:
        name: the command-line name (``"dying-relu"``).
        module: the module with ``CLAIM``, ``Config``, ``SIZES`` and ``run(cfg, ctx)``.
        summary: what it does, one line.
    """

    name: str
    module: str
    summary: str


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "linear-collapse",
        "gradvitals.lab._linear_collapse",
        "a deep linear net is logistic regression: same accuracy ceiling; ReLU breaks it",
    ),
    Experiment(
        "relu-vs-sigmoid",
        "gradvitals.lab._relu_vs_sigmoid",
        "steps to a target training accuracy for ReLU, tanh, sigmoid, Leaky ReLU, GELU",
    ),
    Experiment(
        "vanishing",
        "gradvitals.lab._vanishing",
        "per-layer gradient norm vs depth, sigmoid/tanh/ReLU x default/matched init",
    ),
    Experiment(
        "exploding",
        "gradvitals.lab._exploding",
        "lr sweep with/without BatchNorm and clipping: which runs diverge, when it fires",
    ),
    Experiment(
        "dying-relu",
        "gradvitals.lab._dying_relu",
        "dead-unit fraction vs lr for ReLU, Leaky ReLU, ELU and GELU",
    ),
    Experiment(
        "born-dead",
        "gradvitals.lab._born_dead",
        "Monte Carlo P(narrow deep ReLU net is constant at init) vs the closed form",
    ),
)

_BY_NAME = {e.name: e for e in EXPERIMENTS}


def names() -> list[str]:
    """Experiment names, in the order the lab runs them."""
    return [e.name for e in EXPERIMENTS]


def get(name: str) -> Experiment:
    """The experiment called ``name``; ``_`` and ``-`` are interchangeable.

    Raises:
        UsageError: for an unknown name, listing the valid ones.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key in _BY_NAME:
        return _BY_NAME[key]
    close = difflib.get_close_matches(key, list(_BY_NAME), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"unknown experiment {name!r}; {hint}valid names: {', '.join(names())} "
        "(or 'gradvitals lab list')"
    )
