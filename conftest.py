"""Root conftest: skip doctest collection of adapters whose framework is not installed."""

from __future__ import annotations

import importlib.util

_OPTIONAL = {
    "src/gradvitals/keras": "keras",
    "src/gradvitals/lightning.py": "lightning",
    "src/gradvitals/huggingface.py": "transformers",
}

collect_ignore = [path for path, mod in _OPTIONAL.items() if importlib.util.find_spec(mod) is None]
