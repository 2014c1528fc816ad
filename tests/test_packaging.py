"""The package as a user gets it: one version, honest metadata, and a wheel that works.

The slow tests build the sdist and, from it, the wheel (``python -m build
--no-isolation``, no download), read both archives, then install the wheel into a clean
virtual environment (no system site packages, core dependencies only, so no torch) and
run the command line from there.
"""

from __future__ import annotations

import email
import itertools
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "gradvitals"
PYPROJECT = ROOT / "pyproject.toml"

#: Modules that ``import gradvitals`` must not load.
HEAVY = ("torch", "tensorflow", "keras", "lightning", "transformers", "matplotlib", "tensorboard")

#: Published floors that ``make test-oldest`` does not install, and why.
UNTESTED_FLOORS = {
    "torch": "only torch 2.13.0 (CPU) is tested: other releases are multi-GB CUDA builds here",
}


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    return tomllib.loads(PYPROJECT.read_text())


def _requirement(spec: str) -> tuple[str, str, str]:
    """``"keras>=3.0; extra"`` -> ``("keras", ">=", "3.0")``: name, operator, version."""
    m = re.fullmatch(
        r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(==|>=|<=|~=|<|>|!=)?\s*([^;,\s]*).*", spec
    )
    assert m, spec
    return m.group(1).lower().replace("_", "-"), m.group(3) or "", m.group(4)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, _, version = _requirement(line)
            pins[name] = version
    return pins


# -- fast: what the source says ----------------------------------------------------------
def test_one_version_source() -> None:
    import gradvitals
    from gradvitals._version import __version__

    assert gradvitals.__version__ is __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", __version__)
    project = _pyproject()
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "src/gradvitals/_version.py"


