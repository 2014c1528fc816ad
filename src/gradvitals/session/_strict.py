"""Strict mode: an internal error raises instead of switching the monitor off.

gradvitals must never break training, so by default an internal error is turned into a
warning and the failing part stops watching. In a test suite that is dangerous: a
test of a healthy run passes when the monitor went blind in its first window. With
``GRADVITALS_STRICT=1`` in the environment (the project's own tests set it) the error
is raised where it happened.

>>> strict_from("1"), strict_from("0"), strict_from(None)
(True, False, False)
>>> strict_from("maybe")
Traceback (most recent call last):
...
gradvitals.errors.UsageError: GRADVITALS_STRICT must be one of 0, 1, false, true, no, yes (or unset), got 'maybe'
"""

from __future__ import annotations

import os

from gradvitals.errors import UsageError

__all__ = ["ENV", "strict", "strict_from"]

ENV = "GRADVITALS_STRICT"
_VALUES = {"0": False, "1": True, "false": False, "true": True, "no": False, "yes": True}


def strict_from(value: str | None) -> bool:
    """Parse a ``GRADVITALS_STRICT`` value."""
    if value is None or value.strip() == "":
        return False
    try:
        return _VALUES[value.strip().lower()]
    except KeyError:
        raise UsageError(
            f"{ENV} must be one of {', '.join(_VALUES)} (or unset), got {value!r}"
        ) from None


def strict() -> bool:
    """True when ``GRADVITALS_STRICT`` asks internal errors to raise."""
    return strict_from(os.environ.get(ENV))
