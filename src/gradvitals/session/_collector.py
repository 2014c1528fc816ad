"""The collector contract: what a framework adapter implements.

A collector measures; the :class:`~gradvitals.session.Session` decides. To watch a new
framework (JAX/Flax, a custom loop), write a collector, not a copy of the session:

1. create a :class:`~gradvitals.session.Session` with ``framework=`` your framework's
   name (remedies come with its code) and the user's options;
2. count optimizer steps into ``session.step_count``; on the steps
   ``session.schedule.is_sampled(step)`` selects, measure activations (per site: the
   :data:`~gradvitals.stats.SITE_FIELDS`) and gradients, weights and updates (per
   layer: the :data:`~gradvitals.stats.LAYER_FIELDS`) on the device, and the loss on
   every step;
3. when a window closes (``step == session.schedule.last``), pack it in
   :class:`~gradvitals.stats.Layout` order, copy it to the host once, build the record
   with :func:`~gradvitals.stats.assemble_record` and call ``session.submit(record)``;
   then ``session.schedule.advance(step)``;
4. route every internal error to ``session.fail(e)`` (or wrap hooks in
   ``session.guard``), so training never breaks;
5. for repair, implement :class:`~gradvitals.session.RepairHost` (snapshot, restore,
   and an :class:`~gradvitals.remedies.ActionRegistry` of actions) and call
   ``session.enable_repair(host, policy)``;
6. expose the :class:`Collector` members below.

``tests/test_conformance.py`` runs every adapter through the same scripted scenarios;
add yours there.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from gradvitals.findings import Finding
from gradvitals.session._session import Session

__all__ = ["Collector"]


@runtime_checkable
class Collector(Protocol):
    """What every framework adapter offers on top of its session."""

    session: Session

    @property
    def findings(self) -> list[Finding]:
        """The session's findings (delegated)."""
        ...

    def flush(self) -> list[Finding]:
        """Close the open window now and run the detectors on it."""
        ...

    def report(self) -> str:
        """The session's text summary (delegated)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The session's state, plus the collector's own if any."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`."""
        ...
