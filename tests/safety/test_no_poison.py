"""Taking objects in cannot poison: no exception escapes the cache handlers or
the verbs, whatever the object, and one bad object never stops a list."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfsched.allocation.state import PROBLEM_POD, PROBLEM_UNREADABLE, ClusterState
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object
from tfsched.kubeapi.informer import RESOURCES, Informer

GiB = 2**30

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
hostile_text = st.sampled_from(["1e306", "1e9999999", "-5", "nan", "inf", "4294967296", "", "0x10", "1Ei", "12Gi"])
annotation_keys = st.sampled_from(
    [
        ann.TFLOPS_REQUEST,
        ann.VRAM_REQUEST,
        ann.TFLOPS_LIMIT,
        ann.VRAM_LIMIT,
        ann.GPU_COUNT,
        ann.GPU_INDICES,
        ann.GPU_IDS,
        ann.WORKLOAD,
    ]
)


@st.composite
def hostile_objects(draw) -> dict:
    """Valid shapes with hostile values, and invalid shapes."""
    if draw(st.booleans()):
        return draw(st.dictionaries(st.sampled_from(["metadata", "spec", "status", "kind"]), json_values, max_size=4))
    annotations = draw(st.dictionaries(annotation_keys, hostile_text | st.text(max_size=10), max_size=5))
    obj = {
        "kind": draw(st.sampled_from(["Pod", "GPU", "Node", "TensorFusionWorkload"])),
        "metadata": {
            "name": draw(st.text(min_size=1, max_size=8)),
            "namespace": draw(st.sampled_from(["default", "x"]) | json_values),
            "uid": draw(st.text(max_size=6) | json_values),
            "annotations": annotations,
        },
        "spec": draw(st.fixed_dictionaries({}, optional={"nodeName": st.sampled_from(["a", ""]) | json_values})),
        "status": draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "phase": st.sampled_from(["Running", "Succeeded"]) | json_values,
                    "capacity": st.dictionaries(st.sampled_from(["tflops", "vram"]), hostile_text | json_values),
                    "usedBy": json_values,
                    "nodeSelector": json_values,
                },
            )
        ),
    }
    return obj


def fresh_state() -> ClusterState:
    state = ClusterState()
    state.load({Kind.NODE: [node_object("a")], Kind.GPU: [gpu_object("a", 0, tflops=100, vram=16 * GiB)]})
    return state


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(list(Kind)), event=st.sampled_from(list(EventType)), obj=hostile_objects())
def test_no_object_makes_the_cache_raise(kind: Kind, event: EventType, obj: dict) -> None:
    state = fresh_state()
    state.cache.apply(kind, event, obj)  # must not raise
    state.cache.replace(kind, [obj])  # nor in a list
    # The GPU's accounting stays sane whatever came in.
    g = state.inventory.gpu_index.get(gpu_name("a", 0))
    if g is not None:
        assert state.inventory.used_t[g] >= 0 and state.inventory.used_v[g] >= 0


class ListOnly:
    """A client whose Pod list holds a poison pod among good ones, and whose watch stays open."""

    def __init__(self, items: list) -> None:
        self.items = items

    async def get(self, path: str, **params):
        return {"apiVersion": "v1", "metadata": {"resourceVersion": "7"}, "items": self.items}

    async def watch(self, path, rv, *, timeout_seconds=300, on_open=None):
        if on_open is not None:
            on_open()
        await asyncio.sleep(3600)
        yield {}


async def test_a_poison_pod_does_not_stop_the_list(caplog: pytest.LogCaptureFixture):
    """The reproducer of the issue: 1e306 TFLOPS plus gpu-ids, never scheduled."""
    caplog.set_level(logging.INFO, logger="tfsched.kubeapi.informer")
    poison = gpu_pod("poison", tflops="1e306", vram="1e9999999", gpu_ids=[gpu_name("a", 0)], uid="poison")
    broken = {"metadata": ["not", "an", "object"]}
    holder = gpu_pod("holder", tflops="40", vram="4Gi", gpu_ids=[gpu_name("a", 0)], node="a", uid="holder")
    state = fresh_state()
    informer = Informer(ListOnly([poison, broken, "text", holder]), state.cache, RESOURCES[Kind.POD])  # type: ignore[arg-type]
    task = asyncio.create_task(informer.run())
    try:
        for _ in range(200):
            if informer.relists:
                break
            await asyncio.sleep(0.01)
        assert informer.relists == 1 and Kind.POD in state.cache.synced
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert set(state.ledger.allocations) == {"holder"}
    assert state.problems.counts[PROBLEM_POD] == 1  # the poison pod, reported
    assert state.problems.counts[PROBLEM_UNREADABLE] == 2  # the two objects that are not pods
    reasons = {p.reason for p in state.problems.take()}
    assert reasons == {ann.EVENT_GPU_IDS_IGNORED, ann.EVENT_UNREADABLE_OBJECT}
    # The operator's line per list: the objects taken in (not the two that are not pods).
    assert any(r.getMessage().startswith("Pod: listed 2 in ") for r in caplog.records)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(pod=hostile_objects(), verb=st.sampled_from(["filter", "prioritize", "bind"]))
def test_no_pod_makes_a_verb_fail(pod: dict, verb: str) -> None:
    from tests.serving import memory_app, serving

    async def run() -> None:
        state = fresh_state()
        async with serving(memory_app(state)) as client:
            if verb == "bind":
                meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
                body = {"PodName": meta.get("name"), "PodNamespace": meta.get("namespace"), "Node": "a"}
            else:
                body = {"Pod": pod, "NodeNames": ["a"]}
            resp = await client.post(f"/{verb}", data=orjson.dumps(body))
            assert resp.status < 500, await resp.text()
            assert not state.ledger.allocations  # nothing bound: the pod was never in the cache

    asyncio.run(run())
