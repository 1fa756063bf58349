"""kube-scheduler retries binds it timed out on, while the first attempt may still finish."""

from __future__ import annotations

import asyncio

import pytest

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import Kind
from tfsched.clustermodel.objects import gpu_pod
from tfsched.extender.bind import Binder, BindError, MemoryPodWriter

from .conftest import GiB, make_state

LAYOUT = {"a": [(100, 16 * GiB)], "b": [(100, 16 * GiB)]}


def _state():
    return make_state(LAYOUT, pods=[gpu_pod("p", tflops="40", vram="8Gi", uid="u")])


def _used(state, gpu):
    inv = state.inventory
    return inv.used_t[inv.gpu(gpu)], inv.used_v[inv.gpu(gpu)]


async def test_a_retry_to_the_same_node_is_a_success_and_changes_nothing():
    state = _state()
    binder = Binder(state, MemoryPodWriter(state))
    await binder.bind("default", "p", "u", "a")
    before = state.inventory.used_v.copy()
    result = await binder.bind("default", "p", "u", "a")
    assert result.gpu_names == ("a-gpu-0",)
    assert (state.inventory.used_v == before).all()


async def test_a_retry_to_another_node_is_refused_and_keeps_the_first_placement():
    state = _state()
    binder = Binder(state, MemoryPodWriter(state))
    await binder.bind("default", "p", "u", "a")
    with pytest.raises(BindError, match="already bound to node a"):
        await binder.bind("default", "p", "u", "b")
    assert _used(state, "a-gpu-0") == (40000, 8 * GiB)
    assert _used(state, "b-gpu-0") == (0, 0)
    assert state.cache.get(Kind.POD, "default", "p")["metadata"]["annotations"][ann.GPU_IDS] == "a-gpu-0"


class SlowThenConflictingWriter(MemoryPodWriter):
    """The first Binding is slow; a Binding to another node then conflicts, as the API server does."""

    def __init__(self, state) -> None:
        super().__init__(state)
        self.first = True

    async def bind(self, namespace, name, uid, node, annotations):
        if self.first:
            self.first = False
            await asyncio.sleep(0.05)
        pod = self.state.cache.get(Kind.POD, namespace, name)
        bound = pod["spec"].get("nodeName")
        if bound and bound != node:
            raise RuntimeError(f'409 Conflict: pod {name} is already assigned to node "{bound}"')
        await super().bind(namespace, name, uid, node, annotations)


async def test_concurrent_attempts_for_one_pod_leave_one_placement():
    state = _state()
    binder = Binder(state, SlowThenConflictingWriter(state))
    first = asyncio.create_task(binder.bind("default", "p", "u", "a"))
    await asyncio.sleep(0)  # the first attempt is now inside its slow Binding
    with pytest.raises(BindError, match="already bound"):
        await binder.bind("default", "p", "u", "b")
    await first
    pod = state.cache.get(Kind.POD, "default", "p")
    assert pod["spec"]["nodeName"] == "a"
    assert pod["metadata"]["annotations"][ann.GPU_IDS] == "a-gpu-0"
    assert _used(state, "a-gpu-0") == (40000, 8 * GiB) and _used(state, "b-gpu-0") == (0, 0)


class FailingBindWriter(MemoryPodWriter):
    async def bind(self, namespace, name, uid, node, annotations):
        raise RuntimeError("500 boom")


async def test_a_failed_attempt_puts_back_the_previous_record():
    state = _state()
    await Binder(state, MemoryPodWriter(state)).bind("default", "p", "u", "a")
    # The pod lost its node (say, a bind whose Binding was never written): its gpu-ids stay.
    pod = state.cache.get(Kind.POD, "default", "p")
    pod["spec"].pop("nodeName")
    with pytest.raises(BindError, match="500 boom"):
        await Binder(state, FailingBindWriter(state)).bind("default", "p", "u", "b")
    assert state.cache.get(Kind.POD, "default", "p")["metadata"]["annotations"][ann.GPU_IDS] == "a-gpu-0"
    assert _used(state, "a-gpu-0") == (40000, 8 * GiB) and _used(state, "b-gpu-0") == (0, 0)
