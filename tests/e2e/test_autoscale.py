"""The autoscale loop end to end: real Prometheus scraping a synthetic usage
exporter, the real kube-scheduler placing through tfsched, status read with kubectl."""

from __future__ import annotations

import re
import signal
import time
from datetime import UTC, datetime

import pytest

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.gpurequest import parse_gpu_request

from .conftest import Cluster, clear_usage, set_clock, set_usage, tick
from .test_scheduling import assert_no_overcommit, bound, gpu_ids

pytestmark = pytest.mark.e2e

GiB = 2**30
MESSAGE = re.compile(r"TFLOPS scaled (up|down) due to \(\S+\) (below lower|above upper) bound \(\S+\)")


def workload(namespace: str, name: str, *, target: str = "all", enable: bool = True, extra=None) -> dict:
    config = {
        "autoSetResources": {"enable": enable, "targetResource": target, "confidenceInterval": "10s"},
        **(extra or {}),
    }
    return {
        "apiVersion": ann.GROUP_VERSION,
        "kind": ann.WORKLOAD_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 3,
            "resources": {"requests": {"tflops": "40", "vram": "8Gi"}, "limits": {"tflops": "80", "vram": "16Gi"}},
            "autoScalingConfig": config,
        },
    }


def deployment(namespace: str, name: str, replicas: int, annotations: dict[str, str]) -> dict:
    notes = {ann.WORKLOAD: name, **annotations}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": notes},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {"limits": {ann.MANAGED_RESOURCE: "1"}},
                        }
                    ],
                },
            },
        },
    }


DECLARED = {
    ann.TFLOPS_REQUEST: "40",
    ann.TFLOPS_LIMIT: "80",
    ann.VRAM_REQUEST: "8Gi",
    ann.VRAM_LIMIT: "16Gi",
}


