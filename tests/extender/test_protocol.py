"""The extender over HTTP, with exactly the JSON kube-scheduler sends."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tfsched.allocation.config import SchedulingConfig
from tfsched.allocation.state import ClusterState
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import Kind
from tfsched.clustermodel.objects import gpu_object, gpu_pod, node_object
from tfsched.scoring.modes import PlacementMode

from .conftest import GiB, make_state

LAYOUT = {
    "small": [(100, 16 * GiB)],
    "big": [(312, 80 * GiB), (312, 80 * GiB)],
    "cpu-only": [],
}


def args_names(pod, names):
    """ExtenderArgs as kube-scheduler sends them with nodeCacheCapable: true."""
    return {"Pod": pod, "Nodes": None, "NodeNames": names}


def args_nodes(pod, names):
    """... and with nodeCacheCapable: false (a NodeList, NodeNames null)."""
    return {"Pod": pod, "Nodes": {"metadata": {}, "items": [node_object(n) for n in names]}, "NodeNames": None}


async def post(client, verb, body):
    resp = await client.post(
        f"/{verb}",
        data=orjson.dumps(body) if not isinstance(body, bytes) else body,
        headers={"Content-Type": "application/json"},
    )
    return resp.status, orjson.loads(await resp.read())


@pytest.mark.parametrize("shape", [args_names, args_nodes])
async def test_filter_keeps_nodes_with_room_and_explains_the_rest(make_client, shape):
    client = await make_client(make_state(LAYOUT))
    pod = gpu_pod("p", tflops="50", vram="20Gi", uid="u1")
    status, result = await post(client, "filter", shape(pod, ["small", "big", "cpu-only", "ghost"]))
    assert status == 200
    if shape is args_names:
        assert result["NodeNames"] == ["big"] and result["Nodes"] is None
    else:
        assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["big"]
    assert result["FailedNodes"] == {}
    assert result["FailedAndUnresolvableNodes"]["small"] == (
        "insufficient VRAM: need 1 GPU with 20Gi free, largest free 16Gi; no GPU on the node is that large"
    )
    assert result["FailedAndUnresolvableNodes"]["cpu-only"] == "node has no TensorFusion GPUs"
    assert "unknown" in result["FailedAndUnresolvableNodes"]["ghost"]
    assert result["Error"] == ""


async def test_gpu_count_needs_that_many_fitting_gpus(make_client):
    client = await make_client(make_state(LAYOUT))
    pod = gpu_pod("p", tflops="10", vram="1Gi", gpu_count=2, uid="u1")
    _, result = await post(client, "filter", args_names(pod, ["small", "big"]))
    assert result["NodeNames"] == ["big"]
    assert result["FailedAndUnresolvableNodes"]["small"] == "insufficient GPUs: need 2 GPUs, node has 1"


async def test_failure_reason_counts_gpus_with_room(make_client):
    used = [gpu_pod("a", tflops="300", vram="1Gi", node="big", gpu_ids=["big-gpu-0"], uid="a")]
    client = await make_client(make_state(LAYOUT, pods=used))
    pod = gpu_pod("p", tflops="100", vram="10Gi", gpu_count=2, uid="u1")
    _, result = await post(client, "filter", args_names(pod, ["big"]))
    assert result["FailedNodes"]["big"] == (
        "insufficient TFLOPS: need 2 GPUs with 100 TFLOPS free, 1 has it, largest free on the others 12 TFLOPS"
    )


async def test_a_request_no_gpu_could_ever_hold_is_unresolvable(make_client):
    """Larger than every GPU: kube-scheduler must not try preemption for it."""
    used = [gpu_pod("a", tflops="300", vram="70Gi", node="big", gpu_ids=["big-gpu-0"], uid="a")]
    client = await make_client(make_state(LAYOUT, pods=used))
    too_big = gpu_pod("p", tflops="10", vram="96Gi", uid="u1")
    _, result = await post(client, "filter", args_names(too_big, ["small", "big"]))
    assert result["NodeNames"] == [] and result["FailedNodes"] == {} and result["Error"] == ""
    assert result["FailedAndUnresolvableNodes"] == {
        "small": "insufficient VRAM: need 1 GPU with 96Gi free, largest free 16Gi; no GPU on the node is that large",
        "big": "insufficient VRAM: need 1 GPU with 96Gi free, largest free 80Gi; no GPU on the node is that large",
    }
    too_many = gpu_pod("q", tflops="10", vram="1Gi", gpu_count=3, uid="u2")
    _, result = await post(client, "filter", args_names(too_many, ["small", "big"]))
    assert result["FailedNodes"] == {} and set(result["FailedAndUnresolvableNodes"]) == {"small", "big"}
    # Room taken by another pod is resolvable: preemption might free it.
    _, result = await post(
        client, "filter", args_names(gpu_pod("r", tflops="10", vram="20Gi", gpu_count=2, uid="u3"), ["big"])
    )
    assert result["FailedNodes"] == {
        "big": "insufficient VRAM: need 2 GPUs with 20Gi free, 1 has it, largest free on the others 10Gi"
    }
    assert result["FailedAndUnresolvableNodes"] == {}


async def test_pods_without_annotations_pass_through(make_client):
    client = await make_client(make_state(LAYOUT))
    plain = {"metadata": {"name": "web", "namespace": "default", "annotations": {"x": "y"}}, "spec": {}}
    _, result = await post(client, "filter", args_names(plain, ["small", "cpu-only", "ghost"]))
    assert result["NodeNames"] == ["small", "cpu-only", "ghost"] and result["FailedNodes"] == {}
    _, scores = await post(client, "prioritize", args_names(plain, ["small", "cpu-only"]))
    assert scores == []  # every node scores 0, so none is listed (kube-scheduler reads absent as 0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        ({"Nodes": None, "NodeNames": ["a"]}, "Pod"),
        ({"Pod": "x", "NodeNames": ["a"]}, "Pod"),
        ({"Pod": {"metadata": {}}, "NodeNames": ["a"]}, "Pod.metadata.name"),
        ({"Pod": {"metadata": {"name": "p"}}, "NodeNames": None, "Nodes": None}, "Nodes or NodeNames"),
        ({"Pod": {"metadata": {"name": "p"}}, "NodeNames": [1, 2]}, "NodeNames"),
        ({"Pod": {"metadata": {"name": "p"}}, "Nodes": {"items": [{}]}}, "Nodes.items[0].metadata.name"),
        ({"Pod": {"metadata": {"name": "p", "annotations": {"a": 1}}}, "NodeNames": []}, "annotations"),
    ],
)
@pytest.mark.parametrize("verb", ["filter", "prioritize"])
async def test_malformed_requests_get_400_naming_the_problem(make_client, verb, body, message):
    state = make_state(LAYOUT)
    client = await make_client(state)
    used_before = state.inventory.used_v.copy()
    status, result = await post(client, verb, body)
    assert status == 400
    assert message in result["error"]
    assert (state.inventory.used_v == used_before).all()


async def test_bad_annotation_marks_every_node_unresolvable_with_the_reason(make_client):
    client = await make_client(make_state(LAYOUT))
    pod = gpu_pod("p", tflops="lots", vram="1Gi", uid="u1")
    status, result = await post(client, "filter", args_names(pod, ["small", "big"]))
    assert status == 200 and result["NodeNames"] == []
    assert set(result["FailedAndUnresolvableNodes"]) == {"small", "big"}
    assert ann.TFLOPS_REQUEST in result["FailedAndUnresolvableNodes"]["big"]
    status, result = await post(client, "prioritize", args_names(pod, ["big"]))
    assert status == 400 and ann.TFLOPS_REQUEST in result["error"]


async def test_oversized_body_gets_400(make_client):
    state = make_state(LAYOUT, config=SchedulingConfig(maxRequestBytes=1000))
    client = await make_client(state)
    status, result = await post(client, "filter", args_names(gpu_pod("p", vram="1Gi"), ["x" * 50] * 100))
    assert status == 400 and "too large" in result["error"]


@pytest.mark.parametrize(
    ("mode", "best"),
    [
        (PlacementMode.COMPACT_FIRST, "busy"),
        (PlacementMode.LOW_LOAD_FIRST, "idle"),
        (PlacementMode.NODE_COMPACT_GPU_LOW_LOAD, "busy"),
    ],
)
async def test_prioritize_by_mode(make_client, mode, best):
    layout = {"busy": [(100, 10 * GiB)] * 2, "idle": [(100, 10 * GiB)] * 2}
    pods = [gpu_pod("a", tflops="50", vram="5Gi", node="busy", gpu_ids=["busy-gpu-0"], uid="a")]
    client = await make_client(make_state(layout, pods=pods, config=SchedulingConfig(placementMode=mode)))
    _, scores = await post(client, "prioritize", args_names(gpu_pod("p", tflops="1", vram="1Gi"), ["busy", "idle"]))
    # Only hosts scoring above 0 are listed (kube-scheduler reads an absent host as 0).
    assert scores == [{"Host": best, "Score": 10}]


@pytest.mark.parametrize(
    ("mode", "gpu"),
    [(PlacementMode.COMPACT_FIRST, "busy-gpu-0"), (PlacementMode.NODE_COMPACT_GPU_LOW_LOAD, "busy-gpu-1")],
)
async def test_bind_picks_gpus_by_mode_and_records_them(make_client, mode, gpu):
    layout = {"busy": [(100, 10 * GiB)] * 2}
    pods = [
        gpu_pod("a", tflops="50", vram="5Gi", node="busy", gpu_ids=["busy-gpu-0"], uid="a"),
        gpu_pod("p", tflops="10", vram="1Gi", uid="p"),
    ]
    state = make_state(layout, pods=pods, config=SchedulingConfig(placementMode=mode))
    client = await make_client(state)
    status, result = await post(
        client, "bind", {"PodName": "p", "PodNamespace": "default", "PodUID": "p", "Node": "busy"}
    )
    assert status == 200 and result == {"Error": ""}
    pod = state.cache.get(Kind.POD, "default", "p")
    assert pod["metadata"]["annotations"][ann.GPU_IDS] == gpu
    assert pod["spec"]["nodeName"] == "busy"


async def test_bind_bad_input(make_client):
    client = await make_client(make_state(LAYOUT))
    status, result = await post(client, "bind", {"PodName": "p", "PodNamespace": "default"})
    assert status == 400 and "Node" in result["error"]
    status, result = await post(
        client, "bind", {"PodName": "p", "PodNamespace": "default", "PodUID": "", "Node": "ghost"}
    )
    assert status == 200 and "unknown to the extender" in result["Error"]
    status, result = await post(
        client, "bind", {"PodName": "nope", "PodNamespace": "default", "PodUID": "", "Node": "big"}
    )
    assert status == 200 and "not found" in result["Error"]


async def test_concurrent_binds_never_overcommit(make_client):
    """40 pods of 30 TFLOPS onto 2 GPUs of 312: at most 10 per GPU, whatever the interleaving."""
    layout = {"big": [(312, 80 * GiB), (312, 80 * GiB)]}
    pods = [gpu_pod(f"p{i}", tflops="30", vram="1Gi", uid=f"u{i}") for i in range(40)]
    state = make_state(layout, pods=pods)
    client = await make_client(state)

    async def bind(i):
        return await post(
            client, "bind", {"PodName": f"p{i}", "PodNamespace": "default", "PodUID": f"u{i}", "Node": "big"}
        )

    results = await asyncio.gather(*(bind(i) for i in range(40)))
    bound = [r for s, r in results if r["Error"] == ""]
    assert len(bound) == 20
    inv = state.inventory
    assert (inv.used_t <= inv.cap_t).all()
    per_gpu: dict[str, float] = {}
    for pod in state.cache.list(Kind.POD):
        for g in pod["metadata"]["annotations"].get(ann.GPU_IDS, "").split(","):
            if g:
                per_gpu[g] = per_gpu.get(g, 0) + 30
    assert per_gpu == {"big-gpu-0": 300, "big-gpu-1": 300}


async def test_recommendation_places_by_recommended_resources(make_client):
    layout = {"small": [(100, 16 * GiB)]}
    workload = {
        "apiVersion": "tensor-fusion.ai/v1",
        "kind": "TensorFusionWorkload",
        "metadata": {"name": "wl", "namespace": "default"},
        "spec": {"autoScalingConfig": {"autoSetResources": {"enable": True, "targetResource": "all"}}},
        "status": {
            "recommendation": {"requests": {"tflops": "20", "vram": "4Gi"}, "limits": {"tflops": "40", "vram": "8Gi"}}
        },
    }
    pod = gpu_pod(
        "p",
        tflops="200",
        vram="40Gi",
        tflops_limit="400",
        vram_limit="80Gi",
        uid="p",
        extra_annotations={ann.WORKLOAD: "wl"},
    )
    state = make_state(layout, pods=[pod], workloads=[workload])
    client = await make_client(state)
    _, result = await post(client, "filter", args_names(pod, ["small"]))
    assert result["NodeNames"] == ["small"]
    _, result = await post(client, "bind", {"PodName": "p", "PodNamespace": "default", "PodUID": "p", "Node": "small"})
    assert result["Error"] == ""
    annotations = state.cache.get(Kind.POD, "default", "p")["metadata"]["annotations"]
    assert annotations[ann.TFLOPS_REQUEST] == "20" and annotations[ann.VRAM_LIMIT] == "8Gi"
    assert state.inventory.used_v[state.inventory.gpu("small-gpu-0")] == 4 * GiB


async def test_ledger_rebuilds_from_pod_annotations_alone(make_client):
    layout = {"big": [(312, 80 * GiB), (312, 80 * GiB)]}
    pods = [gpu_pod(f"p{i}", tflops="30", vram="8Gi", uid=f"u{i}") for i in range(6)]
    state = make_state(layout, pods=pods)
    client = await make_client(state)
    for i in range(6):
        await post(client, "bind", {"PodName": f"p{i}", "PodNamespace": "default", "PodUID": f"u{i}", "Node": "big"})
    restarted = make_state(layout, pods=list(state.cache.list(Kind.POD)))
    assert (restarted.inventory.used_t == state.inventory.used_t).all()
    assert (restarted.inventory.used_v == state.inventory.used_v).all()
    assert restarted.inventory.used_v.sum() == 6 * 8 * GiB


async def test_metrics_and_health(make_client):
    client = await make_client(make_state(LAYOUT))
    await post(client, "filter", args_names(gpu_pod("p", vram="1Gi"), ["big"]))
    text = await (await client.get("/metrics")).text()
    assert 'tfsched_extender_request_duration_seconds_count{verb="filter"} 1.0' in text
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_a_gpu_model_list_places_on_any_of_its_models(make_client):
    models = {"a100": "A100", "h100": "H100", "t4": "T4"}
    state = ClusterState(SchedulingConfig())
    state.load(
        {
            Kind.NODE: [node_object(n, gpus=1) for n in models],
            Kind.GPU: [gpu_object(n, 0, tflops=100, vram=16 * GiB, model=m) for n, m in models.items()],
        }
    )
    client = await make_client(state)
    names = ["a100", "h100", "t4"]
    pod = gpu_pod("p", tflops="10", vram="1Gi", uid="u1", extra_annotations={ann.GPU_MODEL: "H100,T4"})
    _, result = await post(client, "filter", args_names(pod, names))
    assert result["NodeNames"] == ["h100", "t4"]
    assert result["FailedAndUnresolvableNodes"]["a100"] == "no usable GPU matching model=H100 or T4 on node"
    single = gpu_pod("q", tflops="10", vram="1Gi", uid="u2", extra_annotations={ann.GPU_MODEL: "A100"})
    _, result = await post(client, "filter", args_names(single, names))
    assert result["NodeNames"] == ["a100"]


async def test_least_fragmentation_keeps_cpu_where_free_gpus_need_it(make_client):
    """Both nodes have a free GPU; the cluster's GPU pods ask 16 CPUs. A pod without GPUs
    asking 8 CPUs scores higher on the node where 8 CPUs less still leave 16 (so its free
    GPU stays usable) than on the one left with 12. (Other modes score such pods 0 everywhere.)"""
    config = SchedulingConfig(placementMode=PlacementMode.LEAST_FRAGMENTATION)
    state = ClusterState(config)
    running = gpu_pod("running", tflops="10", vram="1Gi", node="roomy", gpu_ids=["roomy-gpu-0"], uid="r")
    running["spec"]["containers"][0]["resources"]["requests"] = {"cpu": "16", "memory": "1Gi"}
    state.load(
        {
            Kind.NODE: [node_object("tight", cpu="20", gpus=1), node_object("roomy", cpu="64", gpus=2)],
            Kind.GPU: [
                gpu_object("tight", 0, tflops=100, vram=16 * GiB),
                gpu_object("roomy", 0, tflops=100, vram=16 * GiB),
                gpu_object("roomy", 1, tflops=100, vram=16 * GiB),
            ],
            Kind.POD: [running],
        }
    )
    client = await make_client(state)
    cpu_pod = {
        "metadata": {"name": "web", "namespace": "default", "uid": "w"},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "8", "memory": "1Gi"}}}]},
    }
    status, scores = await post(client, "prioritize", args_names(cpu_pod, ["tight", "roomy"]))
    assert status == 200
    by_node = {s["Host"]: s["Score"] for s in scores}
    assert by_node["roomy"] > by_node["tight"], by_node


def _least_fragmentation_client_state(nodes: list[tuple[str, str, int]]) -> ClusterState:
    state = ClusterState(SchedulingConfig(placementMode=PlacementMode.LEAST_FRAGMENTATION))
    state.load(
        {
            Kind.NODE: [node_object(name, cpu=cpu, gpus=gpus) for name, cpu, gpus in nodes],
            Kind.GPU: [gpu_object(name, i, tflops=100, vram=16 * GiB) for name, _, gpus in nodes for i in range(gpus)],
        }
    )
    return state


def _pod_asking(name: str, cpu: str) -> dict:
    pod = gpu_pod(name, tflops="100", vram="16Gi", uid=name)
    pod["spec"]["containers"][0]["resources"]["requests"] = {"cpu": cpu, "memory": "1Gi"}
    return pod


async def test_least_fragmentation_names_one_winner_first_by_name(make_client):
    """Equal empty nodes: one scores 10 (the first by name, whatever order they are sent
    in), so kube-scheduler's random pick among equal totals cannot spread pods over them."""
    state = _least_fragmentation_client_state([("n-c", "64", 2), ("n-a", "64", 2), ("n-b", "64", 2)])
    client = await make_client(state)
    status, scores = await post(client, "prioritize", args_names(_pod_asking("p", "8"), ["n-c", "n-b", "n-a"]))
    assert status == 200
    assert {s["Host"]: s["Score"] for s in scores} == {"n-a": 10, "n-b": 9, "n-c": 9}


