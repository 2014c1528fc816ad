"""Errors for user mistakes: the CLI prints them as one line and exits with status 2."""

from __future__ import annotations

__all__ = ["GradvitalsError", "UsageError"]


class GradvitalsError(Exception):
    """Base class for errors caused by bad input (a corrupt log, an unknown name...).

    The message says what went wrong, the valid options and the fix.
    """


class UsageError(GradvitalsError, ValueError):
    """Bad arguments to a gradvitals function or command."""
