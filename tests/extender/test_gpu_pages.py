"""A list page of GPUs goes into the inventory at once (``Ledger.upsert_gpus``,
``Inventory.add_gpus``): the same inventory and usage as taking each GPU in turn,
and a bad object in a page still costs only itself."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.allocation.ledger import Ledger
from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.cache import ClusterCache, EventType, Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object
from tfsched.scoring.inventory import GPUSpec, Inventory

GiB = 2**30


def picture(inv: Inventory) -> dict:
    """What the inventory says, by names (slot and node numbers are its own business)."""
    gpus = {}
    for name, g in inv.gpu_index.items():
        gpus[name] = (
            inv.node_names[inv.gpu_node[g]],
            float(inv.cap_t[g]),
            float(inv.cap_v[g]),
            bool(inv.usable[g]),
            int(inv.model[g]) and next(k for k, v in inv.models._codes.items() if v == inv.model[g]),
            int(inv.pool[g]) and next(k for k, v in inv.pools._codes.items() if v == inv.pool[g]),
            int(inv.device_index[g]),
            float(inv.used_t[g]),
            float(inv.used_v[g]),
            int(inv.holders[g]),
        )
    rows = {}
    for node, idx in inv.node_index.items():
        row = inv.node_gpus[idx].tolist()
        linked = inv._linked[idx]
        assert all(g >= 0 for g in row[:linked]) and all(g == -1 for g in row[linked:])  # kernels stop at -1
        rows[node] = sorted(inv.gpu_names[g] for g in row[:linked])
    return {"gpus": gpus, "rows": {n: r for n, r in rows.items() if r}}


spec = st.builds(
    GPUSpec,
    name=st.sampled_from([f"g{i}" for i in range(14)]),
    node=st.sampled_from(["a", "b", "c"]),
    tflops=st.sampled_from([0.0, 100.0, 312.5]),
    vram=st.sampled_from([0.0, float(GiB), 80.0 * GiB]),
    model=st.sampled_from(["", "A100", "H100"]),
    pool=st.sampled_from(["", "p"]),
    device_index=st.integers(-1, 7),
    usable=st.booleans(),
)
step = st.one_of(st.lists(spec, max_size=12), st.sampled_from([f"g{i}" for i in range(14)]))  # a page, or a removal


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=8), st.integers(1, 3))
def test_a_page_at_once_is_each_gpu_in_turn(steps, slots):
    # Narrow rows and arrays, so pages grow them; removals leave slots to reuse.
    one, paged = (Ledger(Inventory(gpu_capacity=2, node_capacity=1, slots=slots)) for _ in range(2))
    for s in steps:
        if isinstance(s, str):
            one.remove_gpu(s)
            paged.remove_gpu(s)
            continue
        for each in s:
            one.upsert_gpu(each)
        paged.upsert_gpus(s)
        assert picture(paged.inventory) == picture(one.inventory)


def pods_then_gpus(page: bool) -> ClusterState:
    state = ClusterState()
    state.cache.replace(Kind.NODE, [node_object("n", gpus=2)])
    pods = [
        gpu_pod(f"p{i}", tflops="10", vram="1Gi", node="n", gpu_ids=[gpu_name("n", i % 2)], uid=f"u{i}")
        for i in range(3)
    ]
    state.cache.replace(Kind.POD, pods)  # before the GPUs: they count once their GPU arrives
    gpus = [gpu_object("n", j, tflops=312, vram=80 * GiB) for j in range(2)]
    if page:
        state.cache.replace(Kind.GPU, gpus)
    else:
        for gpu in gpus:
            state.cache.apply(Kind.GPU, EventType.ADDED, gpu)
    return state


def test_gpus_listed_after_their_pods_get_their_holders_back():
    paged, one = pods_then_gpus(page=True), pods_then_gpus(page=False)
    assert picture(paged.inventory) == picture(one.inventory)
    g0 = paged.inventory.gpu(gpu_name("n", 0))
    assert paged.inventory.holders[g0] == 2 and paged.inventory.used_v[g0] == 2 * GiB


def test_a_list_page_reaches_the_page_handler_once():
    cache = ClusterCache()
    pages: list[list] = []
    seen: list = []
    cache.subscribe(Kind.GPU, lambda event, obj, old: seen.append(obj), pages.append)
    cache.replace(Kind.GPU, [gpu_object("n", j, tflops=1, vram=1) for j in range(3)])
    assert len(pages) == 1 and [event for event, _, _ in pages[0]] == [EventType.ADDED] * 3
    assert seen == []  # not told twice
    cache.replace(Kind.GPU, [gpu_object("n", j, tflops=1, vram=1) for j in range(3)])
    assert [event for event, _, old in pages[1] if old is not None] == [EventType.MODIFIED] * 3


def test_a_bad_gpu_in_a_page_costs_only_itself():
    errors: list = []
    state = ClusterState()
    state.cache.on_error = lambda kind, obj, exc: errors.append((kind, obj["metadata"]["name"]))
    bad = gpu_object("n", 1, tflops=1, vram=1)
    bad["status"]["capacity"] = ["not", "a", "map"]  # gpu_spec cannot read it: the page handler fails
    good = [gpu_object("n", j, tflops=312, vram=80 * GiB) for j in (0, 2)]
    state.cache.replace(Kind.GPU, [good[0], bad, good[1]])
    assert sorted(state.inventory.gpu_index) == [gpu_name("n", 0), gpu_name("n", 2)]
    assert errors == [(Kind.GPU, gpu_name("n", 1))]
    assert state.cache.get(Kind.GPU, "", gpu_name("n", 1)) is not None  # listed: kept, as one at a time
