"""Placement through a real kube-scheduler, a real kube-apiserver and etcd; read with kubectl."""

from __future__ import annotations

import signal
import time
from collections import defaultdict

import pytest

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.gpurequest import parse_gpu_request
from tfsched.clustermodel.quantity import parse_quantity

from .conftest import Cluster, make_pod

pytestmark = pytest.mark.e2e


def bound(pods: list[dict]) -> list[dict]:
    return [p for p in pods if p["spec"].get("nodeName")]


def gpu_ids(pod: dict) -> list[str]:
    return [g for g in pod["metadata"].get("annotations", {}).get(ann.GPU_IDS, "").split(",") if g]


def gpu_use(cluster: Cluster) -> tuple[dict[str, dict], dict[str, float], dict[str, float]]:
    """(GPUs by name, TFLOPS used, VRAM used per GPU), summed from the effective requests of every bound pod."""
    gpus = cluster.gpus()
    used_t: dict[str, float] = defaultdict(float)
    used_v: dict[str, float] = defaultdict(float)
    for pod in cluster.get_json("pods", "-A")["items"]:
        if pod["status"].get("phase") in ("Succeeded", "Failed") or not pod["spec"].get("nodeName"):
            continue  # only bound pods hold GPUs (gpu-ids on an unbound pod are a squatter's)
        request = parse_gpu_request(pod["metadata"].get("annotations", {}))
        for g in gpu_ids(pod):
            cap_t = parse_quantity(gpus[g]["status"]["capacity"]["tflops"])
            used_t[g] += request.tflops_on(cap_t)
            used_v[g] += request.vram_request
    return gpus, used_t, used_v


def assert_no_overcommit(cluster: Cluster) -> None:
    """Sum of effective requests on each GPU ≤ its capacity, read from every pod in the cluster."""
    gpus, used_t, used_v = gpu_use(cluster)
    for g, gpu in gpus.items():
        cap = gpu["status"]["capacity"]
        assert used_t[g] <= parse_quantity(cap["tflops"]) + 1e-6, f"{g} TFLOPS over-committed: {used_t[g]}"
        assert used_v[g] <= parse_quantity(cap["vram"]), f"{g} VRAM over-committed: {used_v[g]}"


def wait_bound(cluster: Cluster, namespace: str, count: int, timeout: float = 90) -> list[dict]:
    return cluster.wait(
        lambda: (b := bound(cluster.pods(namespace))) and len(b) >= count and b,
        timeout=timeout,
        what=f"{count} bound pods in {namespace}",
    )


def test_pods_land_only_where_gpus_have_room(cluster: Cluster, namespace: str):
    # 200 TFLOPS / 40Gi per GPU: only the big nodes' A100s (312, 80Gi) can hold it.
    cluster.apply(*(make_pod(f"large-{i}", namespace, tflops="200", vram="40Gi") for i in range(3)))
    pods = wait_bound(cluster, namespace, 3)
    gpus = cluster.gpus()
    for pod in pods:
        node = pod["spec"]["nodeName"]
        assert node.startswith("big-"), node
        ids = gpu_ids(pod)
        assert len(ids) == 1
        assert gpus[ids[0]]["status"]["nodeSelector"][ann.HOSTNAME_LABEL] == node
    assert_no_overcommit(cluster)


def test_gpu_count_two_lands_on_a_node_with_two_fitting_gpus(cluster: Cluster, namespace: str):
    cluster.apply(make_pod("pair", namespace, tflops="150", vram="30Gi", gpu_count=2))
    (pod,) = wait_bound(cluster, namespace, 1)
    ids = gpu_ids(pod)
    assert len(ids) == 2 and len(set(ids)) == 2
    gpus = cluster.gpus()
    assert {gpus[g]["status"]["nodeSelector"][ann.HOSTNAME_LABEL] for g in ids} == {pod["spec"]["nodeName"]}
    assert pod["spec"]["nodeName"].startswith("big-")


def test_pod_that_fits_nowhere_stays_pending_with_the_extenders_reason(cluster: Cluster, namespace: str):
    cluster.apply(make_pod("huge", namespace, tflops="500", vram="8Gi"))

    def failed_event() -> str:
        events = cluster.get_json("events", "-n", namespace, "--field-selector", "reason=FailedScheduling")
        return " ".join(e.get("message", "") for e in events["items"])

    message = cluster.wait(failed_event, timeout=60, what="a FailedScheduling event")
    assert "insufficient TFLOPS: need 1 GPU with 500 TFLOPS free, largest free 312 TFLOPS" in message
    # Larger than every GPU: unresolvable, so kube-scheduler does not look for victims.
    assert "no GPU on the node is that large" in message and "Preemption is not helpful" in message
    (pod,) = cluster.pods(namespace)
    assert not pod["spec"].get("nodeName") and pod["status"]["phase"] == "Pending"


