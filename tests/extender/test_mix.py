"""The workload mix: types weighed by pods over the share of GPUs able to hold them."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.allocation.ledger import Ledger
from tfsched.allocation.mix import MixArrays, WorkloadMix, request_type
from tfsched.clustermodel.gpurequest import GPURequest
from tfsched.scoring.inventory import GPUSpec, Inventory, capable_gpu_share, tflops_units, vram_units
from tfsched.scoring.modes import PlacementMode

GiB = 2**30


def _inventory(nodes: list[tuple[float, float, list[tuple[float, float, bool]]]]) -> Inventory:
    """Nodes as (milli-CPU, memory bytes, [(TFLOPS, VRAM bytes, usable) per GPU])."""
    inv = Inventory()
    for i, (cpu, mem, gpus) in enumerate(nodes):
        inv.set_node_present(f"n{i}", True)
        inv.set_allocatable(inv.node(f"n{i}"), cpu, mem)
        for j, (t, v, usable) in enumerate(gpus):
            inv.upsert_gpu(GPUSpec(f"n{i}-g{j}", f"n{i}", tflops=t, vram=v, device_index=j, usable=usable))
    return inv


def _brute_force(nodes, t, pct, v, count, cpu, mem) -> float:
    total = sum(u for _, _, gpus in nodes for *_, u in gpus)
    held = 0
    for node_cpu, node_mem, gpus in nodes:
        big = [
            1
            for gt, gv, u in gpus
            if u and tflops_units(gt) >= t + np.ceil(pct * tflops_units(gt) - 1e-9) and vram_units(gv) >= v
        ]
        if node_cpu >= cpu and node_mem >= mem and len(big) >= count:
            held += sum(1 for *_, u in gpus if u)
    return held / total if total else 0.0


gpu = st.tuples(st.sampled_from([50.0, 100.0, 200.0]), st.sampled_from([8 * GiB, 16 * GiB, 80 * GiB]), st.booleans())
node = st.tuples(
    st.sampled_from([8000.0, 64000.0, 128000.0]), st.sampled_from([64 * GiB, 512 * GiB]), st.lists(gpu, max_size=5)
)
kind = st.tuples(
    st.sampled_from([0.0, 60_000.0, 150_000.0]),
    st.sampled_from([0.0, 0.5, 1.0]),
    st.sampled_from([0.0, 10 * GiB, 40 * GiB]),
    st.integers(0, 4),
    st.sampled_from([0.0, 16000.0, 100000.0]),
    st.sampled_from([0.0, 128 * GiB]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(node, min_size=1, max_size=6), st.lists(kind, min_size=1, max_size=4))
def test_capable_share_is_the_gpus_on_nodes_that_could_hold_the_type(nodes, types) -> None:
    inv = _inventory(nodes)
    types = [(t, pct, float(v), c, cpu, float(mem)) for t, pct, v, c, cpu, mem in types]
    got = capable_gpu_share(
        inv.node_gpus, inv.usable, inv.cap_t, inv.cap_v, inv.node_alloc_cpu, inv.node_alloc_mem, types
    )
    want = [_brute_force(nodes, *k) for k in types]
    assert np.allclose(got, want)
    assert np.allclose(inv.capable_share(types), want)  # the cached path agrees


def test_a_type_few_gpus_can_hold_weighs_more_per_pod() -> None:
    # Four nodes of 2 GPUs; only the first has the CPU for the big type.
    inv = _inventory(
        [(128000.0, 512 * GiB, [(100.0, 16 * GiB, True)] * 2)]
        + [(16000.0, 64 * GiB, [(100.0, 16 * GiB, True)] * 2)] * 3
    )
    small = request_type(GPURequest(tflops_request=10, vram_request=GiB, gpu_count=1), 1000, GiB)
    big = request_type(GPURequest(tflops_request=100, vram_request=16 * GiB, gpu_count=2), 100000, GiB)
    never = request_type(GPURequest(tflops_request=100, vram_request=16 * GiB, gpu_count=3), 1000, GiB)
    counts = Counter({small: 30, big: 10, never: 5})
    by_pods = MixArrays.of(counts)
    assert by_pods.popularity.tolist() == [30 / 45, 10 / 45, 5 / 45]
    weighed = MixArrays.of(counts, capable_share=inv.capable_share)
    # small: 30 pods over all 8 GPUs; big: 10 over the 2 of the first node; never: held nowhere, left out
    assert weighed.count.tolist() == [2, 1]
    assert np.allclose(weighed.popularity, [40 / 70, 30 / 70])


def test_capacity_changes_rebuild_the_mix_and_usage_does_not() -> None:
    inv = _inventory([(64000.0, 64 * GiB, [(100.0, 16 * GiB, True)] * 2)] * 2)
    ledger = Ledger(inv)
    mix = WorkloadMix(inv)
    request = GPURequest(tflops_request=10, vram_request=GiB, gpu_count=1)
    for i in range(200):
        mix.observe(f"u{i}", request, 1000, GiB)
    mix.arrays(request)
    version = mix.version
    before = inv.capacity_version
    ledger.reserve("u", "p", "n0", request, PlacementMode.COMPACT_FIRST)
    inv.set_allocatable(inv.node("n1"), 64000.0, 64 * GiB)  # unchanged
    assert inv.capacity_version == before
    mix.arrays(request)
    assert mix.version == version
    for change in (
        lambda: inv.set_allocatable(inv.node("n1"), 8000.0, 64 * GiB),
        lambda: inv.upsert_gpu(GPUSpec("n1-g0", "n1", tflops=50, vram=16 * GiB, device_index=0)),
        lambda: inv.upsert_gpu(GPUSpec("n1-g1", "n1", tflops=100, vram=16 * GiB, device_index=1, usable=False)),
        lambda: inv.upsert_gpu(GPUSpec("n2-g0", "n2", tflops=100, vram=16 * GiB)),
        lambda: inv.upsert_gpu(GPUSpec("n2-g0", "n0", tflops=100, vram=16 * GiB)),
        lambda: inv.remove_gpu("n2-g0"),
    ):
        change()
        assert inv.capacity_version > before
        before = inv.capacity_version
        mix.arrays(request)
        assert mix.version == version + 1
        version = mix.version
