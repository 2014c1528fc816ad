"""Remedies and repairs: the mode registry, the remedy catalog, repair actions and policy.

- :mod:`~gradvitals.remedies._modes`: one :class:`ModeSpec` per failure mode (the one
  place to add a mode), and :func:`remedies_for` derived from it;
- :mod:`~gradvitals.remedies._catalog`: every remedy once, with code per framework;
- :mod:`~gradvitals.remedies._actions`: repair actions, and per-framework registries;
- :mod:`~gradvitals.remedies._policy`: :class:`RepairPolicy`, what repair may do.
"""

from gradvitals.remedies._actions import ACTION_SPECS as ACTION_SPECS
from gradvitals.remedies._actions import ActionContext as ActionContext
from gradvitals.remedies._actions import ActionRegistry as ActionRegistry
from gradvitals.remedies._actions import ActionSpec as ActionSpec
from gradvitals.remedies._catalog import RemedyTemplate as RemedyTemplate
from gradvitals.remedies._catalog import register_remedy as register_remedy
from gradvitals.remedies._catalog import render as render
from gradvitals.remedies._modes import ModeSpec as ModeSpec
from gradvitals.remedies._modes import get_mode as get_mode
from gradvitals.remedies._modes import modes as modes
from gradvitals.remedies._modes import register_mode as register_mode
from gradvitals.remedies._modes import remedies_for as remedies_for
from gradvitals.remedies._modes import training_modes as training_modes
from gradvitals.remedies._modes import unregister_mode as unregister_mode
from gradvitals.remedies._modes import urgency as urgency
from gradvitals.remedies._policy import RepairPolicy as RepairPolicy
