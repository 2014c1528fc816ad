"""The ``gradvitals`` command.

Subcommands are wired here; each one's options and work live with the code they use
(``gradvitals.<area>._cli``: ``configure(parser)`` and ``run(args) -> int``), so the
command starts without importing torch, TensorFlow or matplotlib.

Bad input (a corrupt log, an unknown name) and OS errors (a permission, a full disk)
print one line, no traceback, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gradvitals import __version__
from gradvitals.errors import GradvitalsError

__all__ = ["main"]

#: subcommand -> (module with configure/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "gradvitals._demo_cli",
        "train tiny nets that fail in each classic way, and diagnose them",
    ),
    "report": (
        "gradvitals.report._cli",
        "write an HTML report from a gradvitals TensorBoard log dir",
    ),
    "activations": ("gradvitals.activations._cli", "the activation-function catalog"),
    "lab": ("gradvitals.lab._cli", "run the experiments behind the classic claims"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradvitals",
        description="Vital signs for neural-network training: vanishing and exploding "
        "gradients, dying ReLUs, saturation and NaNs.",
    )
    parser.add_argument("--version", action="version", version=f"gradvitals {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(module)
        except ImportError:  # pragma: no cover - a subcommand not built yet
            continue
        mod.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except GradvitalsError as e:
        print(f"gradvitals {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # the disk, not the code: a full disk, a permission, a lost mount
        where = f" ({e.filename})" if e.filename else ""
        print(f"gradvitals {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("gradvitals: interrupted", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    """``text`` on one line: a message quoting user data may hold newlines."""
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