def running(cluster: Cluster, namespace: str, count: int, timeout: float = 90) -> list[dict]:
    def ready():
        pods = [
            p
            for p in cluster.pods(namespace)
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        return pods if len(pods) >= count else None

    return cluster.wait(ready, timeout=timeout, what=f"{count} running pods in {namespace}")


def feed(
    cluster: Cluster, namespace: str, pods: list[dict], *, tflops: float, vram: float, seconds: float = 12
) -> None:
    for pod in pods:
        set_usage(cluster, namespace, pod["metadata"]["name"], tflops=tflops, vram=vram)
    time.sleep(seconds)  # Prometheus scrapes every second


def tfw(cluster: Cluster, namespace: str, name: str) -> dict:
    return cluster.get_json("tfw", name, "-n", namespace)


def tfw_columns(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    """``kubectl get tfw`` as a person reads it: header -> value (headers have spaces, so by position)."""
    header, *rows = cluster.kubectl("get", "tfw", name, "-n", namespace).stdout.splitlines()
    starts = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    ends = [start for start, _ in starts[1:]] + [None]
    return {title: rows[0][start:end].strip() for (start, title), end in zip(starts, ends, strict=True)}


def condition(obj: dict, kind: str) -> dict | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def test_seed_scenario_recommends_applies_in_place_and_kubectl_shows_it(cluster: Cluster, namespace: str):
    cluster.apply(workload(namespace, "infer"))
    cluster.apply(
        deployment(
            namespace,
            "infer",
            3,
            {**DECLARED, ann.AUTO_RESOURCES: "true", ann.AUTO_SCALE_TARGET_RESOURCE: "all"},
        )
    )
    pods = running(cluster, namespace, 3)
    feed(cluster, namespace, pods, tflops=4, vram=2 * GiB)
    tick(cluster)

    def applied():
        obj = tfw(cluster, namespace, "infer")
        return obj if obj.get("status", {}).get("appliedRecommendedReplicas") == 3 else None

    obj = cluster.wait(lambda: (tick(cluster), applied())[1], timeout=60, what="3 pods running the recommendation")
    status = obj["status"]
    rec = status["recommendation"]
    cond = condition(obj, ann.CONDITION_RECOMMENDATION_PROVIDED)
    assert cond is not None and cond["reason"] == ann.REASON_OUT_OF_ESTIMATED_BOUND and cond["status"] == "True"
    assert MESSAGE.search(cond["message"]), cond["message"]
    assert "VRAM scaled down due to (8Gi) above upper bound" in cond["message"]
    tflops = float(rec["requests"]["tflops"].rstrip("m")) / (1000 if rec["requests"]["tflops"].endswith("m") else 1)
    assert 4 <= tflops < 10
    for pod in cluster.pods(namespace):
        notes = pod["metadata"]["annotations"]
        assert notes[ann.TFLOPS_REQUEST] == rec["requests"]["tflops"]
        assert notes[ann.VRAM_REQUEST] == rec["requests"]["vram"]
        assert notes[ann.VRAM_LIMIT] == rec["limits"]["vram"]
    columns = tfw_columns(cluster, namespace, "infer")
    assert list(columns) == [
        "NAME", "MODE", "REC TFLOPS", "REC VRAM", "PROVIDED", "METRICS", "APPLIED", "REPLICAS", "CRON RULE", "AGE"
    ]  # fmt: skip
    assert columns["MODE"] == "all" and columns["PROVIDED"] == "True" and columns["METRICS"] == "True"
    assert columns["REC TFLOPS"] == rec["requests"]["tflops"] and columns["APPLIED"] == "3"
    # VRAM as Kubernetes writes quantities (a whole Mi at least), not a raw byte count.
    assert re.fullmatch(r"\d+(Mi|Gi)", columns["REC VRAM"]) and columns["REC VRAM"] == rec["requests"]["vram"]
    events = cluster.get_json("events", "-n", namespace, "--field-selector", "reason=ResourceScaledDown")
    assert events["items"]
    assert_no_overcommit(cluster)


def test_recommend_only_leaves_pods_untouched(cluster: Cluster, namespace: str):
    cluster.apply(workload(namespace, "watch", target=""))
    cluster.apply(deployment(namespace, "watch", 2, {**DECLARED, ann.AUTO_RESOURCES: "true"}))
    pods = running(cluster, namespace, 2)
    feed(cluster, namespace, pods, tflops=4, vram=2 * GiB)
    tick(cluster)
    obj = cluster.wait(
        lambda: (tick(cluster), condition(tfw(cluster, namespace, "watch"), ann.CONDITION_RECOMMENDATION_PROVIDED))[1],
        timeout=60,
        what="a recommendation",
    )
    obj = tfw(cluster, namespace, "watch")
    assert obj["status"]["recommendation"]["requests"]["vram"] != "8Gi"
    columns = tfw_columns(cluster, namespace, "watch")
    assert (columns["MODE"], columns["PROVIDED"], columns["APPLIED"]) == ("recommend-only", "True", "0")
    assert obj["status"].get("appliedRecommendedReplicas", 0) == 0
    for pod in cluster.pods(namespace):
        assert {k: pod["metadata"]["annotations"][k] for k in DECLARED} == DECLARED


def test_cron_rule_applies_then_reverts_when_its_window_ends(cluster: Cluster, namespace: str):
    rule = {
        "enable": True,
        "name": "daytime",
        "start": "0 0 * * *",
        "end": "59 23 * * *",
        "desiredResources": {
            "requests": {"tflops": "44", "vram": "5Gi"},
            "limits": {"tflops": "99", "vram": "10Gi"},
        },
    }
    wl = workload(namespace, "cron", enable=False, extra={"cronScalingRules": [rule]})
    wl["spec"]["resources"] = {"requests": {"tflops": "20", "vram": "4Gi"}, "limits": {"tflops": "40", "vram": "8Gi"}}
    cluster.apply(wl)
    declared = {ann.TFLOPS_REQUEST: "20", ann.TFLOPS_LIMIT: "40", ann.VRAM_REQUEST: "4Gi", ann.VRAM_LIMIT: "8Gi"}
    cluster.apply(deployment(namespace, "cron", 2, declared))
    running(cluster, namespace, 2)
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute >= 58:
        pytest.fail("the cron window used here closes at 23:59 UTC; rerun after midnight")
    try:
        set_clock(cluster, 0)
        tick(cluster)
        obj = tfw(cluster, namespace, "cron")
        assert obj["status"]["activeCronScalingRule"]["name"] == "daytime"
        assert condition(obj, ann.CONDITION_RECOMMENDATION_PROVIDED)["reason"] == ann.REASON_RULE_ACTIVE
        for pod in cluster.pods(namespace):
            request = parse_gpu_request(pod["metadata"]["annotations"])
            assert (request.tflops_request, request.vram_request) == (44, 5 * GiB)
            assert (request.tflops_limit, request.vram_limit) == (99, 10 * GiB)
        assert_no_overcommit(cluster)
        # Move the loop's clock to 23:59:30 today: the window has ended.
        end = now.replace(hour=23, minute=59, second=30, microsecond=0)
        set_clock(cluster, (end - now).total_seconds())
        tick(cluster)
        obj = tfw(cluster, namespace, "cron")
        assert not obj["status"].get("activeCronScalingRule")
        assert condition(obj, ann.CONDITION_RECOMMENDATION_PROVIDED)["reason"] == ann.REASON_RULE_INACTIVE
        for pod in cluster.pods(namespace):
            request = parse_gpu_request(pod["metadata"]["annotations"])
            assert (request.tflops_request, request.vram_request, request.vram_limit) == (20, 4 * GiB, 8 * GiB)
    finally:
        set_clock(cluster, 0)


def test_recommendation_that_no_longer_fits_reschedules_the_pod(cluster: Cluster, namespace: str):
    cluster.apply(workload(namespace, "grow"))
    small = {ann.TFLOPS_REQUEST: "10", ann.TFLOPS_LIMIT: "10", ann.VRAM_REQUEST: "4Gi", ann.VRAM_LIMIT: "4Gi"}
    cluster.apply(deployment(namespace, "grow", 1, {**small, ann.AUTO_RESOURCES: "true"}))
    (pod,) = running(cluster, namespace, 1)
    (gpu,) = gpu_ids(pod)
    node = pod["spec"]["nodeName"]
    gpus = cluster.gpus()
    index = gpus[gpu]["status"]["index"]
    # Fill the rest of that GPU's VRAM so the grown request cannot stay there.
    free = _free_vram(cluster, gpu)
    filler = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "filler",
            "namespace": namespace,
            "annotations": {
                ann.TFLOPS_REQUEST: "1",
                ann.VRAM_REQUEST: str(int(free - 1 * GiB)),
                ann.GPU_INDICES: str(index),
            },
        },
        "spec": {
            "nodeSelector": {ann.HOSTNAME_LABEL: node},
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "c",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {ann.MANAGED_RESOURCE: "1"}},
                }
            ],
        },
    }
    cluster.apply(filler)
    cluster.wait(
        lambda: any(p["metadata"]["name"] == "filler" and gpu_ids(p) == [gpu] for p in cluster.pods(namespace)),
        timeout=60,
        what="the filler on the same GPU",
    )
    feed(cluster, namespace, [pod], tflops=10, vram=10 * GiB)

    def replaced():
        tick(cluster)
        pods = [p for p in bound(cluster.pods(namespace)) if p["metadata"]["name"].startswith("grow-")]
        new = [
            p
            for p in pods
            if p["metadata"]["uid"] != pod["metadata"]["uid"] and not p["metadata"].get("deletionTimestamp")
        ]
        return new[0] if new and gpu_ids(new[0]) else None

    new_pod = cluster.wait(replaced, timeout=120, what="the pod to be evicted and placed again")
    request = parse_gpu_request(new_pod["metadata"]["annotations"])
    assert request.vram_request > 10 * GiB
    assert gpu_ids(new_pod) != [gpu]
    obj = tfw(cluster, namespace, "grow")
    assert (
        parse_gpu_request({ann.VRAM_REQUEST: obj["status"]["recommendation"]["requests"]["vram"]}).vram_request
        == request.vram_request
    )
    events = cluster.get_json("events", "-n", namespace, "--field-selector", "reason=Rescheduled")
    assert events["items"]
    assert_no_overcommit(cluster)


