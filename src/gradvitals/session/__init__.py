"""The framework-free core of a watched run: schedule, decisions, findings, outputs, state.

- :class:`Session`: decides on each window a collector hands it, keeps findings and
  history, logs, writes outputs, repairs, saves state;
- :class:`Schedule`: windows of steps and which steps are measured;
- :class:`DetectorSuite`: every registered mode's detector, in order;
- :class:`RepairController` and the :class:`RepairHost` a framework implements;
- :class:`Collector`: the contract of a framework adapter (see ``docs/architecture.md``).
"""

from gradvitals.session._collector import Collector as Collector
from gradvitals.session._coverage import Coverage as Coverage
from gradvitals.session._repair import RepairController as RepairController
from gradvitals.session._repair import RepairHost as RepairHost
from gradvitals.session._repair import as_policy as as_policy
from gradvitals.session._schedule import Schedule as Schedule
from gradvitals.session._session import Session as Session
from gradvitals.session._session import as_thresholds as as_thresholds
from gradvitals.session._strict import strict as strict
from gradvitals.session._suite import DetectorSuite as DetectorSuite
from gradvitals.session._view import SessionView as SessionView

__all__ = [
    "Collector",
    "Coverage",
    "DetectorSuite",
    "RepairController",
    "RepairHost",
    "Schedule",
    "Session",
    "SessionView",
    "as_policy",
    "as_thresholds",
    "strict",
]
