"""``gradvitals report LOGDIR [-o OUT] [--no-verify] [--allow-truncated]``: the HTML report.

Imports only the standard library at module level: ``gradvitals.cli`` imports this
module at start-up, before it knows which subcommand runs.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``report`` arguments to ``parser``."""
    parser.add_argument(
        "logdir",
        metavar="LOGDIR",
        help="the log_dir given to gradvitals.watch(..., log_dir=...) (or one event file)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=None,
        help="where to write the HTML page (default: LOGDIR/report.html)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the CRC-32C checksum of every record (faster; damage inside a record "
        "then goes unnoticed)",
    )
    parser.add_argument(
        "--allow-truncated",
        action="store_true",
        help="read a log that is still being written up to its last complete record "
        "(by default a file ending in a partial record is refused)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the report and print its path; notes go to stderr, one line each.

    Bad input raises ``GradvitalsError`` (``gradvitals.cli`` prints it as one line).
    """
    from gradvitals.report._html import write_report

    def note(text: str) -> None:
        print(f"gradvitals report: note: {text}", file=sys.stderr)

    out = write_report(
        args.logdir,
        args.output,
        progress=True,
        verify=not args.no_verify,
        allow_truncated=args.allow_truncated,
        on_note=note,
    )
    print(out)
    return 0
