"""Release readiness: the sdist and wheel build, pass `twine check`, carry the metadata, and the wheel
installs in a clean venv outside the repository where the README quickstart runs.

One sdist and one wheel are built per session (`python -m build --no-isolation`, with the dev venv's
setuptools), so the module costs one build and one install.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

import broadcast_lifecycle

pytestmark = pytest.mark.release

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _run(*args: str | Path, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            check=False)
    assert result.returncode == 0, f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}" \
                                   f"{result.stderr}"
    return result


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel, built once per session from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    return sdist, wheel


@pytest.fixture(scope="session")
def clean_venv(dist: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the repository with nothing but the built wheel and its dependencies; returns its bin dir."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    # The dev venv's pip installs into the clean one (saves bootstrapping pip there).
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--disable-pip-version-check",
         dist[1])
    return venv / "bin"


def _metadata(wheel: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = HeaderParser().parsestr(archive.read(name).decode())
    return [(key, str(value)) for key, value in message.items()]


def test_twine_check_accepts_the_sdist_and_the_wheel(dist: tuple[Path, Path]) -> None:
    """`twine check --strict` passes on both files (the README renders as the long description)."""
    result = _run(sys.executable, "-m", "twine", "check", "--strict", *dist)
    assert result.stdout.count("PASSED") == 2


def test_the_version_has_one_source(dist: tuple[Path, Path]) -> None:
    """The built files are named with, and declare, broadcast_lifecycle.__version__."""
    version = broadcast_lifecycle.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|(a|b|rc)\d+)?", version)
    sdist, wheel = dist
    assert sdist.name == f"broadcast_lifecycle-{version}.tar.gz"
    assert wheel.name == f"broadcast_lifecycle-{version}-py3-none-any.whl"
    assert ("Version", version) in _metadata(wheel)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject.split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    assert 'dynamic = ["version"]' in project and not re.search(r"^version\s*=", project, re.MULTILINE)


def test_the_wheel_carries_metadata_and_only_the_package(dist: tuple[Path, Path]) -> None:
    """Project URLs, classifiers, the documented extras, the licence and py.typed; no tests or docs."""
    metadata = _metadata(dist[1])
    keys = {key for key, _ in metadata}
    urls = {value.split(",", 1)[0] for key, value in metadata if key == "Project-URL"}
    extras = {value for key, value in metadata if key == "Provides-Extra"}
    classifiers = {value for key, value in metadata if key == "Classifier"}
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= urls
    assert extras == {"postgres", "async", "socketio", "example", "docs", "dev"}
    assert {"Typing :: Typed", "Programming Language :: Python :: 3.10", "Topic :: Database"} <= classifiers
    assert ("License-Expression", "MIT") in metadata and "License-File" in keys
    with zipfile.ZipFile(dist[1]) as archive:
        names = archive.namelist()
    assert "broadcast_lifecycle/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "examples/"))]
    readme = README.read_text(encoding="utf-8")
    for extra in extras:
        assert f"[{extra}]" in readme, f"README documents the {extra} extra"


def test_the_sdist_carries_what_make_test_needs(dist: tuple[Path, Path]) -> None:
    """The sdist holds the tests, examples, docs, mkdocs.yml, the changelog and the licence."""
    with tarfile.open(dist[0]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "CHANGELOG.md", "Makefile", "mkdocs.yml", "docs/index.md", "examples/quickstart.py",
            "tests/conftest.py", "src/broadcast_lifecycle/py.typed"} <= names
    assert not [n for n in names if "__pycache__" in n]


def test_the_wheel_runs_the_readme_quickstart_in_a_clean_venv(clean_venv: Path, tmp_path: Path) -> None:
    """Outside the repository, the installed wheel runs the README's quickstart and its console script."""
    block = re.search(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)
    assert block is not None
    script = tmp_path / "quickstart.py"
    script.write_text(block.group(1), encoding="utf-8")
    # -I: only the venv's own site-packages, never this checkout or PYTHONPATH.
    out = _run(clean_venv / "python", "-I", script, cwd=tmp_path).stdout
    assert "fully_filled" in out and "refused:" in out
    where = _run(clean_venv / "python", "-I", "-c", "import broadcast_lifecycle as b; print(b.__file__)",
                 cwd=tmp_path).stdout
    assert where.startswith(str(clean_venv.parent)), where
    version = _run(clean_venv / "broadcast-lifecycle", "--version", cwd=tmp_path).stdout
    assert version == f"broadcast-lifecycle {broadcast_lifecycle.__version__}\n"
    diagram = _run(clean_venv / "broadcast-lifecycle", "diagram", cwd=tmp_path).stdout
    assert diagram.startswith("stateDiagram-v2\n")


def test_the_changelog_has_an_unreleased_and_a_release_section() -> None:
    """CHANGELOG.md keeps Unreleased first, then the section prepared for the next release."""
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.MULTILINE)
    release = broadcast_lifecycle.__version__.split(".dev")[0]
    assert headings[:2] == ["Unreleased", release]
