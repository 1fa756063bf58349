"""Only real holders count: a pod's gpu-ids hold GPUs only when it is bound to their node."""

from __future__ import annotations

import orjson

from tfsched.allocation.state import PROBLEM_POD, ClusterState
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object

GiB = 2**30


def state_with(nodes: dict[str, int], tflops: float = 100, vram: float = 16 * GiB) -> ClusterState:
    state = ClusterState()
    state.load(
        {
            Kind.NODE: [node_object(n, gpus=c) for n, c in nodes.items()],
            Kind.GPU: [gpu_object(n, i, tflops=tflops, vram=vram) for n, c in nodes.items() for i in range(c)],
        }
    )
    return state


def used(state: ClusterState, node: str, index: int) -> tuple[float, float]:
    g = state.inventory.gpu(gpu_name(node, index))
    return float(state.inventory.used_t[g]), float(state.inventory.used_v[g])


def squatter(uid: str, gpu_ids: list[str], node: str | None = None) -> dict:
    return gpu_pod(f"squat-{uid}", tflops="100", vram="16Gi", gpu_ids=gpu_ids, node=node, uid=uid)


def test_unbound_pod_with_gpu_ids_holds_nothing_and_is_reported_once():
    state = state_with({"a": 2})
    pod = squatter("s1", [gpu_name("a", 0), gpu_name("a", 1)])
    state.cache.apply(Kind.POD, EventType.ADDED, pod)
    assert used(state, "a", 0) == (0.0, 0.0) and used(state, "a", 1) == (0.0, 0.0)
    assert "s1" not in state.ledger.allocations
    assert state.problems.counts[PROBLEM_POD] == 1
    [problem] = state.problems.take()
    assert problem.reason == ann.EVENT_GPU_IDS_IGNORED and "not bound" in problem.message
    state.cache.apply(Kind.POD, EventType.MODIFIED, pod)  # the same again: not reported twice
    assert state.problems.counts[PROBLEM_POD] == 1 and not state.problems.take()


def test_pod_bound_elsewhere_does_not_hold_gpus_of_another_node():
    state = state_with({"a": 1, "b": 1})
    state.cache.apply(Kind.POD, EventType.ADDED, squatter("s2", [gpu_name("a", 0)], node="b"))
    assert used(state, "a", 0) == (0.0, 0.0)
    assert "not on its node b" in state.problems.take()[0].message


def test_bound_pod_holds_its_gpus_and_deleting_it_frees_them():
    state = state_with({"a": 1})
    pod = squatter("h1", [gpu_name("a", 0)], node="a")
    state.cache.apply(Kind.POD, EventType.ADDED, pod)
    assert used(state, "a", 0) == (100_000.0, 16 * GiB)
    assert not state.problems.take()
    state.cache.apply(Kind.POD, EventType.DELETED, pod)
    assert used(state, "a", 0) == (0.0, 0.0)


def test_a_status_update_of_a_holder_moves_no_usage_and_marks_no_gpu_changed():
    state = state_with({"a": 1})
    pod = squatter("h2", [gpu_name("a", 0)], node="a")
    state.cache.apply(Kind.POD, EventType.ADDED, pod)
    state.ledger.changed_gpus.clear()
    node = state.inventory.node_index["a"]
    version = int(state.inventory.node_version[node])
    running = {**pod, "status": {"phase": "Running", "podIP": "10.1.0.1"}}
    state.cache.apply(Kind.POD, EventType.MODIFIED, running)  # the kubelet's write: the same holding
    assert used(state, "a", 0) == (100_000.0, 16 * GiB)
    assert not state.ledger.changed_gpus  # the GPU status writer has nothing to look at again
    assert int(state.inventory.node_version[node]) == version  # cached scores stay valid
    resized = {**running, "metadata": {**pod["metadata"], "annotations": {**pod["metadata"]["annotations"]}}}
    resized["metadata"]["annotations"][ann.TFLOPS_REQUEST] = "50"
    state.cache.apply(Kind.POD, EventType.MODIFIED, resized)  # a changed holding still moves
    assert used(state, "a", 0) == (50_000.0, 16 * GiB)
    assert state.ledger.changed_gpus == {gpu_name("a", 0)}


def test_gpu_arriving_after_its_pods_counts_only_holders_on_its_node():
    state = ClusterState()
    state.load({Kind.NODE: [node_object("a"), node_object("b")]})
    state.cache.apply(Kind.POD, EventType.ADDED, squatter("real", [gpu_name("a", 0)], node="a"))
    state.cache.apply(Kind.POD, EventType.ADDED, squatter("wrong", [gpu_name("a", 0)], node="b"))
    state.cache.apply(Kind.GPU, EventType.ADDED, gpu_object("a", 0, tflops=312, vram=80 * GiB))
    assert used(state, "a", 0) == (100_000.0, 16 * GiB)


async def test_squatters_never_block_real_pods(app_client):
    """The reproducer: a pending pod naming every GPU of a node with a huge request."""
    from tests.serving import memory_app

    state = state_with({"a": 2})
    state.cache.apply(Kind.POD, EventType.ADDED, squatter("s", [gpu_name("a", 0), gpu_name("a", 1)]))

    client = await app_client(memory_app(state))
    pod = gpu_pod("real", tflops="60", vram="8Gi", uid="r1")
    resp = await client.post("/filter", data=orjson.dumps({"Pod": pod, "NodeNames": ["a"]}))
    assert (await resp.json())["NodeNames"] == ["a"]


def test_too_many_gpu_ids_are_not_a_record():
    state = state_with({"a": 1})
    state.cache.apply(Kind.POD, EventType.ADDED, squatter("many", [gpu_name("a", 0)] * 200, node="a"))
    assert used(state, "a", 0) == (0.0, 0.0)