async def test_least_fragmentation_leaves_cpu_rich_nodes_to_cpu_hungry_pods(make_client):
    """Both nodes keep every request type fitting either way; the pod asks 9 CPUs per GPU.
    ``b-lean`` has 10 per free GPU, ``a-rich`` 40: the pod goes to b-lean though a-rich is
    first by name, leaving a-rich's CPU to pods that need it."""
    state = _least_fragmentation_client_state([("a-rich", "160", 4), ("b-lean", "40", 4)])
    client = await make_client(state)
    status, scores = await post(client, "prioritize", args_names(_pod_asking("p", "9"), ["a-rich", "b-lean"]))
    assert status == 200
    assert {s["Host"]: s["Score"] for s in scores} == {"a-rich": 9, "b-lean": 10}


@pytest.mark.parametrize("bad", [[1], ["a", None], ["a", {"name": "b"}], ["a", ["b"]], "a,b"])
async def test_node_names_that_are_not_all_strings_are_a_400(make_client, bad):
    state = make_state(LAYOUT)
    client = await make_client(state)
    for verb in ("filter", "prioritize"):
        status, result = await post(client, verb, {"Pod": gpu_pod("p", vram="1Gi"), "Nodes": None, "NodeNames": bad})
        assert status == 400 and result == {"error": "field NodeNames must be a list of strings"}
    assert not state.ledger.allocations


