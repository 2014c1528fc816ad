"""``gradvitals report LOGDIR [-o OUT]``: write the HTML report of a run.

Imports only the standard library at module level: ``gradvitals.cli`` imports this
module at start-up, before it knows which subcommand runs.
"""

from __future__ import annotations

import argparse

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


def run(args: argparse.Namespace) -> int:
    """Write the report and print its path; bad input raises ``GradvitalsError``."""
    from gradvitals.report._html import write_report

    out = write_report(args.logdir, args.output, progress=True)
    print(out)
    return 0
