"""A griffe extension for the API reference: bare doctests become ``pycon`` code blocks.

The docstrings carry doctests as plain ``>>>`` lines (pytest runs them). In Markdown a
``>`` line is a quotation and ``['a', 'b']`` a link, so mkdocstrings would render them
as such; this wraps each run of doctest lines (up to the next blank line) in a fenced
``pycon`` block before the docstring is parsed. mkdocs.yml loads it by path.

tests/test_docs_build.py tests it (a doctest here would be read as doctests itself).
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """``text`` with each run of doctest lines outside a fence wrapped in a pycon fence."""
    lines = text.splitlines()
    out: list[str] = []
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            fenced = not fenced
        if fenced or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Fence the doctests of every loaded object's docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