def test_published_extras_declare_ranges_only() -> None:
    project = _pyproject()["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    for extra, specs in {"": project["dependencies"], **extras}.items():
        for spec in specs:
            name, op, _ = _requirement(spec)
            assert op != "==", f"[{extra}] pins {spec}: exact pins go in requirements/"
            assert name not in ("trainwatch", "gradscope"), f"[{extra}] ships a benchmark peer"
            assert name not in ("tensorflow-cpu", "tensorflow"), f"[{extra}] picks a TF build"
    assert {"dev", "bench"}.isdisjoint(extras)
    # docs and docstrings say gradvitals[transformers]; the module is gradvitals.huggingface
    assert extras["transformers"] == ["gradvitals[huggingface]"]
    named = {n for spec in extras["all"] for n in re.findall(r"\[(.*)\]", spec)[0].split(",")}
    assert named >= set(extras) - {"all", "transformers", "tensorboard"}


def test_every_extra_is_in_the_readme_table_with_its_floors() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    readme = (ROOT / "README.md").read_text()
    for extra, specs in extras.items():
        row = re.search(rf"^\| `{extra}` \|(.*)$", readme, re.M)
        assert row, f"README's extras table misses [{extra}]"
        stated = dict(re.findall(r"([a-z-]+)>=([0-9.]+)", row.group(1)))
        floors = {n: v for n, op, v in map(_requirement, specs) if op == ">="}
        assert stated.items() <= floors.items(), f"README's [{extra}] row says {stated}"


def test_floors_are_the_versions_make_test_oldest_installs() -> None:
    """Each floor ``>=X.Y`` is tested: requirements/oldest.txt pins an ``X.Y[.Z]`` release."""
    from packaging.version import Version

    project = _pyproject()["project"]
    oldest = _pins(ROOT / "requirements" / "oldest.txt")
    floors: dict[str, str] = {}
    specs = itertools.chain(project["dependencies"], *project["optional-dependencies"].values())
    for spec in specs:
        name, op, version = _requirement(spec)
        if op == ">=":
            assert floors.setdefault(name, version) == version, f"two floors for {name}"
    assert {"numpy", "keras", "lightning", "transformers", "accelerate"} <= set(floors)
    for name, floor in floors.items():
        if name in UNTESTED_FLOORS:
            continue
        assert name in oldest, f"{name}>={floor} is not in requirements/oldest.txt"
        low, pin = Version(floor), Version(oldest[name])
        same = pin.release[: len(low.release)] == low.release
        assert same and pin >= low, f"floor {name}>={floor}, but oldest.txt tests {pin}"


def test_dev_requirements_keep_the_pinned_torch_and_the_peers() -> None:
    assert _pins(ROOT / "requirements" / "dev.txt")["torch"] == "2.13.0"
    assert _pins(ROOT / "requirements" / "oldest.txt")["torch"] == "2.13.0"
    bench = (ROOT / "requirements" / "bench.txt").read_text()
    assert "trainwatch" in bench and "gradscope" in bench
    make = (ROOT / "Makefile").read_text()
    stamp_rule = next(line for line in make.splitlines() if line.startswith("$(STAMP):"))
    assert "$(DEV_REQS)" in stamp_rule and "requirements/dev.txt" in make


def test_py_typed_and_license_exist() -> None:
    assert (SRC / "py.typed").is_file()
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it


# -- slow: the built archives and a clean install -----------------------------------------
@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("build", reason="pip install -r requirements/dev.txt (build)")
    pytest.importorskip("hatchling", reason="pip install -r requirements/dev.txt (hatchling)")
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("gradvitals-*.whl")
    (sdist,) = out.glob("gradvitals-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(name))


#: Paths of the development machine that nothing shipped may mention (spelt in two
#: pieces so that this file, which ships in the sdist, does not mention them).
PRIVATE_PATHS = (b"../" + b"shared", b"/work/" + b"shared")


def _no_shared_paths(name: str, data: bytes) -> None:
    for ref in PRIVATE_PATHS:
        assert ref not in data, f"{name} refers to {ref.decode()}, which does not ship"


@pytest.mark.slow
def test_wheel_holds_the_package_and_nothing_else(dists: dict[str, Path]) -> None:
    from gradvitals import __version__

    with zipfile.ZipFile(dists["wheel"]) as z:
        names = set(z.namelist())
        for name in names:
            _no_shared_paths(name, z.read(name))
    info = f"gradvitals-{__version__}.dist-info"
    assert dists["wheel"].name.startswith(f"gradvitals-{__version__}-py3-none-any")
    assert "gradvitals/py.typed" in names
    assert f"{info}/licenses/LICENSE" in names
    assert f"{info}/entry_points.txt" in names
    shipped = {f"gradvitals/{p.relative_to(SRC).as_posix()}" for p in SRC.rglob("*.py")}
    assert shipped and shipped <= names, sorted(shipped - names)
    packages = {p.parent for p in SRC.rglob("__init__.py")}
    assert len(packages) >= 8  # the root, torch, keras, report, stats, detectors, ...
    outside = {n for n in names if not n.startswith(("gradvitals/", f"{info}/"))}
    assert not outside, outside
    assert not [n for n in names if "tests/" in n or "conftest" in n or "__pycache__" in n]

    meta = _metadata(dists["wheel"])
    assert meta["Version"] == __version__
    assert meta["License-Expression"] == "Apache-2.0"
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"torch", "keras", "lightning", "huggingface", "transformers", "all"} <= extras
    assert not extras & {"dev", "bench"}
    requires = [r.split(";")[0] for r in meta.get_all("Requires-Dist") or []]
    assert "numpy>=1.23" in requires and "keras>=3.5" in requires
    assert not [r for r in requires if "==" in r or "trainwatch" in r or "gradscope" in r]
    assert not [r for r in requires if "tensorflow" in r]


@pytest.mark.slow
def test_sdist_holds_the_sources_and_the_license(dists: dict[str, Path]) -> None:
    from gradvitals import __version__

    with tarfile.open(dists["sdist"]) as t:
        members = [m for m in t.getmembers() if m.isfile()]
        names = {m.name.split("/", 1)[1] for m in members}
        for m in members:
            f = t.extractfile(m)
            assert f is not None
            _no_shared_paths(m.name, f.read())
    assert dists["sdist"].name == f"gradvitals-{__version__}.tar.gz"
    assert {"LICENSE", "pyproject.toml", "README.md", "src/gradvitals/py.typed"} <= names
    assert "src/gradvitals/_version.py" in names
    assert not [n for n in names if n.startswith((".venv", "build/", "dist/"))]


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_clean_venv(dists: dict[str, Path], tmp_path: Path) -> None:
    from gradvitals import __version__

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # this environment's pip installs into the new one; numpy comes from the registry
    install = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q"]
    done = subprocess.run([*install, str(dists["wheel"])], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def run(*args: str) -> str:
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
        return done.stdout

    code = (
        "import sys, gradvitals, importlib.util as u; print(gradvitals.__version__); "
        "print(gradvitals.__file__); print(u.find_spec('torch') is None); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    version, where, no_torch, loaded = run(str(py), "-c", code).splitlines()
    assert version == __version__
    assert Path(where).is_relative_to(venv)  # the installed wheel, not the checkout
    assert (Path(where).parent / "py.typed").is_file()
    assert no_torch == "True"  # core dependencies only
    assert loaded == "[]"
    gv = str(venv / "bin" / "gradvitals")
    assert "demo" in run(gv, "--help") and "activations" in run(gv, "--help")
    assert run(gv, "--version").strip() == f"gradvitals {__version__}"
    catalog = run(gv, "activations")
    assert "relu" in catalog and "sigmoid" in catalog
