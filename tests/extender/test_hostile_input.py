"""Hostile input never gets a 5xx and never changes allocation state.

The five 500s found by fuzzing (issue 9), each as a reproducer, then a seeded
fuzz of valid shapes with hostile values and of invalid shapes through the
app over HTTP, with the same probe answered the same before and after.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_pod

from .conftest import GiB, make_state

LAYOUT = {"n0": [(312, 80 * GiB)], "n1": [(312, 80 * GiB), (312, 80 * GiB)]}


async def post(client, verb: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    resp = await client.post(f"/{verb}", data=data, headers={"Content-Type": "application/json"})
    raw = await resp.read()
    return resp.status, orjson.loads(raw) if raw else None


def _pod(**annotations: str) -> dict[str, Any]:
    pod = gpu_pod("p", namespace="ns", tflops="10", vram="1Gi", uid="u1")
    pod["metadata"]["annotations"].update(annotations)
    return pod


def _filter_args(pod: Any, names: Any = ("n0", "n1")) -> dict[str, Any]:
    return {"Pod": pod, "Nodes": None, "NodeNames": list(names) if isinstance(names, tuple) else names}


@pytest.mark.parametrize(
    "pod",
    [
        _pod(**{ann.TFLOPS_REQUEST: "1e306"}),
        _pod(**{ann.VRAM_REQUEST: "1e9999999"}),
        _pod(**{ann.GPU_INDICES: "4294967296"}),
        _pod(**{ann.VRAM_REQUEST: "9" * 400}),
    ],
    ids=["tflops-1e306", "vram-1e9999999", "gpu-indices-2^32", "vram-400-digits"],
)
async def test_unreadable_annotations_are_unresolvable_not_500(make_client, pod):
    client = await make_client(make_state(LAYOUT))
    status, result = await post(client, "filter", _filter_args(pod))
    assert status == 200
    assert result["NodeNames"] == []
    reasons = result["FailedAndUnresolvableNodes"]
    assert set(reasons) == {"n0", "n1"}
    assert all("annotation tensor-fusion.ai/" in r for r in reasons.values())
    status, result = await post(client, "prioritize", _filter_args(pod))
    assert status == 400 and "annotation tensor-fusion.ai/" in result["error"]


@pytest.mark.parametrize("namespace", [["ns"], {"a": "b"}, 7])
async def test_a_namespace_that_is_not_a_string_is_not_500(make_client, namespace):
    state = make_state(LAYOUT)
    client = await make_client(state)
    pod = _pod(**{ann.WORKLOAD: "wl"})
    pod["metadata"]["namespace"] = namespace
    for verb in ("filter", "prioritize"):
        status, _ = await post(client, verb, _filter_args(pod))
        assert status in (200, 400)


@pytest.mark.parametrize("metadata", [["name", "n0"], "n0", 5, None])
async def test_node_list_items_with_bad_metadata_get_400(make_client, metadata):
    client = await make_client(make_state(LAYOUT))
    body = {"Pod": _pod(), "Nodes": {"items": [{"metadata": metadata}]}, "NodeNames": None}
    for verb in ("filter", "prioritize"):
        status, result = await post(client, verb, body)
        assert status == 400 and "Nodes.items[0].metadata.name" in result["error"]


async def test_a_status_value_beyond_any_gpu_does_not_break_placement(make_client):
    """A recommendation of 1e306 TFLOPS (a JSON number, not a string) is not placed by."""
    state = make_state(LAYOUT)
    workload = {
        "apiVersion": ann.GROUP_VERSION,
        "kind": ann.WORKLOAD_KIND,
        "metadata": {"name": "wl", "namespace": "ns", "uid": "w"},
        "spec": {"autoScalingConfig": {"autoSetResources": {"enable": True, "targetResource": "all"}}},
        "status": {"recommendation": {"requests": {"tflops": 1e306, "vram": 1e300}}},
    }
    state.cache.apply(Kind.WORKLOAD, EventType.ADDED, workload)
    client = await make_client(state)
    status, result = await post(client, "filter", _filter_args(_pod(**{ann.WORKLOAD: "wl"})))
    assert status == 200 and result["NodeNames"] == ["n0", "n1"]


# -- fuzz ----------------------------------------------------------------------

HOSTILE_TEXT = [
    "1e306", "1e9999999", "-1", "NaN", "Inf", "1e-9999", "0x10", "", " ", "10Gi", "10Gx", "9" * 300,
    "4294967296", "-5", "1,2,3", "0,999999999999", "true", "\u0000", "1" * 5000, "1.5e3Mi",
]  # fmt: skip
HOSTILE_VALUES: list[Any] = [None, 1, -1, 1e308, [], {}, [1, 2], {"a": 1}, True, "x" * 100_000, float("1e306")]
KEYS = [
    ann.TFLOPS_REQUEST, ann.TFLOPS_LIMIT, ann.VRAM_REQUEST, ann.VRAM_LIMIT, ann.COMPUTE_PERCENT_REQUEST,
    ann.COMPUTE_PERCENT_LIMIT, ann.GPU_COUNT, ann.GPU_INDICES, ann.GPU_MODEL, ann.GPU_POOL, ann.WORKLOAD,
]  # fmt: skip


def _hostile_request(rng: random.Random) -> tuple[str, bytes]:
    verb = rng.choice(["filter", "prioritize", "bind"])
    pod = _pod()
    notes = pod["metadata"]["annotations"]
    for _ in range(rng.randint(1, 4)):
        notes[rng.choice(KEYS)] = rng.choice(HOSTILE_TEXT)
    body: Any = _filter_args(pod)
    roll = rng.random()
    if roll < 0.15:  # an invalid shape somewhere in the tree
        target = rng.choice([body, pod, pod["metadata"]])
        target[rng.choice(list(target))] = rng.choice(HOSTILE_VALUES)
    elif roll < 0.25:
        body["NodeNames"] = rng.choice(HOSTILE_VALUES)
    elif roll < 0.35:
        body = {"Pod": pod, "Nodes": {"items": [rng.choice(HOSTILE_VALUES), {"metadata": rng.choice(HOSTILE_VALUES)}]}}
    elif roll < 0.45:
        pod["metadata"]["namespace"] = rng.choice(HOSTILE_VALUES)
    if verb == "bind":
        body = {
            "PodName": rng.choice(["p", "ghost", "", 5, None, "p?dryRun=All", "../../x"]),
            "PodNamespace": rng.choice(["ns", "kube-system", [], None]),
            "PodUID": rng.choice(["u1", "", None, {"x": 1}]),
            "Node": rng.choice(["n0", "n1", "ghost", "", None, ["n0"]]),
        }
    data = orjson.dumps(body)
    if rng.random() < 0.05:
        data = data[: rng.randint(0, len(data))]  # truncated JSON
    return verb, data


async def test_fuzzed_requests_never_get_5xx_nor_change_allocations(make_client):
    state = make_state(LAYOUT)
    client = await make_client(state)
    probe = _filter_args(gpu_pod("probe", tflops="200", vram="50Gi", uid="probe"))
    before_probe = await post(client, "filter", probe)
    before_used = (state.inventory.used_t.copy(), state.inventory.used_v.copy())
    before_allocations = copy.deepcopy(state.ledger.allocations)
    rng = random.Random(20261201)
    statuses: dict[int, int] = {}
    for _ in range(2000):
        verb, data = _hostile_request(rng)
        resp = await client.post(f"/{verb}", data=data, headers={"Content-Type": "application/json"})
        await resp.read()
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
        assert resp.status < 500, (verb, data[:300])
    assert set(statuses) <= {200, 400}
    assert await post(client, "filter", probe) == before_probe
    assert (state.inventory.used_t == before_used[0]).all() and (state.inventory.used_v == before_used[1]).all()
    assert state.ledger.allocations == before_allocations
