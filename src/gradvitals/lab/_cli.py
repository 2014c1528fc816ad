"""``gradvitals lab list`` and ``gradvitals lab NAME [--full|--smoke] [--out DIR] [--seed N]``.

Imports only the standard library at module level: ``gradvitals.cli`` imports this
module at start-up, before it knows which subcommand runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``lab`` arguments to ``parser``."""
    parser.add_argument(
        "name",
        metavar="NAME",
        help="an experiment, 'all' to run every one, or 'list' to list them",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the larger, more faithful run")
    size.add_argument("--smoke", action="store_true", help="a tiny run (seconds), as in the tests")
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="output folder (default ./gradvitals-lab/NAME; with 'all', DIR/NAME)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="options",
        help="override a setting, e.g. --set steps=300 --set lrs=0.1,1 "
        "('gradvitals lab list' shows each experiment's settings)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _options(pairs: list[str]) -> dict[str, str]:
    from gradvitals.errors import UsageError

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def _list() -> int:
    from gradvitals import lab

    for exp in lab.EXPERIMENTS:
        cfg = lab.default_config(exp.name)
        fields = ", ".join(
            f"{f.name}={getattr(cfg, f.name)!r}".replace(" ", "") for f in dataclasses.fields(cfg)
        )
        print(f"{exp.name:16} {exp.summary}")
        print(f"{'':16}   settings: {fields}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the experiment(s); print the verdict line and the output folder."""
    from pathlib import Path

    from gradvitals import lab
    from gradvitals.lab._registry import get

    if args.name == "list":
        return _list()
    options = _options(args.options)
    names = lab.names() if args.name == "all" else [args.name]
    if args.name != "all":
        get(args.name)  # an unknown name fails before any work
    for name in names:
        out = args.out
        if args.name == "all" and out is not None:
            out = str(Path(out) / name)
        result = lab.run(
            name,
            full=args.full,
            smoke=args.smoke,
            out=out,
            seed=args.seed,
            progress=not args.quiet,
            **options,
        )
        print(f"{result.name}: {result.verdict}")
        print(f"{'':{len(result.name)}}  ({result.seconds:.1f} s; {result.out_dir}/summary.md)")
        sys.stdout.flush()
    return 0
