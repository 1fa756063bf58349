"""The cold paths of the README's commands, which a warm CI machine never takes on its own.

CI runs where caches survive (the Kubernetes binaries in ~/.cache/tfsched, the
venv's packages), so a bootstrap step that only fails on a fresh machine would
stay green.  These tests take the cold paths themselves: hack/build-kube.sh
into an empty cache folder (Go's own build cache stays warm, so it links
rather than compiles: tens of seconds), and scripts/bootstrap.sh on a fresh
copy of the repository with no venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tfsched.devcluster.binaries import BINARIES

REPO = Path(__file__).resolve().parent.parent


def _warm_bin_dir() -> Path:
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "build-kube.sh"), "--print-bin-dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def test_build_kube_into_an_empty_cache_exits_zero(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    done = subprocess.run(
        ["bash", str(REPO / "hack" / "build-kube.sh")],
        env={**os.environ, "TFSCHED_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    bin_dir = Path(done.stdout.strip().splitlines()[-1])
    assert bin_dir.is_relative_to(cache)
    for name in BINARIES:
        assert os.access(bin_dir / name, os.X_OK), name
        assert f"built {name} (" in done.stderr
    assert f"all {len(BINARIES)} binaries ready" in done.stderr
    # The second run has nothing to do, and says so.
    again = subprocess.run(
        ["bash", str(REPO / "hack" / "build-kube.sh")],
        env={**os.environ, "TFSCHED_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "all binaries present and up to date" in again.stderr


def test_bootstrap_on_a_fresh_clone_without_a_venv(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], check=True, timeout=300)
    # The working tree as it is now (a test run may be on uncommitted work).
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    assert not (clone / ".venv").exists()
    # The binaries are checked cold by the test above; here they come from the warm cache.
    cache = _warm_bin_dir().parent.parent
    done = subprocess.run(
        ["bash", "scripts/bootstrap.sh"],
        cwd=clone,
        env={**os.environ, "TFSCHED_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "creating .venv" in done.stderr
    version = subprocess.run(
        [str(clone / ".venv" / "bin" / "tfsched"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert version.returncode == 0 and "serve" in version.stdout
    # Installed from the clone, not from this checkout.
    where = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c", "import tfsched.extender.app as m; print(m.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0 and where.stdout.strip().startswith(str(clone)), where.stdout + where.stderr