def _capacity_for(cluster: Cluster, tflops: float, vram: float) -> int:
    """How many pods of this size the cluster holds now (GPU by GPU, free space read from pods)."""
    gpus = cluster.gpus()
    free: dict[str, list[float]] = {
        g: [parse_quantity(o["status"]["capacity"]["tflops"]), parse_quantity(o["status"]["capacity"]["vram"])]
        for g, o in gpus.items()
    }
    for pod in cluster.get_json("pods", "-A")["items"]:
        request = parse_gpu_request(pod["metadata"].get("annotations", {}))
        for g in gpu_ids(pod):
            free[g][0] -= request.tflops_request
            free[g][1] -= request.vram_request
    return sum(int(min(t // tflops, v // vram)) for t, v in free.values())


def test_burst_of_100_pods_never_overcommits(cluster: Cluster, namespace: str):
    capacity = _capacity_for(cluster, 40, 8 * 2**30)
    assert 60 <= capacity < 100
    cluster.apply(*(make_pod(f"burst-{i}", namespace, tflops="40", vram="8Gi") for i in range(100)))
    pods = wait_bound(cluster, namespace, capacity, timeout=180)
    time.sleep(3)  # let any over-eager bind show up
    pods = cluster.pods(namespace)
    assert len(pods) == 100
    assert len(bound(pods)) == capacity
    assert all(p["status"]["phase"] == "Pending" for p in pods if not p["spec"].get("nodeName"))
    assert_no_overcommit(cluster)


def test_recommendation_aware_placement(cluster: Cluster, namespace: str):
    workload = {
        "apiVersion": ann.GROUP_VERSION,
        "kind": ann.WORKLOAD_KIND,
        "metadata": {"name": "rec", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "resources": {"requests": {"tflops": "500", "vram": "100Gi"}, "limits": {"tflops": "500", "vram": "100Gi"}},
            "autoScalingConfig": {"autoSetResources": {"enable": True, "targetResource": "all"}},
        },
    }
    cluster.apply(workload)
    status = {
        "status": {
            "recommendation": {"requests": {"tflops": "30", "vram": "6Gi"}, "limits": {"tflops": "60", "vram": "12Gi"}}
        }
    }
    import json

    cluster.kubectl(
        "patch", "tfw", "rec", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    # The declared 500 TFLOPS / 100Gi fits no GPU; the recommendation does.
    pod = make_pod("rec-0", namespace, tflops="500", vram="100Gi", extra_annotations={ann.WORKLOAD: "rec"})
    cluster.apply(pod)
    (placed,) = wait_bound(cluster, namespace, 1)
    annotations = placed["metadata"]["annotations"]
    assert annotations[ann.TFLOPS_REQUEST] == "30" and annotations[ann.VRAM_REQUEST] == "6Gi"
    assert annotations[ann.TFLOPS_LIMIT] == "60" and annotations[ann.VRAM_LIMIT] == "12Gi"
    assert len(gpu_ids(placed)) == 1
    assert_no_overcommit(cluster)


def test_plain_pods_schedule_normally_and_never_reach_the_extender(cluster: Cluster, namespace: str):
    before = cluster.extender_metric("tfsched_extender_request_duration_seconds_count", 'verb="filter"')
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": namespace},
        "spec": {
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            "terminationGracePeriodSeconds": 0,
        },
    }
    cluster.apply(plain)
    (pod,) = wait_bound(cluster, namespace, 1)
    assert ann.GPU_IDS not in (pod["metadata"].get("annotations") or {})
    after = cluster.extender_metric("tfsched_extender_request_duration_seconds_count", 'verb="filter"')
    assert after == before


def test_extender_restart_mid_burst_loses_nothing(cluster: Cluster, namespace: str):
    capacity = _capacity_for(cluster, 60, 10 * 2**30)
    total = capacity + 10
    cluster.apply(*(make_pod(f"restart-{i}", namespace, tflops="60", vram="10Gi") for i in range(total)))
    cluster.wait(lambda: len(bound(cluster.pods(namespace))) >= 5, timeout=60, what="the first binds")
    record = cluster.dev.records["tfsched"]
    import os

    os.kill(record.pid, signal.SIGKILL)
    time.sleep(1)
    cluster.dev.start_extender(say=lambda *_: None)
    cluster.dev.save()
    wait_bound(cluster, namespace, capacity, timeout=240)
    time.sleep(3)
    pods = cluster.pods(namespace)
    assert len(pods) == total
    assert len(bound(pods)) == capacity
    assert_no_overcommit(cluster)
