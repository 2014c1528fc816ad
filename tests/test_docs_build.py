"""The documentation site builds offline, strictly, with an API page per public module.

``mkdocs build --strict`` turns every warning (a broken cross-reference, a docstring
mkdocstrings cannot render) into a failure. Proxies that point at a closed local port
make any download attempt fail the build, so the test proves it needs no network.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The public surface that must have an API page: module -> page under docs/api/.
API_PAGES = {
    "gradvitals": "gradvitals",
    "gradvitals.session": "session",
    "gradvitals.torch": "torch",
    "gradvitals.keras": "keras",
    "gradvitals.lightning": "lightning",
    "gradvitals.huggingface": "huggingface",
    "gradvitals.report": "report",
    "gradvitals.activations": "activations",
    "gradvitals.stats": "stats",
    "gradvitals.detectors": "detectors",
    "gradvitals.findings": "findings",
}

#: Objects whose headings must appear on their module's page (spot checks).
ANCHORS = {
    "gradvitals": ["gradvitals.watch", "gradvitals.Finding", "gradvitals.Thresholds"],
    "session": ["gradvitals.session.Session"],
    "torch": ["gradvitals.torch.watch", "gradvitals.torch.Monitor"],
    "keras": ["gradvitals.keras.VitalsCallback"],
    "lightning": ["gradvitals.lightning.VitalsCallback"],
    "huggingface": ["gradvitals.huggingface.VitalsCallback"],
    "activations": ["gradvitals.activations.get", "gradvitals.activations.Activation"],
    "findings": ["gradvitals.findings.FailureMode", "gradvitals.findings.Remedy"],
}


def _nav_pages() -> set[str]:
    yaml = pytest.importorskip("yaml")

    def walk(node: object) -> set[str]:
        if isinstance(node, str):
            return {node}
        if isinstance(node, list):
            return set().union(*map(walk, node))
        if isinstance(node, dict):
            return set().union(*map(walk, node.values()))
        return set()

    return walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def test_every_page_and_public_module_is_in_the_nav() -> None:
    nav = _nav_pages()
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - nav == set(), "add these docs pages to mkdocs.yml's nav"
    assert nav - pages == set(), "mkdocs.yml's nav names pages that do not exist"
    for module, page in API_PAGES.items():
        assert f"api/{page}.md" in nav
        text = (DOCS / "api" / f"{page}.md").read_text()
        assert re.search(rf"^::: {re.escape(module)}$", text, re.M), f"{page}.md: ::: {module}"


def test_relative_links_resolve_in_the_repository() -> None:
    """The guides are read on the repository too, so links may leave docs/; none may dangle."""
    link = re.compile(r"\]\(([^)\s]+)\)")
    broken = []
    for page in [*DOCS.rglob("*.md"), ROOT / "README.md"]:
        for target in link.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_doctests_are_fenced_for_markdown() -> None:
    pytest.importorskip("griffe", reason="pip install 'mkdocstrings[python]'")
    spec = importlib.util.spec_from_file_location("gd", ROOT / "scripts" / "griffe_doctests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fence = module.fence_doctests

    text = "Text.\n\n    >>> f(1)\n    [1, 2]\n\nMore.\n>>> g()"
    assert fence(text) == (
        "Text.\n\n    ```pycon\n    >>> f(1)\n    [1, 2]\n    ```\n\nMore.\n```pycon\n>>> g()\n```"
    )
    already = "```python\n>>> f(1)\n```"
    assert fence(already) == already  # inside a fence: left alone
    assert fence("no examples") == "no examples"


def test_mkdocs_build_strict_offline(tmp_path: Path) -> None:
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install mkdocs 'mkdocstrings[python]'")
    site = tmp_path / "site"
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, so downloads fail
    env = {**os.environ, "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "NO_PROXY": ""}
    env.update(http_proxy=closed, https_proxy=closed, no_proxy="")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "WARNING" not in done.stderr

    for guide in ("monitor", "keras", "repair"):
        assert (site / guide / "index.html").is_file()
    for page in API_PAGES.values():
        html = (site / "api" / page / "index.html").read_text()
        assert "<blockquote>" not in html, f"api/{page}: a doctest rendered as a quotation"
        for anchor in ANCHORS.get(page, []):
            assert f'id="{anchor}"' in html, f"api/{page} has no entry for {anchor}"
    activations = (site / "api" / "activations" / "index.html").read_text()
    assert "&gt;&gt;&gt; " in activations  # the doctests are there, as code
