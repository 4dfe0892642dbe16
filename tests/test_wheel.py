"""A wheel builds, and installed on its own, `subsetgrad check` runs on the bundled example.

The wheel is built from a copy of the project (so that the build leaves no
``build/`` or egg-info in the working tree), offline and without build
isolation, then installed with ``pip install --target`` into a folder that
alone is put on ``PYTHONPATH``; the commands run from a folder outside the
project, so nothing is imported from ``src``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from subsetgrad.cli import EXAMPLE

ROOT = Path(__file__).resolve().parent.parent


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "src",
        project / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    out = tmp_path_factory.mktemp("dist")
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(project))
    (built,) = out.glob("subsetgrad-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    return target


def run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in `cwd`, importing the project from `installed` only."""
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONNOUSERSITE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, text=True, capture_output=True, timeout=120
    )


def test_the_wheel_ships_the_example_plugin_and_entry_points(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        text = zf.read(entry_points).decode()
    for shipped in (
        f"subsetgrad/examples/{EXAMPLE}",
        "subsetgrad/__main__.py",
        "subsetgrad/data/corpus.u16.xz",
        "subsetgrad/py.typed",
        "pytest_subsetgrad.py",
    ):
        assert shipped in names
    assert "subsetgrad = subsetgrad.cli:main" in text
    assert "subsetgrad = pytest_subsetgrad" in text


def test_check_runs_on_the_bundled_example_from_the_installed_wheel(
    installed: Path, tmp_path: Path
) -> None:
    where = run(
        installed,
        tmp_path,
        "-c",
        "import subsetgrad, pytest_subsetgrad; "
        "print(subsetgrad.__file__); print(pytest_subsetgrad.__file__)",
    )
    assert where.returncode == 0, where.stderr
    for origin in where.stdout.split():
        assert Path(origin).is_relative_to(installed), origin

    example = run(installed, tmp_path, "-m", "subsetgrad", "example")
    assert example.returncode == 0, example.stderr
    (tmp_path / EXAMPLE).write_text(example.stdout)
    lines = example.stdout.splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.startswith("step = pytensor.function("))

    checked = run(installed, tmp_path, "-m", "subsetgrad", "check", EXAMPLE)
    assert checked.returncode == 1, checked.stderr
    assert f"{EXAMPLE}:{line}:1: SG101 " in checked.stdout
    assert checked.stdout.endswith("Found 1 finding (1 warning).\n")
    assert checked.stderr.startswith(f"subsetgrad check: note: stopped at {EXAMPLE}:")
