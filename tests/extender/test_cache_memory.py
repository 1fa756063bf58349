"""What the cache keeps of each object, and the initial load's memory and time levers:
slim objects with shared parts, and the collector paused until the first lists are in."""

from __future__ import annotations

import asyncio
import gc
import weakref

from tfsched import server as server_module
from tfsched.allocation.state import ClusterState
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import ClusterCache, EventType, Kind, slim_gpu, slim_pod
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object
from tfsched.extender.bind import Binder, MemoryPodWriter
from tfsched.kubeapi.leader import WriterGate
from tfsched.server import WATCHED_KINDS, Server, _initial_load

GiB = 2**30


def test_cached_gpu_keeps_its_name_and_what_the_status_writer_compares():
    gpu = gpu_object("n", 0, tflops=312, vram=80 * GiB)
    gpu["metadata"]["uid"] = "u"
    gpu["status"]["runningApps"] = [{"name": "a", "namespace": "ns", "count": 1}]
    slim = slim_gpu(gpu)
    assert slim == {
        "kind": ann.GPU_KIND,
        "metadata": {"name": gpu_name("n", 0)},
        "status": {"available": gpu["status"]["available"], "runningApps": gpu["status"]["runningApps"]},
    }


def test_equal_gpu_statuses_are_one_object():
    a, b = (slim_gpu(gpu_object("n", i, tflops=312, vram=80 * GiB)) for i in range(2))
    assert a["status"] is b["status"]
    c = slim_gpu(gpu_object("n", 2, tflops=100, vram=80 * GiB))
    assert c["status"] is not a["status"] and c["status"] != a["status"]


def test_cached_pod_keeps_its_tensor_fusion_annotations_only():
    pod = gpu_pod("p", tflops="10", vram="1Gi", node="n", gpu_ids=["n-gpu-0"], uid="u")
    pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{" + "x" * 4000 + "}"
    pod["metadata"]["labels"] = {"app": "x"}
    pod["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs"}]
    pod["status"]["startTime"] = "2025-01-01T00:00:00Z"
    slim = slim_pod(pod)
    assert slim["metadata"]["annotations"] == {
        ann.TFLOPS_REQUEST: "10",
        ann.VRAM_REQUEST: "1Gi",
        ann.GPU_IDS: "n-gpu-0",
    }
    assert slim["metadata"]["ownerReferences"] == [{"kind": "ReplicaSet", "name": "rs"}]
    assert "labels" not in slim["metadata"]
    assert slim["status"] == {"phase": "Running"}
    assert slim["spec"] == {"nodeName": "n"}


def test_pods_share_their_node_name_status_and_annotation_values():
    cache = ClusterCache()
    pods = [gpu_pod(f"p{i}", tflops="10", vram="1Gi", node="node-" + "n", uid=f"u{i}") for i in range(2)]
    for pod in pods:
        cache.apply(Kind.POD, EventType.ADDED, pod)
    a, b = (cache.get(Kind.POD, "default", f"p{i}") for i in range(2))
    assert a["spec"]["nodeName"] is b["spec"]["nodeName"]
    assert a["status"] is b["status"]
    assert a["metadata"]["annotations"][ann.VRAM_REQUEST] is b["metadata"]["annotations"][ann.VRAM_REQUEST]
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]


def test_ledger_holds_the_gpu_objects_name_strings():
    state = ClusterState()
    state.load(
        {
            Kind.NODE: [node_object("n")],
            Kind.GPU: [gpu_object("n", 0, tflops=312, vram=80 * GiB)],
            Kind.POD: [gpu_pod("p", tflops="10", vram="1Gi", node="n", gpu_ids=[gpu_name("n", 0)], uid="u")],
        }
    )
    (held,) = state.ledger.allocations["u"].gpu_names
    assert held is state.inventory.gpu_names[state.inventory.gpu(held)]


def _server() -> Server:
    state = ClusterState()
    gate = WriterGate()
    return Server(state, Binder(state, MemoryPodWriter(state), gate), gate)


async def test_collector_resumes_and_freezes_the_heap_once_every_kind_is_synced():
    server = _server()
    gc.disable()
    try:
        settle = asyncio.create_task(server._settle_heap_when_synced())
        await asyncio.sleep(0.1)
        assert not gc.isenabled()  # still listing
        server.state.cache.synced.update(WATCHED_KINDS)
        await asyncio.wait_for(settle, 5)
        assert gc.isenabled() and server.heap_frozen and gc.get_freeze_count() > 0
        await server.stop()
        assert not server.heap_frozen and gc.get_freeze_count() == 0
    finally:
        gc.enable()
        gc.unfreeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_the_initial_settle_walks_no_full_pass_and_the_periodic_pass_collects_what_the_load_left(
    monkeypatch,
):
    # A full pass at the end of the load walks the whole cache on the loop just as the server
    # turns ready; what cycles the load left wait for the periodic pass instead.
    server = _server()
    full_passes: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            full_passes.append(1)

    gc.disable()
    left = _Cycle()
    alive = weakref.ref(left)
    del left
    gc.callbacks.append(count)
    try:
        server.state.cache.synced.update(WATCHED_KINDS)
        await asyncio.wait_for(server._settle_heap_when_synced(), 5)
        assert gc.isenabled() and server.heap_frozen
        assert full_passes == []
        gc.collect()
        assert alive() is not None  # frozen: out of the collector's sight
        monkeypatch.setattr(server_module, "HEAP_FREEZE_INTERVAL_S", 0.01)
        periodic = asyncio.create_task(server._freeze_heap())
        for _ in range(500):
            if alive() is None:
                break
            await asyncio.sleep(0.01)
        periodic.cancel()
        await asyncio.gather(periodic, return_exceptions=True)
        assert alive() is None
    finally:
        gc.callbacks.remove(count)
        gc.enable()
        gc.unfreeze()


async def test_collector_resumes_after_its_bound_when_the_cache_never_syncs():
    server = _server()
    gc.disable()
    try:
        await asyncio.wait_for(server._settle_heap_when_synced(bound=0.1), 5)
        assert gc.isenabled() and not server.heap_frozen
    finally:
        gc.enable()


def test_a_snapshot_load_pauses_the_collector_and_leaves_it_on():
    try:
        with _initial_load():
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
