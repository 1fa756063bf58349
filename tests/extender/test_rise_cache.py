"""The fragmentation-aware mode's cache of rises gives what computing afresh gives,
whatever changed in between (binds, pods' CPU, GPUs added, removed or taken away,
nodes' allocatable, the mix)."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.allocation.config import SchedulingConfig
from tfsched.allocation.ledger import NoFit
from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object
from tfsched.extender.placement import score_nodes
from tfsched.scoring.modes import PlacementMode
from tfsched.scoring.risecache import RiseCache

GiB = 2**30
NODES = [f"n{i}" for i in range(6)]
STEPS = ["bind", "pending", "delete", "gpu", "node", "reserve", "release"]
MODE = PlacementMode.LEAST_FRAGMENTATION
CPU_MEM = [(1000.0, float(GiB)), (8000.0, float(GiB)), (0.0, 0.0)]


def _pod(k: int, rng: random.Random, bound: bool) -> dict:
    node = rng.choice(NODES)
    pod = gpu_pod(
        f"p{k}",
        tflops=str(rng.choice([10, 30, 50, 100])),
        vram=rng.choice(["2Gi", "8Gi", "16Gi"]),
        uid=f"u{k}",
        **({"node": node, "gpu_ids": [gpu_name(node, rng.randrange(2))]} if bound else {}),
    )
    pod["spec"]["containers"][0]["resources"]["requests"] = {"cpu": str(rng.choice([1, 4, 8, 16])), "memory": "1Gi"}
    return pod


def _state() -> ClusterState:
    state = ClusterState(SchedulingConfig(placementMode=MODE))
    state.load(
        {
            Kind.NODE: [node_object(n, cpu=str(16 + 8 * i), gpus=2) for i, n in enumerate(NODES)],
            Kind.GPU: [gpu_object(n, j, tflops=100, vram=16 * GiB) for n in NODES for j in range(2)],
        }
    )
    return state


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31),
    st.lists(st.sampled_from(["bind", "pending", "delete", "gpu", "node", "reserve", "release"]), max_size=25),
)
def test_cached_scores_equal_fresh_ones(seed: int, steps: list[str]) -> None:
    rng = random.Random(seed)
    state = _state()
    names = [*NODES, "unknown"]
    probe = [_pod(10_000 + i, rng, bound=False) for i in range(3)]
    live: list[dict] = []
    reserved: list[str] = []
    for k, step in enumerate(steps):
        if step in ("bind", "pending"):
            pod = _pod(k, rng, bound=step == "bind")
            live.append(pod)
            state.cache.apply(Kind.POD, EventType.ADDED, pod)
        elif step == "reserve":  # a bind in flight: the ledger alone, no pod event yet
            pod = _pod(k, rng, bound=False)
            reserved.append(pod["metadata"]["uid"])
            try:
                state.ledger.reserve(reserved[-1], "p", rng.choice(NODES), state.effective_request(pod), MODE)
            except NoFit:
                reserved.pop()
        elif step == "release" and reserved:
            state.ledger.release(reserved.pop(rng.randrange(len(reserved))))
        elif step == "delete" and live:
            state.cache.apply(Kind.POD, EventType.DELETED, live.pop(rng.randrange(len(live))))
        elif step == "gpu":
            node = rng.choice(NODES)
            gpu = gpu_object(node, rng.randrange(3), tflops=rng.choice([50, 100]), vram=16 * GiB)
            if rng.random() < 0.3:
                gpu["status"]["usedBy"] = "someone-else"
            state.cache.apply(Kind.GPU, EventType.MODIFIED, gpu)
        else:
            node = node_object(rng.choice(NODES), cpu=str(rng.choice([8, 32, 64])), gpus=2)
            state.cache.apply(Kind.NODE, EventType.MODIFIED, node)
        for pod, cpu_mem in [*zip(probe, CPU_MEM, strict=True), (None, (4000.0, float(GiB)))]:
            request = state.effective_request(pod) if pod is not None else None  # None: a pod without GPUs
            cached = score_nodes(state, request, names, cpu_mem=cpu_mem)
            fresh_state_cache, state.rise_cache = state.rise_cache, RiseCache()
            fresh = score_nodes(state, request, names, cpu_mem=cpu_mem)
            state.rise_cache = fresh_state_cache
            assert np.array_equal(cached, fresh), (step, cached, fresh)
    # Nothing changed since: the second call is answered from the cache for every known node.
    request, cpu_mem = state.effective_request(probe[0]), CPU_MEM[0]
    score_nodes(state, request, names, cpu_mem=cpu_mem)
    hits, misses = state.rise_cache.hits, state.rise_cache.misses
    score_nodes(state, request, names, cpu_mem=cpu_mem)
    assert (state.rise_cache.hits - hits, state.rise_cache.misses - misses) == (len(NODES), 0)
