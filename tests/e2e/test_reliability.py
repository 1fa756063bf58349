"""The allocation promise against a real control plane: squatters, poison pods
and restarts, racing replicas, re-created pods, half-GPU packing, GPU status,
and an API server that goes away."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import datetime

import pytest
import yaml

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.objects import gpu_name
from tfsched.clustermodel.quantity import parse_quantity
from tfsched.devcluster import processes
from tfsched.devcluster.cluster import MANUAL_SCHEDULER

from .conftest import Cluster, _post, make_pod
from .test_scheduling import assert_no_overcommit, bound, gpu_ids, gpu_use, wait_bound

pytestmark = pytest.mark.e2e


def pinned(pod: dict, node: str) -> dict:
    pod["spec"]["nodeSelector"] = {ann.HOSTNAME_LABEL: node}
    return pod


def manual(pod: dict) -> dict:
    """A pod no kube-scheduler takes: only the test's own /bind calls bind it."""
    pod["spec"]["schedulerName"] = MANUAL_SCHEDULER
    return pod


def events_of(cluster: Cluster, namespace: str, name: str) -> list[dict]:
    items = cluster.get_json("events", "-n", namespace)["items"]
    return [e for e in items if e["involvedObject"].get("name") == name]


def wait_reported(cluster: Cluster, namespace: str, name: str, reason: str) -> None:
    """Until an Event with ``reason`` is on the object ``name``."""
    cluster.wait(
        lambda: any(e["reason"] == reason for e in events_of(cluster, namespace, name)),
        timeout=30,
        what=f"{name} to be reported ({reason})",
    )


def restart_tfsched(cluster: Cluster, sig: int = signal.SIGKILL) -> None:
    record = cluster.dev.records["tfsched"]
    os.kill(record.pid, sig)
    cluster.wait(lambda: record.process() is None, timeout=30, what="tfsched to exit")
    cluster.dev.start_extender(say=lambda *_: None)


def test_squatters_gpu_ids_hold_nothing(cluster: Cluster, namespace: str):
    node = "small-0"
    squatter = manual(
        make_pod("squatter", namespace, tflops="100", vram="16Gi", gpu_ids=[gpu_name(node, 0), gpu_name(node, 1)])
    )
    cluster.apply(squatter)
    cluster.apply(*(pinned(make_pod(f"real-{i}", namespace, tflops="80", vram="12Gi"), node) for i in range(2)))
    pods = wait_bound(cluster, namespace, 2)
    assert sorted(p["metadata"]["name"] for p in pods) == ["real-0", "real-1"]
    assert_no_overcommit(cluster)
    wait_reported(cluster, namespace, "squatter", ann.EVENT_GPU_IDS_IGNORED)


def test_poison_pod_then_restart_reports_it_and_never_overcommits(cluster: Cluster, namespace: str):
    node = "big-1"
    poison = manual(make_pod("poison", namespace, tflops="1e306", vram="1e9999999", gpu_ids=[gpu_name(node, 0)]))
    cluster.apply(poison)
    # Fill the node: 4 GPUs × 312 TFLOPS, one 300-TFLOPS pod each.
    cluster.apply(*(pinned(make_pod(f"fill-{i}", namespace, tflops="300", vram="10Gi"), node) for i in range(4)))
    wait_bound(cluster, namespace, 4)
    restart_tfsched(cluster)
    cluster.apply(*(pinned(make_pod(f"more-{i}", namespace, tflops="100", vram="10Gi"), node) for i in range(4)))
    time.sleep(8)  # kube-scheduler retries them against the restarted tfsched
    names = sorted(p["metadata"]["name"] for p in bound(cluster.pods(namespace)))
    assert names == [f"fill-{i}" for i in range(4)], names
    assert_no_overcommit(cluster)
    wait_reported(cluster, namespace, "poison", ann.EVENT_GPU_IDS_IGNORED)


def test_recreated_pod_gets_a_fresh_allocation(cluster: Cluster, namespace: str):
    node = "small-1"
    pod = pinned(make_pod("again", namespace, tflops="90", vram="8Gi"), node)
    cluster.apply(pod)
    [first] = wait_bound(cluster, namespace, 1)
    cluster.kubectl("delete", "pod", "again", "-n", namespace, "--wait=true")
    cluster.apply(pod)
    [second] = wait_bound(cluster, namespace, 1)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert gpu_ids(second)
    # The old allocation is gone: both GPUs of the node hold at most this one pod.
    cluster.apply(pinned(make_pod("other", namespace, tflops="90", vram="8Gi"), node))
    pods = wait_bound(cluster, namespace, 2)
    assert len({g for p in pods for g in gpu_ids(p)}) == 2
    assert_no_overcommit(cluster)


