"""The wheel installs exactly one top-level import name, ``tfsched``, and runs from it.

The repository keeps ``extender/``, ``scoring/``, ``autoscale/`` … at its top
level; pyproject's package-dir maps them under ``tfsched`` so the installed
distribution does not claim names that unrelated PyPI projects use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("clustermodel", "kubeapi", "scoring", "allocation", "extender", "autoscale", "devcluster")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("tfsched-*.whl")
    return path


def test_wheel_has_one_top_level_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["tfsched"]
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"tfsched"}
    for package in SUBPACKAGES:
        assert f"tfsched/{package}/__init__.py" in names, package
    assert "tfsched/allocation/ledger.py" in names and "tfsched/server.py" in names


def test_installed_wheel_imports_from_itself(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    installed = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")}
    assert installed - {"bin"} == {"tfsched"}  # bin/ holds the console script
    # The target comes first on sys.path, so these resolve to the wheel's files, not the checkout's.
    code = (
        "import tfsched.server, tfsched.extender.app, tfsched.autoscale.loop, tfsched.allocation.ledger;"
        "print(tfsched.extender.app.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(target / "tfsched" / "extender")), done.stdout
