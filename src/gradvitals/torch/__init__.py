"""The PyTorch adapter: hooks, collectors and the training monitor.

``gradvitals.watch`` loads this module on first use; importing it imports torch.
"""

from gradvitals.remedies._policy import RepairPolicy as RepairPolicy
from gradvitals.torch._collapse import collapse as collapse
from gradvitals.torch._lint import lint as lint
from gradvitals.torch._monitor import Monitor as Monitor
from gradvitals.torch._monitor import watch as watch

__all__ = ["Monitor", "RepairPolicy", "collapse", "lint", "watch"]