def test_sixteen_half_gpu_pods_on_one_eight_gpu_node_two_per_gpu(cluster: Cluster, namespace: str):
    """The big nodes have 4 GPUs each, so the 8-GPU node is made for this test."""
    from tfsched.devcluster.spec import ClusterSpec

    prefix = f"eight-{uuid.uuid4().hex[:4]}"
    name = f"{prefix}-0"
    spec = {
        "nodes": [
            {"namePrefix": prefix, "count": 1, "gpus": {"count": 8, "model": "H100", "tflops": 100, "vram": "80Gi"}}
        ]
    }
    nodes, gpus = ClusterSpec.model_validate(spec).objects()
    cluster.dev.add_nodes(nodes, gpus)
    try:
        cluster.apply(*(pinned(make_pod(f"half-{i}", namespace, tflops="50", vram="40Gi"), name) for i in range(16)))
        pods = wait_bound(cluster, namespace, 16, timeout=120)
        per_gpu = Counter(g for p in pods for g in gpu_ids(p))
        assert sorted(per_gpu) == sorted(gpu_name(name, i) for i in range(8))
        assert set(per_gpu.values()) == {2}
        assert_no_overcommit(cluster)
    finally:
        cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--wait=true")
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)
        cluster.kubectl("delete", "gpus", *(gpu_name(name, i) for i in range(8)), "--wait=false", check=False)


def avail_table(cluster: Cluster) -> dict[str, tuple[float, float]]:
    """What ``kubectl get gpus`` shows in its Avail columns."""
    out = cluster.kubectl(
        "get", "gpus", "-o", "custom-columns=NAME:.metadata.name,T:.status.available.tflops,V:.status.available.vram"
    ).stdout
    table = {}
    for line in out.splitlines()[1:]:
        name, t, v = line.split()
        table[name] = (parse_quantity(t) if t != "<none>" else -1.0, parse_quantity(v) if v != "<none>" else -1.0)
    return table


def expected_avail(cluster: Cluster) -> dict[str, tuple[float, float]]:
    """Capacity minus what bound pods hold, per GPU."""
    gpus, used_t, used_v = gpu_use(cluster)
    return {
        g: (
            round(parse_quantity(o["status"]["capacity"]["tflops"]) - used_t[g], 3),
            parse_quantity(o["status"]["capacity"]["vram"]) - used_v[g],
        )
        for g, o in gpus.items()
    }


def test_kubectl_get_gpus_shows_what_is_available(cluster: Cluster, namespace: str):
    cluster.apply(*(make_pod(f"burst-{i}", namespace, tflops="30", vram="5Gi") for i in range(12)))
    wait_bound(cluster, namespace, 12)
    cluster.wait(lambda: avail_table(cluster) == expected_avail(cluster), timeout=30, what="AVAIL to match the pods")
    capacity = {g: parse_quantity(o["status"]["capacity"]["tflops"]) for g, o in cluster.gpus().items()}
    assert any(t < capacity[g] for g, (t, _) in avail_table(cluster).items())  # the burst shows
    cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--wait=true")
    cluster.wait(lambda: avail_table(cluster) == expected_avail(cluster), timeout=30, what="AVAIL after deletions")


def test_bind_refuses_what_kube_scheduler_would_not_ask(cluster: Cluster, namespace: str):
    plain = make_pod("plain", namespace)
    plain["metadata"]["annotations"] = {}
    plain["spec"]["containers"][0]["resources"] = {}
    other = make_pod("other", namespace, tflops="10", vram="1Gi")
    other["spec"]["schedulerName"] = "someone-else"
    excluded = manual(pinned(make_pod("excluded", namespace, tflops="10", vram="1Gi"), "small-0"))
    cluster.apply(plain, other, excluded)
    url = f"{cluster.dev.extender_url}/bind"
    for name, node, why in (
        ("plain", "small-2", "not a GPU pod"),
        ("other", "small-2", "schedulerName 'someone-else'"),
        ("excluded", "small-2", "nodeSelector"),
    ):
        status, body = _post(url, {"PodName": name, "PodNamespace": namespace, "Node": node})
        assert status == 200 and why in body["Error"], (name, body)
    for pod in cluster.pods(namespace):
        if pod["metadata"]["name"] != "plain":
            assert not pod["spec"].get("nodeName") and not gpu_ids(pod), pod["metadata"]["name"]


def second_tfsched(cluster: Cluster, name: str) -> tuple[str, object]:
    port = processes.free_port()
    record = cluster.dev.start_extender(say=lambda *_: None, name=name, port=port, lead=False)
    return f"http://127.0.0.1:{port}", record


