"""``gradvitals demo``: options and entry point (stdlib imports only at module level)."""

from __future__ import annotations

import argparse

__all__ = ["configure", "run"]

_CASES = ("healthy", "vanishing", "exploding", "dying-relu", "saturation", "nonfinite")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cases",
        nargs="*",
        metavar="CASE",
        help=f"cases to run (default: all): {', '.join(_CASES)}",
    )
    parser.add_argument(
        "--log-dir", default="gradvitals-demo", help="where TensorBoard logs and reports go"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the HTML reports")


def run(args: argparse.Namespace) -> int:
    from gradvitals.demo import run_demo

    run_demo(args.cases or None, log_dir=args.log_dir, report=not args.no_report)
    return 0
