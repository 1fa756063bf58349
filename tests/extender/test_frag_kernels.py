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
    node_free_share_numba,
    node_free_share_numpy,
    request_share_numba,
    request_share_numpy,
)
from tfsched.scoring.modes import FIT_OK

from .test_kernels import clusters, requests

mixes = st.lists(
    st.tuples(
        st.sampled_from([0.0, 500.0, 20000.0, 150000.0]),
        st.sampled_from([0.0, 0.0, 0.5]),
        st.sampled_from([0.0, 2.0**29, 10 * 2.0**30]),
        st.integers(1, 3),
        st.sampled_from([0.0, 4000.0, 32000.0]),
        st.sampled_from([0.0, 2.0**34]),
        st.floats(0.01, 1),
    ),
    min_size=1,
    max_size=6,
)
pod_cpu_mem = st.tuples(st.sampled_from([0.0, 2000.0, 64000.0]), st.sampled_from([0.0, 2.0**33]))


def mix_arrays(mix):
    t, pct, v, count, cpu, mem, weight = (np.array(col) for col in zip(*mix, strict=True))
    as_float = (x.astype(np.float64) for x in (t, pct, v))
    return (*as_float, count.astype(np.int64), cpu.astype(np.float64), mem.astype(np.float64), weight / weight.sum())


@st.composite
def node_free(draw, cluster):
    n_nodes = cluster[1].shape[0]
    cpu = np.array([draw(st.sampled_from([0.0, 3000.0, 40000.0, np.inf])) for _ in range(n_nodes)])
    mem = np.array([draw(st.sampled_from([0.0, 2.0**32, 2.0**36, np.inf])) for _ in range(n_nodes)])
    return cpu, mem


def _args(cluster, free, request, cpu_mem, mix, w_t=0.3):
    _, node_gpus, eligible, cap_t, cap_v, used_t, used_v = cluster
    return (
        node_gpus,
        eligible,
        cap_t,
        cap_v,
        used_t,
        used_v,
        *free,
        *request,
        *cpu_mem,
        *mix_arrays(mix),
        w_t,
        1 - w_t,
    )


@settings(max_examples=300, deadline=None)
@given(st.data(), clusters(), requests, pod_cpu_mem, mixes, st.floats(0, 1))
def test_frag_scores_numba_equals_numpy(data, cluster, request, cpu_mem, mix, w_t):
    free = data.draw(node_free(cluster))
    args = (cluster[0], *_args(cluster, free, request, cpu_mem, mix, w_t))
    a, b = frag_scores_numba(*args), frag_scores_numpy(*args)
    np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    finite = ~np.isinf(a)
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-9, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(st.data(), clusters(), requests, pod_cpu_mem, mixes)
def test_frag_pick_numba_equals_numpy_and_fits(data, cluster, request, cpu_mem, mix):
    free = data.draw(node_free(cluster))
    nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v = cluster
    node = int(nodes[0]) if nodes[0] >= 0 else 0
    args = (node, *_args(cluster, free, request, cpu_mem, mix))
    a, b = frag_pick_numba(*args), frag_pick_numpy(*args)
    np.testing.assert_array_equal(a, b)
    req_t, req_pct, req_v, count = request
    verdict, *_ = fit_nodes_numba(
        np.array([node], np.int32), node_gpus, eligible, cap_t, cap_v, used_t, used_v, req_t, req_pct, req_v, count
    )
    # It picks exactly when the pod fits (the fit kernel's rule, and the node's CPU and memory).
    room = free[0][node] >= cpu_mem[0] and free[1][node] >= cpu_mem[1]
    assert (a.size == count) == (verdict[0] == FIT_OK and room)
    assert len(set(a.tolist())) == a.size and all(eligible[g] for g in a)


def _node(used: list[float], cpu: float = np.inf, mem: float = np.inf):
    """One node, a GPU per entry (1000 TFLOPS and 1000 VRAM each, ``used`` of each taken)."""
    k = len(used)
    node_gpus = np.arange(k, dtype=np.int32).reshape(1, k)
    cap = np.full(k, 1000.0)
    u = np.array(used, np.float64)
    return node_gpus, np.ones(k, np.bool_), cap, cap.copy(), u, u.copy(), np.array([cpu]), np.array([mem])