def _free_vram(cluster: Cluster, gpu: str) -> float:
    from tfsched.clustermodel.quantity import parse_quantity

    capacity = parse_quantity(cluster.gpus()[gpu]["status"]["capacity"]["vram"])
    used = 0.0
    for pod in cluster.get_json("pods", "-A")["items"]:
        if gpu in gpu_ids(pod):
            used += parse_gpu_request(pod["metadata"]["annotations"]).vram_request
    return capacity - used


def test_replicas_follow_tflops_usage(cluster: Cluster, namespace: str):
    extra = {
        "autoSetReplicas": {
            "enable": True,
            "targetTFlopsOfLimits": 50,
            "minReplicas": 1,
            "maxReplicas": 3,
            "scaleUpStep": 1,
            "scaleDownStep": 1,
            "scaleUpCoolDownTime": "0s",
            "scaleDownCoolDownTime": "5s",
            "evaluationPeriod": "1m",
        }
    }
    cluster.apply(workload(namespace, "web", enable=False, extra=extra))
    cluster.apply(deployment(namespace, "web", 1, {**DECLARED, ann.AUTO_REPLICAS: "true"}))
    pods = running(cluster, namespace, 1)
    feed(cluster, namespace, pods, tflops=72, vram=2 * GiB, seconds=4)  # 90 % of the 80 TFLOPS limit
    tick(cluster)

    def replicas() -> int:
        return cluster.get_json("deployment", "web", "-n", namespace)["spec"]["replicas"]

    assert replicas() == 2
    pods = running(cluster, namespace, 2)
    feed(cluster, namespace, pods, tflops=72, vram=2 * GiB, seconds=3)
    tick(cluster)
    assert replicas() == 3
    pods = running(cluster, namespace, 3)
    feed(cluster, namespace, pods, tflops=72, vram=2 * GiB, seconds=3)
    tick(cluster)
    assert replicas() == 3  # max
    feed(cluster, namespace, pods, tflops=4, vram=2 * GiB, seconds=3)
    time.sleep(3)  # past the 5 s scale-down cooldown since the last scale-up
    tick(cluster)
    assert replicas() == 2


