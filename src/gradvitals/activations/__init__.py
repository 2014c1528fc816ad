"""The activation-function catalog: formulas, derivatives, properties and traps.

Every entry is an :class:`Activation` with a numpy reference ``f`` and derivative
``df`` (stable for large ``|x|``), its output range, where it saturates, whether it is
zero-centred or monotonic, whether units can die (f' = 0 on a half-line), the init and
gain to pair it with (``torch.nn.init.calculate_gain`` where it has an entry), its
PyTorch and Keras 3 names and defaults, the cross-framework traps, and the paper.

Importing this package does not import torch.

>>> from gradvitals import activations
>>> act = activations.get("swish")
>>> act.name, act.torch_name, act.keras_name
('silu', 'SiLU', 'silu')
>>> float(act.f(0.0)), float(act.df(0.0))
(0.0, 0.5)
>>> sig = activations.get("sigmoid")
>>> float(sig.df(0.0)), sig.saturates, sig.can_die
(0.25, 'both (asymptotic)', False)
>>> activations.get("leaky_relu").gain  # sqrt(2 / (1 + 0.01^2)), as calculate_gain
1.4141428569978354
"""

from gradvitals.activations._entry import Activation as Activation
from gradvitals.activations._entry import Saturation as Saturation
from gradvitals.activations._registry import (
    activation_name_for_module as activation_name_for_module,
)
from gradvitals.activations._registry import entries as entries
from gradvitals.activations._registry import from_module as from_module
from gradvitals.activations._registry import get as get
from gradvitals.activations._registry import names as names

__all__ = [
    "Activation",
    "Saturation",
    "activation_name_for_module",
    "entries",
    "from_module",
    "get",
    "names",
]
