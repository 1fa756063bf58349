"""The fragmentation kernels: numba and numpy twins agree, and they do what FGD means."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.scoring.kernels import (
    fit_nodes_numba,
    frag_pick_numba,
    frag_pick_numpy,
    frag_scores_numba,
    frag_scores_numpy,
)
from tfsched.scoring.modes import FIT_OK

from .test_kernels import clusters, requests

mixes = st.lists(
    st.tuples(
        st.sampled_from([0.0, 500.0, 20000.0, 150000.0]),
        st.sampled_from([0.0, 0.0, 0.5]),
        st.sampled_from([0.0, 2.0**29, 10 * 2.0**30]),
        st.integers(1, 3),
        st.floats(0.01, 1),
    ),
    min_size=1,
    max_size=6,
)


def mix_arrays(mix):
    t, pct, v, count, weight = (np.array(col) for col in zip(*mix, strict=True))
    return (
        t.astype(np.float64),
        pct.astype(np.float64),
        v.astype(np.float64),
        count.astype(np.int64),
        weight / weight.sum(),
    )


@settings(max_examples=300, deadline=None)
@given(clusters(), requests, mixes, st.floats(0, 1))
def test_frag_scores_numba_equals_numpy(cluster, request, mix, w_t):
    args = (*cluster, *request, *mix_arrays(mix), w_t, 1 - w_t)
    a, b = frag_scores_numba(*args), frag_scores_numpy(*args)
    np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    finite = ~np.isinf(a)
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-9, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(clusters(), requests, mixes)
def test_frag_pick_numba_equals_numpy_and_fits(cluster, request, mix):
    nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v = cluster
    node = int(nodes[0]) if nodes[0] >= 0 else 0
    args = (node, node_gpus, eligible, cap_t, cap_v, used_t, used_v, *request, *mix_arrays(mix), 0.3, 0.7)
    a, b = frag_pick_numba(*args), frag_pick_numpy(*args)
    np.testing.assert_array_equal(a, b)
    req_t, req_pct, req_v, count = request
    verdict, _ = fit_nodes_numba(
        np.array([node], np.int32), node_gpus, eligible, cap_t, cap_v, used_t, used_v, req_t, req_pct, req_v, count
    )
    # It picks exactly when the pod fits (the same rule as the fit kernel), distinct eligible GPUs.
    assert (a.size == count) == (verdict[0] == FIT_OK)
    assert len(set(a.tolist())) == a.size and all(eligible[g] for g in a)


def _two_gpus(used: list[float]):
    """One node, one GPU per entry, 1000 TFLOPS and 1000 VRAM each, ``used`` of each taken."""
    k = len(used)
    node_gpus = np.arange(k, dtype=np.int32).reshape(1, k)
    cap = np.full(k, 1000.0)
    u = np.array(used, np.float64)
    return node_gpus, np.ones(k, np.bool_), cap, cap.copy(), u, u.copy()


def _mix(*types):
    """(share of a GPU, count, popularity) per type."""
    t = np.array([s * 1000 for s, _, _ in types])
    return (
        t,
        np.zeros(len(types)),
        t.copy(),
        np.array([c for _, c, _ in types], np.int64),
        np.array([p for _, _, p in types]) / sum(p for _, _, p in types),
    )


def test_a_share_fills_the_partly_used_gpu_keeping_the_whole_one_whole():
    node_gpus, eligible, cap_t, cap_v, used_t, used_v = _two_gpus([500, 0])
    mix = _mix((1.0, 1, 1), (0.5, 1, 1))  # whole GPUs and halves are asked
    picked = frag_pick_numba(0, node_gpus, eligible, cap_t, cap_v, used_t, used_v, 500.0, 0.0, 500.0, 1, *mix, 0.5, 0.5)
    assert picked.tolist() == [0]


def test_a_share_that_would_strand_room_goes_where_it_strands_none():
    # GPU 0 has 0.6 free, GPU 1 has 0.3 free; the mix asks 0.3-GPU and 0.6-GPU pods.
    # A 0.3 pod on GPU 0 leaves 0.3 (still usable); on GPU 1 it leaves 0 and GPU 0 keeps 0.6: both fine,
    # but with only 0.6-pods asked, putting it on GPU 0 strands 0.3 + 0.3: it goes to GPU 1.
    node_gpus, eligible, cap_t, cap_v, used_t, used_v = _two_gpus([400, 700])
    mix = _mix((0.6, 1, 1))
    picked = frag_pick_numba(0, node_gpus, eligible, cap_t, cap_v, used_t, used_v, 300.0, 0.0, 300.0, 1, *mix, 0.5, 0.5)
    assert picked.tolist() == [1]
    scores = frag_scores_numba(
        np.array([0], np.int32), node_gpus, eligible, cap_t, cap_v, used_t, used_v, 300.0, 0.0, 300.0, 1, *mix, 0.5, 0.5
    )
    # Before: GPU 1's 0.3 is a fragment for 0.6-pods; after: none is (GPU 0 keeps its 0.6).
    np.testing.assert_allclose(scores, [-0.3])


def test_a_node_that_cannot_fit_scores_inf():
    node_gpus, eligible, cap_t, cap_v, used_t, used_v = _two_gpus([900, 900])
    mix = _mix((0.5, 1, 1))
    scores = frag_scores_numba(
        np.array([0, -1], np.int32),
        node_gpus,
        eligible,
        cap_t,
        cap_v,
        used_t,
        used_v,
        500.0,
        0.0,
        500.0,
        1,
        *mix,
        0.5,
        0.5,
    )
    assert np.isinf(scores).all()
