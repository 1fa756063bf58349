"""Where the Kubernetes binaries (and helm) are, building them when they are missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "hack" / "build-kube.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm")


class BinariesError(RuntimeError):
    pass


def bin_dir() -> Path:
    """The versioned cache folder the build script writes to (defined in the script)."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-bin-dir"], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def ensure_binaries(*, quiet: bool = False) -> Path:
    """Build whatever is missing (the script is a no-op when all are there)."""
    folder = bin_dir()
    if all(os.access(folder / name, os.X_OK) for name in BINARIES):
        return folder
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if quiet else None, text=True
    )
    if result.returncode != 0:
        raise BinariesError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])