def test_recommendation_survives_a_restart(cluster: Cluster, namespace: str):
    cluster.apply(workload(namespace, "keep", target=""))
    cluster.apply(deployment(namespace, "keep", 2, {**DECLARED, ann.AUTO_RESOURCES: "true"}))
    pods = running(cluster, namespace, 2)
    feed(cluster, namespace, pods, tflops=6, vram=1 * GiB, seconds=15)
    tick(cluster)
    for pod in pods:  # freeze usage so nothing new arrives across the restart
        clear_usage(cluster, namespace, pod["metadata"]["name"])
    time.sleep(3)
    tick(cluster)
    before = tfw(cluster, namespace, "keep")["status"]
    assert before["recommendation"]["requests"]["vram"] != "8Gi"
    record = cluster.dev.records["tfsched"]
    import os

    os.kill(record.pid, signal.SIGTERM)
    cluster.wait(lambda: record.process() is None, timeout=30, what="tfsched to stop")
    assert "histogramCheckpoint" in tfw(cluster, namespace, "keep")["status"]
    cluster.dev.start_extender(say=lambda *_: None)
    cluster.dev.save()
    cluster.wait(lambda: _tick_ok(cluster), timeout=60, what="the new leader")
    after = tfw(cluster, namespace, "keep")["status"]
    assert after["recommendation"] == before["recommendation"]
    assert (
        condition({"status": after}, ann.CONDITION_RECOMMENDATION_PROVIDED)["message"]
        == condition({"status": before}, ann.CONDITION_RECOMMENDATION_PROVIDED)["message"]
    )


def _tick_ok(cluster: Cluster) -> bool:
    from .conftest import _post

    status, _ = _post(f"{cluster.dev.extender_url}/debug/autoscale/tick", {})
    return status == 200


def test_prometheus_down_changes_nothing_and_says_why(cluster: Cluster, namespace: str):
    cluster.apply(workload(namespace, "blind"))
    cluster.apply(deployment(namespace, "blind", 1, {**DECLARED, ann.AUTO_RESOURCES: "true"}))
    pods = running(cluster, namespace, 1)
    before_pods = {p["metadata"]["name"]: p["metadata"]["annotations"] for p in pods}
    cluster.dev.stop_component("prometheus")
    try:
        time.sleep(2)  # past one step (1 s) since the last fetch, so this interval queries
        tick(cluster)
        obj = tfw(cluster, namespace, "blind")
        cond = condition(obj, "MetricsAvailable")
        assert cond is not None and cond["status"] == "False"
        assert "nothing changed" in cond["message"]
        assert "recommendation" not in obj["status"]
        after_pods = {p["metadata"]["name"]: p["metadata"]["annotations"] for p in cluster.pods(namespace)}
        assert after_pods == before_pods
    finally:
        cluster.dev.start_prometheus()
    tick(cluster)
    cond = condition(tfw(cluster, namespace, "blind"), "MetricsAvailable")
    assert cond["status"] == "True"
