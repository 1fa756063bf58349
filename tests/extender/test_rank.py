"""scoring.rank: one winner per pod, costs in steps, CPU-ratio classes; and the
inventory's per-node helpers the fragmentation-aware mode ranks by."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.scoring.inventory import GPUSpec, Inventory
from tfsched.scoring.rank import MAX_SCORE, decisive_scores, ratio_class

INF = np.inf


def test_one_winner_then_steps_and_zero_where_it_does_not_fit() -> None:
    cost = np.array([0.35, 0.05, INF, 0.0, 0.42, 0.0])
    name = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    scores = decisive_scores(cost, lambda at: (name[at],), 0.1)
    # Steps of 0.1 from the least (0.0): 0.0, 0.05 and 0.0 share step 0; the last node wins by name.
    assert scores.tolist() == [6, 9, 0, 9, 5, MAX_SCORE]


def test_preference_keys_in_order_then_position() -> None:
    cost = np.zeros(4)
    first = np.array([1.0, 0.0, 0.0, 0.0])
    second = np.array([0.0, 2.0, 1.0, 1.0])
    assert decisive_scores(cost, lambda at: (first[at], second[at]), 0.1).tolist() == [9, 9, 10, 9]
    # Equal on every key: the first position.
    assert decisive_scores(cost, lambda at: (np.zeros(at.size),), 0.1).tolist() == [10, 9, 9, 9]


def test_nothing_fits_and_far_costs_floor_at_one() -> None:
    assert decisive_scores(np.full(3, INF), lambda at: (np.zeros(at.size),), 0.1).tolist() == [0, 0, 0]
    assert decisive_scores(np.array([0.0, 50.0]), lambda at: (np.zeros(at.size),), 0.1).tolist() == [MAX_SCORE, 1]
    assert decisive_scores(np.zeros(0), lambda at: (np.zeros(at.size),), 0.1).tolist() == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.floats(0, 5, allow_nan=False), st.just(INF)), min_size=1, max_size=40),
    st.integers(0, 2**31),
)
def test_scores_are_a_ranking_with_exactly_one_ten(costs: list[float], seed: int) -> None:
    cost = np.array(costs)
    prefer = np.random.default_rng(seed).random(cost.size)
    scores = decisive_scores(cost, lambda at: (prefer[at],), 0.1)
    fits = np.isfinite(cost)
    assert ((scores == 0) == ~fits).all()
    assert (scores == MAX_SCORE).sum() == (1 if fits.any() else 0)
    assert ((scores >= 1) & (scores <= MAX_SCORE))[fits].all()
    if fits.any():
        winner = int(np.argmax(scores))
        low = cost[fits].min()
        # The winner is within one step of the least cost, and preferred among those.
        assert cost[winner] - low < 0.1 + 1e-12
        peers = fits & (np.floor((cost - low) / 0.1) == 0)
        assert prefer[winner] == prefer[peers].min()
        # Apart from the winner, a cheaper node never scores below a dearer one.
        rest = np.flatnonzero(fits & (np.arange(cost.size) != winner))
        assert (np.diff(scores[rest[np.argsort(cost[rest], kind="stable")]]) <= 0).all()


def test_ratio_class_is_distance_in_powers_of_the_base() -> None:
    node = np.array([16.0, 16.0, 60.0, 70.0, 4.0, 0.0, INF])
    pod = np.full(node.size, 16.0)
    assert ratio_class(node, pod, 4.0).tolist() == [0, 0, 0, 1, 1, INF, INF]


def _inventory() -> Inventory:
    inv = Inventory()
    for node, cpu in (("b-node", 64_000.0), ("a-node", 8_000.0), ("c-node", 32_000.0)):
        idx = inv.node(node)
        inv.node_alloc_cpu[idx] = cpu
    gib = 2.0**30
    for node, n, tflops in (("b-node", 2, 100.0), ("a-node", 1, 100.0), ("c-node", 2, 400.0)):
        for i in range(n):
            inv.upsert_gpu(GPUSpec(f"{node}-{i}", node, tflops=tflops, vram=16 * gib))
    inv.used_t[inv.gpu("b-node-0")] = inv.cap_t[inv.gpu("b-node-0")]  # one of b's two GPUs taken
    inv.used_v[inv.gpu("b-node-0")] = inv.cap_v[inv.gpu("b-node-0")]
    return inv


def test_name_rank_is_sorted_order_whatever_the_arrival() -> None:
    inv = _inventory()
    nodes = inv.node_indices(["a-node", "b-node", "c-node", "unknown"])
    assert inv.name_rank(nodes).tolist() == [0.0, 1.0, 2.0, INF]
    inv.node("aa-node")  # arrives later, sorts second
    assert inv.name_rank(inv.node_indices(["aa-node", "b-node"])).tolist() == [1.0, 2.0]


def test_free_cpu_per_free_gpu_and_request_share() -> None:
    inv = _inventory()
    nodes = inv.node_indices(["b-node", "a-node", "c-node", "unknown"])
    # b: 64 CPUs over one free GPU; a: 8 over one; c: 32 over two.
    assert inv.free_cpu_per_free_gpu(nodes, 0.5, 0.5).tolist() == [64_000.0, 8_000.0, 16_000.0, 0.0]
    # Half the TFLOPS of a 100-TFLOPS GPU and a quarter of its VRAM: (0.5 + 0.25) / 2 per GPU.
    units = (50_000.0, 0.0, 4 * 2.0**30, 2)  # milli-TFLOPS, percent share, VRAM bytes, count
    share = inv.request_share(nodes, *units, 0.5, 0.5)
    assert share[:2].tolist() == [0.75, 0.75]
    assert share[2] == 2 * (50 / 400 + 0.25) / 2  # the same request on 400-TFLOPS GPUs
    assert share[3] == 0.0
