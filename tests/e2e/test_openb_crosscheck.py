"""The openb replay's model of kube-scheduler checked against the real one.

bench/bench_openb.py models kube-scheduler's part (NodeResourcesFit's filter, the
profile's scores, the extender weights) and calls tfsched over HTTP. Here a prefix
of the same trace goes through the local control plane instead: the real
kube-scheduler with the chart's ``scoreAllPods`` rendering (extendScheduler
topology), and a real ``tfsched serve`` in ``LeastFragmentation`` mode watching the
API server. One pod at a time, as the replay sends them; each must land on the
node the replay predicts, and the pods the replay drops must stay Pending.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest
import yaml

from tests.e2e.conftest import Cluster
from tfsched.clustermodel.objects import gpu_name
from tfsched.devcluster import chart, processes
from tfsched.devcluster.binaries import REPO
from tfsched.scoring.modes import PlacementMode

sys.path.insert(0, str(REPO / "bench"))
import bench_openb as openb

pytestmark = pytest.mark.e2e

# A small cluster with the trace's shapes: CPU-rich T4 nodes, 8-GPU G2/G3 nodes, a small P100.
NODE_NAMES = (
    "openb-node-0228",  # G3, 128 CPUs, 8 GPUs
    "openb-node-0229",  # V100M32, 96 CPUs, 8 GPUs
)
NODES_PER_MODEL = {"G2": 3, "T4": 2, "P100": 1, "V100M16": 1}
PREFIX = 84  # pods, asking ~130 % of the 46 GPUs: some must be dropped
SEED = 42
TAINT = {"key": "tfsched.test/openb", "value": "crosscheck", "effect": "NoSchedule"}


def _nodes() -> list[openb.TraceNode]:
    every = openb.load_nodes(openb.DATA / "openb_node_list_gpu_node.csv")
    chosen = [n for n in every if n.name in NODE_NAMES]
    for model, count in NODES_PER_MODEL.items():
        chosen += [n for n in every if n.model == model and n.name not in NODE_NAMES][:count]
    return chosen


def _api_objects(nodes: list[openb.TraceNode]) -> tuple[list[dict], list[dict]]:
    """The snapshot's Node and GPU objects; nodes labelled and tainted so only this test's pods use them."""
    with tempfile.TemporaryDirectory() as tmp:
        items = orjson.loads(openb.snapshot(nodes, Path(tmp) / "nodes.json").read_bytes())["items"]
    node_objs = [o for o in items if o["kind"] == "Node"]
    for node in node_objs:
        node["metadata"]["labels"]["tfsched.test/openb"] = "crosscheck"
        node["spec"]["taints"] = [TAINT]
    return node_objs, [o for o in items if o["kind"] != "Node"]


def _pod(pod: openb.TracePod, namespace: str) -> dict:
    obj = openb.pod_object(pod)
    obj["metadata"] = {"name": pod.name, "namespace": namespace, "annotations": obj["metadata"]["annotations"]}
    obj["spec"]["nodeSelector"] = {"tfsched.test/openb": "crosscheck"}
    obj["spec"]["tolerations"] = [{"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"]}]
    obj["spec"]["containers"][0]["image"] = "registry.k8s.io/pause:3.10"
    obj.pop("status")
    return obj


def _outcome(cluster: Cluster, namespace: str, name: str) -> str | bool | None:
    """The pod's node; None once kube-scheduler has found it unschedulable; False while undecided."""
    pod = cluster.get_json("pod", name, "-n", namespace)
    if pod["spec"].get("nodeName"):
        return pod["spec"]["nodeName"]
    for cond in pod.get("status", {}).get("conditions", []):
        if cond["type"] == "PodScheduled" and cond["status"] == "False" and cond.get("reason") == "Unschedulable":
            return None
    return False


def _await_outcome(cluster: Cluster, namespace: str, name: str, timeout: float = 60) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = _outcome(cluster, namespace, name)
        if outcome is not False:
            return outcome
        time.sleep(0.1)
    raise AssertionError(f"{name} neither scheduled nor found unschedulable in {timeout} s")


def test_a_trace_prefix_lands_where_the_replay_predicts(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    nodes = _nodes()
    pods = openb.load_pods(openb.DATA / "openb_pod_list_default.csv")
    capacity = sum(n.gpus for n in nodes) * openb.GPU_MILLI
    order = openb.arrivals(pods, capacity, SEED)[:PREFIX]

    openb.snapshot(nodes, tmp_path / "nodes.json")
    mode = PlacementMode.LEAST_FRAGMENTATION.value
    predicted = openb.replay(nodes, pods, mode, SEED, tmp_path, openb.SCORE_ALL_PODS, order=order).choices
    # The prefix means something only if it has both kinds of pod, and drops.
    assert any(p.gpus == 0 for p in order) and any(0 < p.gpu_milli < openb.GPU_MILLI for p in order)
    assert None in predicted and sum(c is not None for c in predicted) > PREFIX // 2

    config = yaml.safe_load(cluster.dev.tfsched_config.read_text())
    config["scheduling"]["placementMode"] = mode
    tfsched_config = tmp_path / "tfsched-lf.yaml"
    tfsched_config.write_text(yaml.safe_dump(config))
    values = {"topology": "extendScheduler", "scheduler": {"scoreAllPods": True}}
    rendering = chart.scheduler_config(chart.render(values))

    node_objs, gpu_objs = _api_objects(nodes)
    dev = cluster.dev
    quiet = dict(say=lambda *_: None)
    with cluster.without("tfsched", "kube-scheduler"):
        cluster.dev.add_nodes(node_objs, gpu_objs)
        started = [dev.start_extender(**quiet, name="tfsched-openb", config=tfsched_config)]
        try:
            started.append(dev.start_scheduler(**quiet, name="kube-scheduler-openb", config=rendering))
            actual: list[str | None] = []
            for pod in order:
                cluster.apply(_pod(pod, namespace))
                outcome = _await_outcome(cluster, namespace, pod.name)
                actual.append(outcome)
                if outcome is not None and not pod.gpus:
                    time.sleep(0.5)  # bound by kube-scheduler itself: tfsched learns it from its watch
                if actual[-1] != predicted[len(actual) - 1]:
                    break  # the rest would follow from a different state
            pairs = enumerate(zip(predicted, actual, strict=False))
            diffs = [(i, order[i].name, p, a) for i, (p, a) in pairs if p != a]
            assert not diffs, f"first differences (index, pod, replay, kube-scheduler): {diffs[:5]}"
            assert len(actual) == len(predicted)
        finally:
            for record in reversed(started):
                processes.stop(record)
            cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force", check=False)
            cluster.wait(lambda: not cluster.pods(namespace), timeout=120, what="the prefix's pods to be deleted")
            cluster.kubectl("delete", "nodes", *[n.name for n in nodes], check=False)
            gpus = [gpu_name(n.name, i) for n in nodes for i in range(n.gpus)]
            cluster.kubectl("delete", "gpus.tensor-fusion.ai", *gpus, check=False)
