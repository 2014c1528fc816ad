"""Remedies keyed by failure mode, and (with the torch adapter) repair actions."""

from gradvitals.remedies._catalog import remedies_for as remedies_for
from gradvitals.remedies._policy import RepairPolicy as RepairPolicy
