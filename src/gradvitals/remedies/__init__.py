"""Remedies keyed by failure mode, and (with the torch adapter) repair actions."""

from gradvitals.remedies._catalog import remedies_for as remedies_for
