"""The seams of the package: no import cycles, typed entry points, validated options.

The import graph is read from the source (``ast``), with every import statement counted:
module level, inside functions (lazy) and under ``TYPE_CHECKING``. An import of a
package counts as an edge to its ``__init__``; the implicit import of a module's parent
packages does not (every submodule would otherwise form a cycle with its package).
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import gradvitals
from gradvitals.errors import UsageError

SRC = Path(gradvitals.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _edges(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("gradvitals"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    out.add(sub)  # ``from pkg import submodule``
                elif target in known:
                    out.add(target)
    out.discard(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_lazy_and_type_checking_imports_included() -> None:
    mods = _modules()
    known = set(mods)
    graph = {name: _edges(name, path, known) for name, path in mods.items()}
    assert graph["gradvitals.torch._monitor"]  # the reader sees imports at all
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_modules_import_no_framework() -> None:
    """``import gradvitals`` and the core packages stay free of torch, tensorflow, keras."""
    code = (
        "import sys, gradvitals, gradvitals.session, gradvitals.report, gradvitals.stats, "
        "gradvitals.remedies, gradvitals.activations\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'lightning', 'transformers') "
        "if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_watch_shows_its_real_signature() -> None:
    from gradvitals.torch import Monitor
    from gradvitals.torch import watch as torch_watch

    sig = inspect.signature(gradvitals.watch)
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    names = list(sig.parameters)
    assert names[:2] == ["model", "optimizer"]
    monitor_names = [n for n in inspect.signature(Monitor.__init__).parameters if n != "self"]
    assert names == monitor_names == list(inspect.signature(torch_watch).parameters)
    assert {"every", "samples", "log_dir", "thresholds", "scaler", "repair", "policy"} <= set(names)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dead_fraction": 5.0}, r"dead_fraction must be in \(0, 1\], got 5.0"),
        ({"saturation": -1}, r"saturation must be in \(0, 1\]"),
        ({"saturation_eps": 0.5}, r"saturation_eps must be in \(0, 0.5\)"),
        ({"dead_patience": 0}, r"dead_patience must be in \[1, inf\)"),
        ({"dead_patience": 1.5}, r"dead_patience must be a whole number"),
        ({"min_examples": True}, r"min_examples must be a number"),
        ({"explode_factor": 1.0}, r"explode_factor must be in \(1, inf\)"),
        ({"vanishing_ratio": 0.0}, r"vanishing_ratio must be in \(0, 1\)"),
        ({"explode_loss_rise": -0.1}, r"explode_loss_rise must be in \[0, inf\)"),
        ({"converged_loss_ratio": float("nan")}, r"converged_loss_ratio must be in"),
    ],
)
def test_thresholds_reject_out_of_range_values(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        gradvitals.Thresholds(**kwargs)  # type: ignore[arg-type]


def test_every_threshold_default_is_valid_and_every_field_has_a_range() -> None:
    from gradvitals.detectors._thresholds import _RANGES

    t = gradvitals.Thresholds()
    assert set(_RANGES) == set(gradvitals.Thresholds.names())
    assert gradvitals.Thresholds(**t.to_dict()) == t


def test_watch_rejects_bad_options_before_touching_the_model() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for kwargs, match in [
        ({"every": 0}, "every must be an integer >= 1"),
        ({"samples": "2"}, "samples must be an integer >= 1"),
        ({"history_limit": 0}, "history_limit must be an integer >= 1 or None"),
        ({"thresholds": 3}, "thresholds must be a gradvitals.Thresholds or a dict"),
        ({"thresholds": {"dead_fraction": 2}}, "dead_fraction must be in"),
        ({"policy": 3}, "policy must be a gradvitals.RepairPolicy"),
    ]:
        with pytest.raises(UsageError, match=match):
            gradvitals.watch(model, opt, **kwargs)  # type: ignore[arg-type]
    assert not model._forward_hooks and not model._forward_pre_hooks
