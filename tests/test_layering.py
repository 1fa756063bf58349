"""The package layering of docs/architecture.md, checked on every module's imports.

Each package may import only the packages listed for it (lazy imports inside
functions count too); the autoscaler's pure core may not import its edges.
A new import that breaks the picture fails here, not in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Folder in the repository → the installed package under the tfsched name.
FOLDERS = {
    "clustermodel": "clustermodel",
    "scoring": "scoring",
    "kubeapi": "kubeapi",
    "allocation": "allocation",
    "extender": "extender",
    "autoscale": "autoscale",
    "devcluster": "devcluster",
    "tfsched": "",  # the command and the composition root
}

ALLOWED: dict[str, set[str]] = {
    "clustermodel": {"clustermodel"},
    "scoring": {"scoring", "clustermodel"},
    "kubeapi": {"kubeapi", "clustermodel"},
    "allocation": {"allocation", "scoring", "clustermodel"},
    "extender": {"extender", "allocation", "scoring", "clustermodel", "kubeapi"},
    "autoscale": {"autoscale", "allocation", "clustermodel", "kubeapi"},
    "devcluster": {"devcluster", "autoscale", "allocation", "clustermodel", "kubeapi"},
    "": set(FOLDERS.values()),
}

# The autoscaler's pure core: no I/O, so none of its edges and no Kubernetes.
AUTOSCALE_CORE = {
    "gomath",
    "histogram",
    "bank",
    "usage",
    "columns",
    "numbers",
    "estimators",
    "vertical",
    "cron",
    "replicas",
    "merge",
    "recommend",
}
CORE_ALLOWED = {f"autoscale.{m}" for m in AUTOSCALE_CORE} | {"clustermodel"}
# Pure parts of the cluster model (everything but the snapshot file reader).
PURE_CLUSTERMODEL_FORBIDDEN = {"aiohttp", "kubernetes_asyncio", "urllib.request", "socket"}


def _modules() -> list[tuple[str, str, Path]]:
    out = []
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).glob("*.py")):
            out.append((folder, package, path))
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # ``from tfsched.clustermodel import annotations`` imports a module too.
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def _target(name: str) -> str | None:
    """The tfsched package (``''`` for the root) an import names, or None if not ours."""
    first = name.split(".")[0]
    if first in FOLDERS and first != "tfsched":
        return f"old:{first}"
    if name != "tfsched" and not name.startswith("tfsched."):
        return None
    rest = name.removeprefix("tfsched").removeprefix(".")
    head = rest.split(".")[0]
    return head if head in FOLDERS.values() and head else ""


@pytest.mark.parametrize(("folder", "package", "path"), _modules(), ids=lambda v: str(v))
def test_imports_follow_the_layering(folder: str, package: str, path: Path) -> None:
    problems = []
    for line, name in _imports(path):
        target = _target(name)
        if target is None:
            continue
        if target.startswith("old:"):
            problems.append(f"line {line}: imports {name!r} by its old top-level name; use tfsched.{name}")
            continue
        if target == "" and name in ("tfsched",):
            continue
        if target not in ALLOWED[package]:
            problems.append(f"line {line}: {package or 'tfsched'} may not import {name}")
        if package == "autoscale" and path.stem in AUTOSCALE_CORE and target:
            module = ".".join(name.removeprefix("tfsched.").split(".")[:2])
            if target == "autoscale" and module not in CORE_ALLOWED and module != "autoscale":
                problems.append(f"line {line}: the pure core module {path.stem} may not import the edge {name}")
            if target not in ("autoscale", "clustermodel"):
                problems.append(f"line {line}: the pure core module {path.stem} may not import {name}")
    assert not problems, f"{path.relative_to(REPO)}:\n" + "\n".join(problems)


def test_pure_cluster_model_does_no_network_io() -> None:
    problems = []
    for path in sorted((REPO / "clustermodel").glob("*.py")):
        for line, name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in PURE_CLUSTERMODEL_FORBIDDEN):
                problems.append(f"{path.name}:{line} imports {name}")
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The checker itself must fail on an upward import (a check that cannot fail checks nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from tfsched.extender.app import create_app\nimport autoscale.loop\n")
    targets = [_target(name) for _, name in _imports(bad)]
    assert "extender" in targets and "old:autoscale" in targets
    assert "extender" not in ALLOWED["autoscale"] and "autoscale" not in ALLOWED["extender"]
