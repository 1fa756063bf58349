"""The Helm chart (``deploy/helm/tfsched``), rendered by the real helm.

The devcluster and the tests take what they run from here, so what CI
exercises is what ``helm install`` creates: the KubeSchedulerConfiguration,
tfsched's configuration, the webhook registration and the RBAC.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tfsched.devcluster.binaries import REPO, ensure_binaries

CHART = REPO / "deploy" / "helm" / "tfsched"
VERSIONS = REPO / "hack" / "kube-version.env"
RELEASE = "tfsched"
NAMESPACE = "tfsched-system"

Obj = dict[str, Any]


class ChartError(RuntimeError):
    pass


def kube_version() -> str:
    """The Kubernetes version the binaries are built at (hack/kube-version.env)."""
    for line in VERSIONS.read_text().splitlines():
        if line.startswith("KUBE_VERSION="):
            return line.split("=", 1)[1].strip()
    raise ChartError(f"{VERSIONS}: no KUBE_VERSION")


def helm(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(ensure_binaries(quiet=True) / "helm"), *args], capture_output=True, text=True, input=input, timeout=120
    )
    if check and result.returncode != 0:
        raise ChartError(f"helm {' '.join(args)}: {result.stderr.strip()}")
    return result


def render(values: Mapping[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE) -> list[Obj]:
    """``helm template`` with ``values`` (as a values file) for this Kubernetes version."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", kube_version()]
    if values:
        args += ["--values", "-"]
    out = helm(*args, input=yaml.safe_dump(dict(values)) if values else None).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[Obj], kind: str, name: str) -> Obj:
    for doc in docs:
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            return doc
    raise ChartError(f"the rendered chart has no {kind} {name}")


def config_file(docs: list[Obj], configmap: str, key: str) -> Obj:
    """A YAML file carried in one of the rendered ConfigMaps, parsed."""
    return yaml.safe_load(find(docs, "ConfigMap", configmap)["data"][key])


def scheduler_config(docs: list[Obj], release: str = RELEASE) -> Obj:
    return config_file(docs, f"{release}-scheduler-config", "scheduler-config.yaml")


def tfsched_config(docs: list[Obj], release: str = RELEASE) -> Obj:
    return config_file(docs, f"{release}-config", "tfsched.yaml")


def container(docs: list[Obj], kind: str, name: str, container_name: str) -> Obj:
    spec = find(docs, kind, name)["spec"]["template"]["spec"]
    for c in spec["containers"]:
        if c["name"] == container_name:
            return c
    raise ChartError(f"{kind} {name} has no container {container_name}")


def write_config(path: Path, config: Obj) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


SCHEDULER_CONFIG_HEADER = """\
# kube-scheduler configuration for tfsched (kubescheduler.config.k8s.io/v1), for a
# kube-scheduler of your own control plane (kind, kubeadm): the chart's
# topology=extendScheduler rendering, written by
#   .venv/bin/python -m tfsched.devcluster.chart > config/scheduler-config.yaml
# (tests/deploy/test_chart.py checks it is current). `tfsched devcluster` runs it with
# clientConnection.kubeconfig and the extender's port set for the cluster it starts.
# kube-scheduler decodes it strictly: an unknown or misspelt field is an error.
"""


def extend_scheduler_config_text() -> str:
    docs = render({"topology": "extendScheduler"})
    return (
        SCHEDULER_CONFIG_HEADER
        + find(docs, "ConfigMap", f"{RELEASE}-scheduler-config")["data"]["scheduler-config.yaml"]
    )


if __name__ == "__main__":
    print(extend_scheduler_config_text(), end="")
