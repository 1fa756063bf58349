"""One real control plane for the end-to-end tests, brought up once per session.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler (with
config/scheduler-config.yaml) and ``tfsched serve`` run as processes on
127.0.0.1; nodes are kubelet-less with GPU objects; reads go through kubectl.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfsched.clustermodel.objects import gpu_pod
from tfsched.devcluster.binaries import ensure_binaries
from tfsched.devcluster.cluster import DevCluster
from tfsched.devcluster.spec import ClusterSpec

# 4 small nodes × 2 GPUs and 2 big nodes × 4 GPUs.
E2E_SPEC = {
    "nodes": [
        {"namePrefix": "small", "count": 4, "gpus": {"count": 2, "model": "T4", "tflops": 100, "vram": "16Gi"}},
        {"namePrefix": "big", "count": 2, "gpus": {"count": 4, "model": "A100", "tflops": 312, "vram": "80Gi"}},
    ]
}


class Cluster:
    """Test-side helpers over a running DevCluster."""

    def __init__(self, dev: DevCluster) -> None:
        self.dev = dev

    def kubectl(self, *args: str, check: bool = True, input: str | None = None):
        return self.dev.kubectl(*args, check=check, input=input)

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, *objects: dict) -> None:
        # JSON, not YAML: PyYAML leaves strings such as "1e306" unquoted, which kubectl reads as numbers.
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))

    def pods(self, namespace: str) -> list[dict]:
        return self.get_json("pods", "-n", namespace)["items"]

    def gpus(self) -> dict[str, dict]:
        return {g["metadata"]["name"]: g for g in self.get_json("gpus")["items"]}

    def wait(self, predicate, timeout: float = 60, interval: float = 0.5, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    @contextlib.contextmanager
    def without(self, *components: str) -> Iterator[None]:
        """The session's own ``tfsched`` and/or ``kube-scheduler`` stopped for a
        test that runs others in their place; started again afterwards."""
        restart = {"tfsched": self.dev.start_extender, "kube-scheduler": self.dev.start_scheduler}
        for name in components:
            assert name in restart, name
            self.dev.stop_component(name)
        try:
            yield
        finally:
            for name in components:
                restart[name](say=lambda *_: None)
            self.dev.save()

    def extender_metric(self, name: str, labels: str) -> float:
        status, body = self.dev._get(f"{self.dev.extender_url}/metrics")
        assert status == 200
        for line in body.decode().splitlines():
            if line.startswith(f"{name}{{{labels}}}"):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    root: Path = tmp_path_factory.mktemp("devcluster")
    dev = DevCluster(root=root / "state", bin_dir=ensure_binaries())
    # Autoscale intervals run only when a test asks (/debug/autoscale/tick), so tests are deterministic.
    dev.up(extender_args=["--enable-test-hooks"], autoscale_interval="1h", say=lambda *_: None)
    try:
        nodes, gpus = ClusterSpec.model_validate(E2E_SPEC).objects()
        dev.add_nodes(nodes, gpus)
        yield Cluster(dev)
    finally:
        # Keep the process logs next to pytest's temporary folders for post-mortems.
        shutil.copytree(dev.root / "logs", root / "logs", dirs_exist_ok=True)
        dev.down(say=lambda *_: None)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test; its pods are gone (not just terminating) afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    # Controllers first, or they recreate the pods we delete.
    cluster.kubectl("delete", "deployments,replicasets,tfw", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "pods", "--all", "-n", name, "--wait=false", check=False)
    cluster.wait(lambda: not cluster.pods(name), timeout=120, what=f"pods of {name} to be deleted")
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def make_pod(name: str, namespace: str, **kwargs) -> dict:
    pod = gpu_pod(name, namespace=namespace, **kwargs)
    pod.pop("status", None)
    pod["spec"]["terminationGracePeriodSeconds"] = 0
    return pod


def _post(url: str, body: dict, method: str = "POST") -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def set_usage(cluster: Cluster, namespace: str, pod: str, *, tflops: float, vram: float) -> None:
    """What the synthetic exporter reports for one pod (Prometheus scrapes it every second)."""
    status, body = _post(
        f"{cluster.dev.usage_url}/usage",
        {"namespace": namespace, "pod": pod, "gpu": "0", "tflops": tflops, "vram": vram},
        method="PUT",
    )
    assert status == 200, body


def clear_usage(cluster: Cluster, namespace: str, pod: str) -> None:
    status, body = _post(f"{cluster.dev.usage_url}/usage", {"namespace": namespace, "pod": pod}, method="DELETE")
    assert status == 200, body


def tick(cluster: Cluster) -> None:
    """Run one autoscale interval now, in the real tfsched process."""
    status, body = _post(f"{cluster.dev.extender_url}/debug/autoscale/tick", {})
    assert status == 200, body


def set_clock(cluster: Cluster, offset_seconds: float) -> None:
    status, body = _post(f"{cluster.dev.extender_url}/debug/clock", {"offsetSeconds": offset_seconds})
    assert status == 200, body
