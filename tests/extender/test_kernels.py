"""The numba kernels and their numpy twins agree on random clusters."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.scoring.kernels import (
    fit_nodes_numba,
    fit_nodes_numpy,
    pick_gpus_numba,
    pick_gpus_numpy,
    score_nodes_numba,
    score_nodes_numpy,
)
from tfsched.scoring.modes import FIT_NO_TFLOPS, FIT_NO_VRAM, FIT_OK, FIT_TOO_FEW_GPUS


@st.composite
def clusters(draw):
    n_nodes = draw(st.integers(1, 12))
    slots = draw(st.integers(1, 8))
    per_node = [draw(st.integers(0, slots)) for _ in range(n_nodes)]
    g_total = sum(per_node)
    node_gpus = np.full((n_nodes, slots), -1, np.int32)
    g = 0
    for n, k in enumerate(per_node):
        node_gpus[n, :k] = np.arange(g, g + k)
        g += k
    size = max(g_total, 1)
    cap_t = np.array([draw(st.sampled_from([0.0, 1000.0, 100000.0, 312000.0])) for _ in range(size)])
    cap_v = np.array([draw(st.sampled_from([0.0, 2.0**30, 16 * 2.0**30, 80 * 2.0**30])) for _ in range(size)])
    used_t = np.floor(cap_t * np.array([draw(st.floats(0, 1)) for _ in range(size)]))
    used_v = np.floor(cap_v * np.array([draw(st.floats(0, 1)) for _ in range(size)]))
    eligible = np.array([draw(st.booleans()) for _ in range(size)])
    nodes = np.array(draw(st.lists(st.integers(-1, n_nodes - 1), min_size=1, max_size=20)), np.int32)
    return nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v


requests = st.tuples(
    st.sampled_from([0.0, 500.0, 20000.0, 150000.0]),
    st.sampled_from([0.0, 0.0, 0.25]),
    st.sampled_from([0.0, 2.0**29, 10 * 2.0**30]),
    st.integers(1, 4),
)


@settings(max_examples=300, deadline=None)
@given(clusters(), requests)
def test_fit_numba_equals_numpy(cluster, request):
    req_t, req_pct, req_v, count = request
    a_verdict, a_counts, a_largest = fit_nodes_numba(*cluster, req_t, req_pct, req_v, count)
    b_verdict, b_counts, b_largest = fit_nodes_numpy(*cluster, req_t, req_pct, req_v, count)
    np.testing.assert_array_equal(a_verdict, b_verdict)
    np.testing.assert_array_equal(a_counts, b_counts)
    np.testing.assert_array_equal(a_largest, b_largest)
    # The largest free share of a short resource is really short of the request (and not negative).
    assert (a_largest >= 0).all() and (a_largest[:, 1] <= 1).all()
    # A GPU with room now has the capacity; an eligible GPU without the capacity never has room.
    assert (a_counts[:, 3] <= a_counts[:, 4]).all() and (a_counts[:, 4] <= a_counts[:, 0]).all()
    assert (a_largest[:, 2] < req_v).all() or (req_v == 0 and not a_largest[:, 2].any())
    if req_pct == 0:
        assert (a_largest[:, 0] < req_t).all() or (req_t == 0 and not a_largest[:, 0].any())


@settings(max_examples=300, deadline=None)
@given(clusters(), st.booleans(), st.floats(0, 1))
def test_score_numba_equals_numpy(cluster, compact, w_t):
    a = score_nodes_numba(*cluster, w_t, 1 - w_t, compact)
    b = score_nodes_numpy(*cluster, w_t, 1 - w_t, compact)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)
    assert ((a >= -1e-9) & (a <= 100 + 1e-9)).all()


@settings(max_examples=300, deadline=None)
@given(clusters(), requests, st.booleans())
def test_pick_numba_equals_numpy_and_fits(cluster, request, compact):
    nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v = cluster
    req_t, req_pct, req_v, count = request
    node = int(nodes[0]) if nodes[0] >= 0 else 0
    args = (node, node_gpus, eligible, cap_t, cap_v, used_t, used_v, req_t, req_pct, req_v, count, 0.3, 0.7, compact)
    a, b = pick_gpus_numba(*args), pick_gpus_numpy(*args)
    np.testing.assert_array_equal(a, b)
    verdict, *_ = fit_nodes_numba(
        np.array([node], np.int32), node_gpus, eligible, cap_t, cap_v, used_t, used_v, req_t, req_pct, req_v, count
    )
    assert (a.size == count) == (verdict[0] == FIT_OK)
    for g in a:
        assert g in node_gpus[node] and eligible[g]
        assert cap_t[g] - used_t[g] >= req_t + np.ceil(req_pct * cap_t[g] - 1e-9)
        assert cap_v[g] - used_v[g] >= req_v
    assert len(set(a.tolist())) == a.size


def test_verdicts_name_the_short_resource():
    node_gpus = np.array([[0, 1]], np.int32)
    eligible = np.ones(2, bool)
    cap_t = np.array([100.0, 100.0])
    cap_v = np.array([10.0, 10.0])
    used_t = np.array([0.0, 90.0])
    used_v = np.array([9.0, 0.0])
    nodes = np.array([0], np.int32)
    # GPU 0 has TFLOPS but no VRAM, GPU 1 the reverse
    v, counts, largest = fit_nodes_numba(nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v, 50.0, 0.0, 5.0, 1)
    assert counts.tolist() == [[2, 1, 1, 0, 2]]  # both could hold it, were they empty
    # Short of TFLOPS: GPU 1 (10 free of 100); short of VRAM: GPU 0 (1 free).
    assert largest.tolist() == [[10.0, 0.1, 1.0]]
    v, *_ = fit_nodes_numba(nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v, 5.0, 0.0, 5.0, 2)
    assert v[0] == FIT_NO_VRAM  # both have TFLOPS, only one has VRAM
    v, *_ = fit_nodes_numba(nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v, 50.0, 0.0, 1.0, 2)
    assert v[0] == FIT_NO_TFLOPS
    v, *_ = fit_nodes_numba(nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v, 1.0, 0.0, 1.0, 3)
    assert v[0] == FIT_TOO_FEW_GPUS
    # 11 VRAM: more than either GPU holds, so it can never fit, whatever is freed.
    v, counts, _ = fit_nodes_numba(nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v, 1.0, 0.0, 11.0, 1)
    assert v[0] == FIT_NO_VRAM and counts[0, 4] == 0


def test_compact_picks_fullest_lowload_picks_emptiest():
    node_gpus = np.array([[0, 1, 2]], np.int32)
    eligible = np.ones(3, bool)
    cap = np.array([100.0, 100.0, 100.0])
    used = np.array([50.0, 10.0, 30.0])
    args = (0, node_gpus, eligible, cap, cap, used, used, 10.0, 0.0, 10.0, 1, 0.3, 0.7)
    assert pick_gpus_numba(*args, True).tolist() == [0]
    assert pick_gpus_numba(*args, False).tolist() == [1]