def race_binds(calls: list[tuple[str, dict, str]], namespace: str) -> dict[str, dict]:
    """POST every (url, pod, node) bind at the same moment; the replies by pod name."""
    results: dict[str, dict] = {}
    barrier = threading.Barrier(len(calls))

    def call(url: str, pod: dict, node: str) -> None:
        barrier.wait()
        name = pod["metadata"]["name"]
        results[name] = _post(f"{url}/bind", {"PodName": name, "PodNamespace": namespace, "Node": node})[1]

    threads = [threading.Thread(target=call, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_replicas_racing_binds_never_overcommit(cluster: Cluster, namespace: str):
    url_b, record_b = second_tfsched(cluster, "tfsched-racer")
    urls = [cluster.dev.extender_url, url_b]
    try:
        for round_ in range(2):
            pairs = []
            for i in range(4):
                node = f"small-{i}"
                pair = [
                    manual(make_pod(f"r{round_}-{i}-{side}", namespace, tflops="60", vram="10Gi", gpu_count=2))
                    for side in "ab"
                ]
                pairs.append((node, pair))
            cluster.apply(*(p for _, pair in pairs for p in pair))
            time.sleep(1)  # both caches see the pods
            calls = [(urls[side], pod, node) for node, pair in pairs for side, pod in enumerate(pair)]
            results = race_binds(calls, namespace)
            for _, pair in pairs:
                errors = [results[p["metadata"]["name"]]["Error"] for p in pair]
                assert errors.count("") == 1, errors  # the leader bound one; the standby refused
                assert "standby" in errors[1]
            assert_no_overcommit(cluster)
            cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--wait=true")
    finally:
        processes.stop(record_b)


def test_api_server_restart_untrusted_then_recovers(cluster: Cluster, namespace: str):
    probe = {"Pod": make_pod("probe", namespace, tflops="10", vram="1Gi"), "NodeNames": ["small-3"]}
    status, body = _post(f"{cluster.dev.extender_url}/filter", probe)
    assert status == 200 and body["Error"] == "" and body["NodeNames"] == ["small-3"]
    cluster.dev.stop_component("kube-apiserver")
    try:
        cluster.wait(
            lambda: "cannot place" in _post(f"{cluster.dev.extender_url}/filter", probe)[1].get("Error", ""),
            timeout=40,
            what="tfsched to stop answering from its cache",
        )
        assert cluster.dev._get(f"{cluster.dev.extender_url}/readyz")[0] == 503
    finally:
        cluster.dev.start_apiserver(say=lambda *_: None)
    cluster.wait(lambda: cluster.dev._ok(f"{cluster.dev.extender_url}/readyz"), timeout=60, what="tfsched to recover")
    status, body = _post(f"{cluster.dev.extender_url}/filter", probe)
    assert body["Error"] == "" and body["NodeNames"] == ["small-3"]
    cluster.apply(*(make_pod(f"after-{i}", namespace, tflops="40", vram="4Gi") for i in range(10)))
    wait_bound(cluster, namespace, 10, timeout=120)
    assert_no_overcommit(cluster)


def test_a_new_leader_rewrites_stale_gpu_status_at_its_configured_pace(cluster: Cluster, tmp_path):
    """gpuStatus {qps, burst}: a new leader checks every GPU, and writes the statuses a
    predecessor left wrong at that pace, not all at once (the real API server's field
    manager times each write)."""
    stale = sorted(cluster.gpus())[:6]
    record = cluster.dev.records["tfsched"]
    paced = tmp_path / "paced.yaml"
    config = yaml.safe_load(cluster.dev.tfsched_config.read_text()) or {}
    paced.write_text(yaml.safe_dump({**config, "gpuStatus": {"qps": 1, "burst": 1}}))
    os.kill(record.pid, signal.SIGTERM)  # hands the lease back
    cluster.wait(lambda: record.process() is None, timeout=30, what="tfsched to exit")
    try:
        wrong = '{"status":{"available":{"tflops":"0","vram":"0"}}}'
        for name in stale:
            cluster.kubectl("patch", "gpu", name, "--subresource=status", "--type=merge", "-p", wrong)
        cluster.dev.start_extender(say=lambda *_: None, config=paced)
        expected = expected_avail(cluster)
        cluster.wait(
            lambda: all(avail_table(cluster)[g] == expected[g] for g in stale),
            timeout=60,
            what="the stale GPU statuses to be rewritten",
        )
        gpus = {g["metadata"]["name"]: g for g in cluster.get_json("gpus", "--show-managed-fields")["items"]}
        written = [
            datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
            for name in stale
            for entry in gpus[name]["metadata"]["managedFields"]
            if entry.get("manager") == "tfsched" and entry.get("subresource") == "status"
        ]
        assert len(written) == len(stale)
        # Six writes at one a second span five seconds; the times are whole seconds.
        span = (max(written) - min(written)).total_seconds()
        assert span >= 4, f"six stale statuses written within {span} s at qps 1"
    finally:  # the cluster's own tfsched back, for the tests after this one
        record = cluster.dev.records["tfsched"]
        if record.process() is not None:
            os.kill(record.pid, signal.SIGTERM)
            cluster.wait(lambda: record.process() is None, timeout=30, what="tfsched to exit")
        cluster.dev.start_extender(say=lambda *_: None)
