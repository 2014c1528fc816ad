"""The lab: experiments that reproduce the classic claims, with measured numbers.

Each experiment is seeded, runs in about a minute on two CPU cores at its default size
(``full=True`` for a larger run, ``smoke=True`` for the tests' tiny one), and writes a
markdown summary, PNG figures and TensorBoard logs into its output folder. It ends
with one verdict line on the claim, with the numbers.

Importing this package does not import torch; running an experiment does.

>>> from gradvitals import lab
>>> lab.names()
['linear-collapse', 'relu-vs-sigmoid', 'vanishing', 'exploding', 'dying-relu', 'born-dead']
>>> lab.run("no-such-thing")
Traceback (most recent call last):
...
gradvitals.errors.UsageError: unknown experiment 'no-such-thing'; valid names: linear-collapse, ...

From the shell: ``gradvitals lab list`` and ``gradvitals lab NAME [--full] [--out DIR]``.
"""

from gradvitals.lab._registry import EXPERIMENTS as EXPERIMENTS
from gradvitals.lab._registry import Experiment as Experiment
from gradvitals.lab._registry import names as names
from gradvitals.lab._result import LabResult as LabResult
from gradvitals.lab._run import default_config as default_config
from gradvitals.lab._run import run as run

__all__ = ["EXPERIMENTS", "Experiment", "LabResult", "default_config", "names", "run"]
