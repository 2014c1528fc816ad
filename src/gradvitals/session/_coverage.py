"""Coverage: what a run's monitor measured, and what it could not, with the reason.

A verdict is only as good as what was watched. The collector keeps a
:class:`Coverage` current; the console, ``report()`` and the HTML report open with its
line, so "no dead units" is never said about a layer that was not measured.

>>> c = Coverage(sites_total=3, sites_measured={"fc1.act", "fc2.act"},
...              not_measured={"lstm": "gates run inside the fused kernel"},
...              layers_total=4, layers_measured=4)
>>> c.line()
'gradvitals: watched activation sites: 2 of 3; layers: 4 of 4; not measured: lstm (gates run inside the fused kernel)'
>>> Coverage(sites_total=2, sites_measured={"a", "b"}, layers_total=2, layers_measured=2).line()
'gradvitals: watched activation sites: 2 of 2; layers: 2 of 2'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Coverage"]


@dataclass
class Coverage:
    """What was and was not measured in a run.

    Attributes:
        sites_total: activation sites the model has (activation modules, recurrent
            hidden states, and inputs of layers that follow a functional ReLU).
        sites_measured: the sites measured in at least one window.
        not_measured: site or layer -> why it was not measured.
        layers_total: layers with trainable parameters.
        layers_measured: those that received a gradient in at least one window.
    """

    sites_total: int = 0
    sites_measured: set[str] = field(default_factory=set)
    not_measured: dict[str, str] = field(default_factory=dict)
    layers_total: int = 0
    layers_measured: int = 0

    def line(self, off: dict[str, str] | None = None) -> str:
        """One line for the console and the report."""
        parts = [
            f"activation sites: {len(self.sites_measured)} of {self.sites_total}",
            f"layers: {self.layers_measured} of {self.layers_total}",
        ]
        if self.not_measured:
            items = [f"{k} ({v})" if v else k for k, v in list(self.not_measured.items())[:8]]
            more = len(self.not_measured) - len(items)
            parts.append(
                "not measured: " + ", ".join(items) + (f" and {more} more" if more else "")
            )
        if off:
            parts.append(
                "switched off after an internal error: "
                + ", ".join(f"{k} ({v})" for k, v in off.items())
            )
        return "gradvitals: watched " + "; ".join(parts)

    def to_dict(self, off: dict[str, str] | None = None) -> dict[str, Any]:
        """For logs: ``{"sites_measured", "sites_total", "not_measured", ...}``."""
        return {
            "sites_measured": len(self.sites_measured),
            "sites_total": self.sites_total,
            "not_measured": dict(self.not_measured),
            "layers_measured": self.layers_measured,
            "layers_total": self.layers_total,
            "statistics_off": dict(off or {}),
        }
