"""Bind refuses what kube-scheduler would never ask for, and answers nothing from an untrusted cache."""

from __future__ import annotations

import orjson
import pytest

from tests.serving import memory_app
from tfsched.allocation.config import SchedulingConfig
from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_object, gpu_pod, node_object
from tfsched.extender.app import ExtenderApp
from tfsched.extender.bind import Binder, MemoryPodWriter
from tfsched.kubeapi.leader import WriterGate

GiB = 2**30


def make_state(config: SchedulingConfig | None = None) -> ClusterState:
    state = ClusterState(config)
    nodes = [node_object(f"gpu-node-{i}") for i in range(3)]
    for i, node in enumerate(nodes):
        node["metadata"].setdefault("labels", {})["kubernetes.io/hostname"] = f"gpu-node-{i}"
    state.load(
        {
            Kind.NODE: nodes,
            Kind.GPU: [gpu_object(f"gpu-node-{i}", 0, tflops=312, vram=80 * GiB) for i in range(3)]
            + [gpu_object("ghost", 0, tflops=312, vram=80 * GiB)],
        }
    )
    return state


async def bind(client, pod: dict, node: str) -> str:
    meta = pod["metadata"]
    body = {"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta.get("uid", ""), "Node": node}
    resp = await client.post("/bind", data=orjson.dumps(body))
    assert resp.status == 200
    return (await resp.json())["Error"]


@pytest.fixture
async def setup(app_client):
    state = make_state()
    client = await app_client(memory_app(state))
    return state, client


def add(state: ClusterState, pod: dict) -> dict:
    state.cache.apply(Kind.POD, EventType.ADDED, pod)
    return pod


async def test_bind_refuses_a_non_gpu_pod(setup):
    state, client = setup
    pod = gpu_pod("plain", namespace="kube-system", uid="u1")
    pod["metadata"]["annotations"] = {}
    state.cache.objects[Kind.POD][("kube-system", "plain")] = pod  # as if fetched from the API
    assert "not a GPU pod" in await bind(client, pod, "gpu-node-0")
    assert "u1" not in state.ledger.allocations


async def test_bind_refuses_another_schedulers_pod(setup):
    state, client = setup
    pod = gpu_pod("other", tflops="10", vram="1Gi", uid="u2")
    pod["spec"]["schedulerName"] = "volcano"
    add(state, pod)
    assert "schedulerName 'volcano'" in await bind(client, pod, "gpu-node-0")
    assert not state.ledger.allocations


async def test_bind_refuses_a_node_the_nodeselector_excludes(setup):
    state, client = setup
    pod = gpu_pod("sel", tflops="10", vram="1Gi", uid="u3")
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "gpu-node-0"}
    add(state, pod)
    assert "nodeSelector" in await bind(client, pod, "gpu-node-2")
    assert await bind(client, pod, "gpu-node-0") == ""


async def test_bind_refuses_a_node_the_required_affinity_excludes(setup):
    state, client = setup
    pod = gpu_pod("aff", tflops="10", vram="1Gi", uid="u4")
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["gpu-node-1"]}]}
    pod["spec"]["affinity"] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
    }
    add(state, pod)
    assert "required node affinity" in await bind(client, pod, "gpu-node-1")
    assert await bind(client, pod, "gpu-node-2") == ""


async def test_bind_refuses_a_pod_bound_elsewhere_and_unknown_or_absent_nodes(setup):
    state, client = setup
    pod = add(state, gpu_pod("b", tflops="10", vram="1Gi", uid="u5", node="gpu-node-1"))
    assert "already bound to node gpu-node-1" in await bind(client, pod, "gpu-node-0")
    fresh = add(state, gpu_pod("c", tflops="10", vram="1Gi", uid="u6"))
    assert "unknown" in await bind(client, fresh, "nowhere")
    assert "no Node" in await bind(client, fresh, "ghost")  # GPU objects, but no Node object
    assert not state.ledger.allocations


async def test_scheduler_names_come_from_config(app_client):
    state = make_state(SchedulingConfig(schedulerNames=["tfsched"]))
    client = await app_client(memory_app(state))
    default = add(state, gpu_pod("d", tflops="10", vram="1Gi", uid="d1"))
    assert "schedulerName 'default-scheduler'" in await bind(client, default, "gpu-node-0")
    ours = gpu_pod("o", tflops="10", vram="1Gi", uid="o1")
    ours["spec"]["schedulerName"] = "tfsched"
    assert await bind(client, add(state, ours), "gpu-node-0") == ""


async def test_nothing_is_answered_from_an_untrusted_cache(app_client):
    state = make_state()
    why = ["the cache is not current for Pod"]
    client = await app_client(memory_app(state, distrust=lambda: why[0]))
    pod = add(state, gpu_pod("p", tflops="10", vram="1Gi", uid="p1"))
    args = orjson.dumps({"Pod": pod, "NodeNames": ["gpu-node-0"]})
    result = await (await client.post("/filter", data=args)).json()
    assert "not current for Pod" in result["Error"] and not result["NodeNames"]
    resp = await client.post("/prioritize", data=args)
    assert resp.status == 503 and "not current" in (await resp.json())["error"]
    assert "not current" in await bind(client, pod, "gpu-node-0")
    assert (await client.get("/readyz")).status == 503
    assert not state.ledger.allocations
    why[0] = ""
    result = await (await client.post("/filter", data=args)).json()
    assert result["NodeNames"] == ["gpu-node-0"] and result["Error"] == ""
    assert await bind(client, pod, "gpu-node-0") == ""


async def test_a_standby_instance_filters_but_does_not_bind(app_client):
    state = make_state()

    class Standby:
        lease_duration = __import__("datetime").timedelta(seconds=15)
        previous_holder = ""

        async def run(self, leading):  # never leads
            return None

        async def release(self):
            return None

    gate = WriterGate(Standby(), lambda: None)  # type: ignore[arg-type]
    client = await app_client(ExtenderApp(state, Binder(state, MemoryPodWriter(state), gate)))
    pod = add(state, gpu_pod("p", tflops="10", vram="1Gi", uid="p1"))
    result = await (await client.post("/filter", data=orjson.dumps({"Pod": pod, "NodeNames": ["gpu-node-0"]}))).json()
    assert result["NodeNames"] == ["gpu-node-0"]
    assert "standby" in await bind(client, pod, "gpu-node-0")
    assert not state.ledger.allocations
