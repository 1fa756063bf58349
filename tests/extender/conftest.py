from __future__ import annotations

import pytest

from tests.serving import memory_app
from tfsched.allocation.config import SchedulingConfig
from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.cache import Kind
from tfsched.clustermodel.objects import gpu_object, node_object

GiB = 2**30


def make_state(
    layout: dict[str, list[tuple[float, float]]],
    pods: list[dict] | None = None,
    workloads: list[dict] | None = None,
    config: SchedulingConfig | None = None,
    **gpu_kwargs,
) -> ClusterState:
    """A state from {node: [(tflops, vram_bytes), ...]} plus pods and workloads."""
    state = ClusterState(config or SchedulingConfig())
    nodes = [node_object(n, gpus=len(gpus)) for n, gpus in layout.items()]
    gpus = [
        gpu_object(n, i, tflops=t, vram=v, **gpu_kwargs)
        for n, specs in layout.items()
        for i, (t, v) in enumerate(specs)
    ]
    state.load({Kind.NODE: nodes, Kind.GPU: gpus, Kind.POD: pods or [], Kind.WORKLOAD: workloads or []})
    return state


@pytest.fixture
def make_client(app_client):
    async def factory(state: ClusterState):
        return await app_client(memory_app(state))

    return factory