@pytest.mark.parametrize("mode", list(PlacementMode))
@pytest.mark.parametrize("shape", [args_names, args_nodes])
async def test_score_in_filter_passes_what_prioritize_would_rank_first(make_client, mode, shape):
    """scoreInFilter: filter keeps exactly the nodes the prioritize call scores highest
    (all of them when they tie), and explains the failing ones as before."""
    layout = {
        "busy": [(100, 10 * GiB)] * 2,
        "half": [(100, 10 * GiB)] * 2,
        "idle": [(100, 10 * GiB)] * 2,
        "twin": [(100, 10 * GiB)] * 2,
        "small": [(100, 1 * GiB)],
    }
    pods = [
        gpu_pod("a", tflops="60", vram="6Gi", node="busy", gpu_ids=["busy-gpu-0"], uid="a"),
        gpu_pod("b", tflops="30", vram="3Gi", node="half", gpu_ids=["half-gpu-0"], uid="b"),
    ]
    names = ["busy", "half", "idle", "twin", "small"]
    pod = gpu_pod("p", tflops="10", vram="2Gi", uid="p")
    plain = await make_client(make_state(layout, pods=pods, config=SchedulingConfig(placementMode=mode)))
    _, full = await post(plain, "filter", args_names(pod, names))
    _, scores = await post(plain, "prioritize", args_names(pod, full["NodeNames"]))
    by_host = {n: 0 for n in full["NodeNames"]} | {s["Host"]: s["Score"] for s in scores}
    top = max(by_host.values())
    expected = [n for n in full["NodeNames"] if by_host[n] == top]

    config = SchedulingConfig(placementMode=mode, scoreInFilter=True)
    client = await make_client(make_state(layout, pods=pods, config=config))
    status, result = await post(client, "filter", shape(pod, names))
    assert status == 200
    kept = result["NodeNames"] if shape is args_names else [n["metadata"]["name"] for n in result["Nodes"]["items"]]
    assert kept == expected and 0 < len(kept) < len(full["NodeNames"])
    assert result["FailedAndUnresolvableNodes"] == full["FailedAndUnresolvableNodes"]
    assert result["FailedNodes"] == full["FailedNodes"]