def _mix(*types):
    """(share of a GPU, count, CPU, popularity) per type."""
    t = np.array([s * 1000 for s, *_ in types])
    weights = np.array([p for *_, p in types], np.float64)
    count = np.array([c for _, c, _, _ in types], np.int64)
    cpu = np.array([c for _, _, c, _ in types], np.float64)
    return t, np.zeros(len(types)), t.copy(), count, cpu, np.zeros(len(types)), weights / weights.sum()


def _pick(node, share, count=1, cpu=0.0, mix=()):
    return frag_pick_numba(0, *node, share * 1000, 0.0, share * 1000, count, cpu, 0.0, *mix, 0.5, 0.5).tolist()


def _rise(node, share, count=1, cpu=0.0, mix=()):
    nodes = np.array([0], np.int32)
    return frag_scores_numba(nodes, *node, share * 1000, 0.0, share * 1000, count, cpu, 0.0, *mix, 0.5, 0.5)[0]


def test_a_share_fills_the_partly_used_gpu_keeping_the_whole_one_whole():
    assert _pick(_node([500, 0]), 0.5, mix=_mix((1.0, 1, 0, 1), (0.5, 1, 0, 1))) == [0]


def test_a_share_goes_where_it_strands_no_room():
    # GPU 0 has 0.6 free, GPU 1 has 0.3; only 0.6-GPU pods are asked. On GPU 0 it would strand
    # 0.3 + 0.3; on GPU 1 it fills the fragment and GPU 0 keeps its 0.6.
    node = _node([400, 700])
    mix = _mix((0.6, 1, 0, 1))
    assert _pick(node, 0.3, mix=mix) == [1]
    np.testing.assert_allclose(_rise(node, 0.3, mix=mix), -0.3)


def test_a_node_without_the_cpu_strands_all_its_gpus():
    # 8 CPUs free; GPU pods ask 16: every free GPU there is a fragment for them.
    mix = _mix((1.0, 1, 16000.0, 1))
    # A small pod there uses stranded room: fragmentation falls by its share.
    np.testing.assert_allclose(_rise(_node([0, 0], cpu=8000.0), 0.5, cpu=1000.0, mix=mix), -0.5)
    # 20 CPUs free: a CPU-only pod taking 6 leaves 14 < 16, and strands both GPUs (2 GPUs of room).
    np.testing.assert_allclose(_rise(_node([0, 0], cpu=20000.0), 0.0, count=0, cpu=6000.0, mix=mix), 2.0)
    # ... taking 4 leaves 16: nothing stranded.
    np.testing.assert_allclose(_rise(_node([0, 0], cpu=20000.0), 0.0, count=0, cpu=4000.0, mix=mix), 0.0)


def test_a_node_that_cannot_fit_scores_inf():
    mix = _mix((0.5, 1, 0, 1))
    assert np.isinf(_rise(_node([900, 900]), 0.5, mix=mix))
    assert np.isinf(_rise(_node([0, 0], cpu=1000.0), 0.5, cpu=2000.0, mix=mix))


@settings(max_examples=300, deadline=None)
@given(clusters(), requests, st.floats(0, 1))
def test_node_shares_numba_equal_numpy(cluster, request, w_t):
    """The per-node free share and request share the mode's tie-break ranks by."""
    nodes, node_gpus, usable, cap_t, cap_v, used_t, used_v = cluster
    for numba_kernel, numpy_kernel, args in (
        (node_free_share_numba, node_free_share_numpy, (used_t, used_v)),
        (request_share_numba, request_share_numpy, request),
    ):
        full = (nodes, node_gpus, usable, cap_t, cap_v, *args, w_t, 1 - w_t)
        a, b = numba_kernel(*full), numpy_kernel(*full)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
        assert (a[nodes < 0] == 0).all() and (a >= 0).all()
