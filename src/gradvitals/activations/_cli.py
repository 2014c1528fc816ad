"""``gradvitals activations``: print the catalog, one entry, or a plot of them all.

    gradvitals activations                  # the catalog as a table
    gradvitals activations --format markdown
    gradvitals activations show NAME        # one entry: formula, derivative, traps, paper
    gradvitals activations --plot out.png   # every f (solid) and f' (dashed) in a grid
    gradvitals activations show gelu --plot gelu.png

Module-level imports are stdlib only: the catalog (numpy) and matplotlib load when used.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradvitals.activations import Activation

__all__ = ["configure", "format_table", "plot", "run"]

_COLUMNS = (
    "name",
    "range",
    "zero-centred",
    "monotonic",
    "can die",
    "saturates",
    "init",
    "torch",
    "keras",
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``activations`` options to ``parser``."""
    parser.add_argument(
        "words",
        nargs="*",
        metavar="show NAME",
        help="'show NAME' prints one entry in full; nothing prints the catalog table",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        default=None,
        help="also draw f and f' in a grid (all entries, or the one shown) to this file",
    )
    parser.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="table format (default: text)",
    )


def _names(a: Activation) -> tuple[str, str]:
    """Torch and Keras cells; GELU's tanh form shares both names with the exact form."""
    torch_name, keras_name = a.torch_name or "-", a.keras_name or "-"
    if a.torch_defaults.get("approximate") == "tanh":
        torch_name += "(approximate='tanh')"
        keras_name += "(approximate=True)"
    return torch_name, keras_name


def _rows(acts: Sequence[Activation]) -> list[tuple[str, ...]]:
    yes = {True: "yes", False: "no"}
    return [
        (
            a.name,
            a.range_text,
            yes[a.zero_centred],
            yes[a.monotonic],
            yes[a.can_die],
            a.saturates,
            a.init.split(":")[0],
            *_names(a),
        )
        for a in acts
    ]


def format_table(acts: Sequence[Activation], fmt: str = "text") -> str:
    """The catalog as an aligned text table or a Markdown table."""
    rows = _rows(acts)
    if fmt == "markdown":
        lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        lines += ["| " + " | ".join((f"`{r[0]}`", *r[1:])) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt_row.format(*_COLUMNS), fmt_row.format(*("-" * w for w in widths))]
    out += [fmt_row.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in out)


def plot(acts: Sequence[Activation], path: str, *, lim: float = 7.0) -> None:
    """Draw each f (solid) and f' (dashed) on [-lim, lim] in a grid and save to ``path``.

    Uses matplotlib's object API with the Agg canvas (no pyplot, no display needed).
    """
    from gradvitals.errors import UsageError

    try:
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is in the dev extras
        raise UsageError(
            f"--plot needs matplotlib ({e}); install it with: pip install 'gradvitals[report]'"
        ) from e
    n = len(acts)
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.4 * nrows))
    if n == 1:
        fig.subplots_adjust(left=0.14, right=0.96, bottom=0.12, top=0.88)
    else:
        fig.subplots_adjust(left=0.05, right=0.98, bottom=0.04, top=0.96, hspace=0.45, wspace=0.25)
    FigureCanvasAgg(fig)
    x = np.linspace(-lim, lim, 801)
    for i, a in enumerate(acts):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.axhline(0.0, color="0.8", lw=0.8)
        ax.axvline(0.0, color="0.8", lw=0.8)
        ax.plot(x, a.f(x), color="C0", lw=1.8, label="f")
        ax.plot(x, a.df(x), color="C3", lw=1.3, ls="--", label="f'")
        ax.set_title(a.name, fontsize=10)
        ax.set_xlim(-lim, lim)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise UsageError(f"cannot write the plot to {path!r}: {e}") from e


def run(args: argparse.Namespace) -> int:
    """Print the table (or one entry) and write the plot if asked."""
    from gradvitals import activations
    from gradvitals.errors import UsageError

    words: list[str] = list(args.words or [])
    if not words or words == ["list"]:
        acts = list(activations.entries())
        print(format_table(acts, args.format))
    elif words[0] == "show" and len(words) == 2:
        act = activations.get(words[1])
        acts = [act]
        print(act.describe())
    else:
        raise UsageError(
            f"unexpected arguments {' '.join(words)!r}; use 'gradvitals activations' for "
            "the table or 'gradvitals activations show NAME' for one entry "
            f"(names: {', '.join(activations.names())})"
        )
    if args.plot:
        plot(acts, args.plot)
        print(f"wrote {args.plot}")
    return 0
