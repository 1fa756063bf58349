"""A GPU that another system hands out (``status.usedBy``) is never shared out by us.

During a migration to TensorFusion the NVIDIA device plugin may have given a
GPU to a pod whole; TensorFusion skips such GPUs in its progressive-migration
mode, and here it is the default.
"""

from __future__ import annotations

import orjson

from tfsched.allocation.state import ClusterState
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object

GiB = 2**30


def _state(used_by: dict[tuple[str, int], object]) -> ClusterState:
    gpus = []
    for node, count in (("mixed", 2), ("theirs", 1), ("ours", 1)):
        for i in range(count):
            gpu = gpu_object(node, i, tflops=312, vram=80 * GiB)
            if (node, i) in used_by:
                gpu["status"]["usedBy"] = used_by[(node, i)]
            gpus.append(gpu)
    state = ClusterState()
    state.load({Kind.NODE: [node_object(n) for n in ("mixed", "theirs", "ours")], Kind.GPU: gpus})
    return state


async def _filter(client, pod) -> dict:
    body = {"Pod": pod, "Nodes": None, "NodeNames": ["mixed", "theirs", "ours"]}
    resp = await client.post("/filter", data=orjson.dumps(body))
    assert resp.status == 200
    return orjson.loads(await resp.read())


async def test_foreign_gpus_are_not_schedulable_and_the_reason_says_so(make_client):
    state = _state({("mixed", 1): "nvidia-device-plugin", ("theirs", 0): "nvidia-device-plugin"})
    client = await make_client(state)
    result = await _filter(client, gpu_pod("p", tflops="10", vram="1Gi", uid="u1"))
    assert result["NodeNames"] == ["mixed", "ours"]
    assert result["FailedAndUnresolvableNodes"]["theirs"] == (
        "no usable GPU on node (1 GPU used by nvidia-device-plugin)"
    )
    two = gpu_pod("p2", tflops="10", vram="1Gi", uid="u2", extra_annotations={ann.GPU_COUNT: "2"})
    result = await _filter(client, two)
    assert result["NodeNames"] == []
    assert "1 GPU used by nvidia-device-plugin" in result["FailedAndUnresolvableNodes"]["mixed"]
    # Bind on the mixed node takes our GPU, whatever the placement mode would prefer.
    state.cache.apply(Kind.POD, EventType.ADDED, gpu_pod("p", namespace="default", tflops="10", vram="1Gi", uid="u1"))
    body = {"PodName": "p", "PodNamespace": "default", "PodUID": "u1", "Node": "mixed"}
    resp = await client.post("/bind", data=orjson.dumps(body))
    assert (await resp.json())["Error"] == ""
    assert state.ledger.allocations["u1"].gpu_names == (gpu_name("mixed", 0),)


async def test_ours_is_tensor_fusion_or_unset(make_client):
    state = _state({("theirs", 0): "tensor-fusion.ai", ("mixed", 0): "tensor-fusion", ("ours", 0): ""})
    result = await _filter(await make_client(state), gpu_pod("p", tflops="10", vram="1Gi", uid="u1"))
    assert result["NodeNames"] == ["mixed", "theirs", "ours"]


async def test_usedby_changes_are_followed_and_unreadable_values_are_not_ours(make_client):
    state = _state({("theirs", 0): ["not", "a", "string"]})
    client = await make_client(state)
    pod = gpu_pod("p", tflops="10", vram="1Gi", uid="u1")
    assert "theirs" in (await _filter(client, pod))["FailedAndUnresolvableNodes"]
    gpu = gpu_object("theirs", 0, tflops=312, vram=80 * GiB)  # the watch delivers whole objects
    gpu["status"]["usedBy"] = "tensor-fusion.ai"  # handed back, as TensorFusion's hypervisor patches it
    state.cache.apply(Kind.GPU, EventType.MODIFIED, gpu)
    assert (await _filter(client, pod))["NodeNames"] == ["mixed", "theirs", "ours"]
    assert state.foreign_gpus == {}
