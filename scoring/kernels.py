"""Fit, score and pick kernels over the GPU inventory arrays.

Each kernel exists twice: compiled with numba (``*_numba``, used in serving)
and written with plain numpy (``*_numpy``, the readable reference).  Tests
cross-check the two on random clusters.  Units are integers held in float64:
TFLOPS in milli-TFLOPS and VRAM in bytes, so sums and differences are exact
and a GPU is never over- or under-committed by rounding drift.

Inputs shared by the kernels:
- ``nodes``: int32 node indices to evaluate (-1 for a node the inventory lacks)
- ``node_gpus``: int32 [nodes × slots] GPU indices per node, -1 padded, left-justified
- ``eligible``: bool per GPU, usable and matching the pod's model/vendor/pool/indices
- ``cap_t``, ``cap_v``, ``used_t``, ``used_v``: float64 per GPU
- ``req_t``, ``req_pct``, ``req_v``: the per-GPU request; TFLOPS needed on GPU g
  is ``req_t + req_pct * cap_t[g]`` (one of the two is zero), rounded up to a
  whole milli-TFLOPS
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tfsched.scoring.modes import (
    FIT_NO_BOTH,
    FIT_NO_ELIGIBLE_GPU,
    FIT_NO_TFLOPS,
    FIT_NO_VRAM,
    FIT_OK,
    FIT_TOO_FEW_GPUS,
)

_FIT_OK = int(FIT_OK)
_FIT_NO_ELIGIBLE = int(FIT_NO_ELIGIBLE_GPU)
_FIT_TOO_FEW = int(FIT_TOO_FEW_GPUS)
_FIT_NO_TFLOPS = int(FIT_NO_TFLOPS)
_FIT_NO_VRAM = int(FIT_NO_VRAM)
_FIT_NO_BOTH = int(FIT_NO_BOTH)


@njit(cache=True, inline="always")
def _need_tflops(req_t: float, req_pct: float, cap: float) -> float:
    return req_t + np.ceil(req_pct * cap - 1e-9)


@njit(cache=True)
def _verdict(eligible: int, t_ok: int, v_ok: int, both: int, count: int) -> int:
    if eligible == 0:
        return _FIT_NO_ELIGIBLE
    if eligible < count:
        return _FIT_TOO_FEW
    if both >= count:
        return _FIT_OK
    if v_ok >= count:
        return _FIT_NO_TFLOPS
    if t_ok >= count:
        return _FIT_NO_VRAM
    return _FIT_NO_BOTH


@njit(cache=True)
def fit_nodes_numba(nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v, req_t, req_pct, req_v, count):
    """Per node: verdict (FIT_*), counts of eligible GPUs, of those with
    enough TFLOPS, enough VRAM, both, and of those whose capacity could ever hold
    the request (were they empty), and the largest free share among the
    eligible GPUs short of each resource (free TFLOPS, free TFLOPS over capacity,
    free VRAM; 0 when none is short or nothing is free), for the reason's
    "largest free"."""
    k = nodes.shape[0]
    verdict = np.empty(k, np.int8)
    counts = np.zeros((k, 5), np.int32)
    largest = np.zeros((k, 3), np.float64)
    slots = node_gpus.shape[1]
    for i in range(k):
        n = nodes[i]
        n_eligible = 0
        n_t = 0
        n_v = 0
        n_both = 0
        n_capable = 0
        free_t_max = 0.0
        share_t_max = 0.0
        free_v_max = 0.0
        if n >= 0:
            for s in range(slots):
                g = node_gpus[n, s]
                if g < 0:
                    break
                if not eligible[g]:
                    continue
                n_eligible += 1
                free_t = cap_t[g] - used_t[g]
                free_v = cap_v[g] - used_v[g]
                need_t = _need_tflops(req_t, req_pct, cap_t[g])
                t_ok = free_t >= need_t
                v_ok = free_v >= req_v
                if cap_t[g] >= need_t and cap_v[g] >= req_v:
                    n_capable += 1
                if t_ok:
                    n_t += 1
                else:
                    free_t_max = max(free_t_max, free_t)
                    if cap_t[g] > 0:
                        share_t_max = max(share_t_max, free_t / cap_t[g])
                if v_ok:
                    n_v += 1
                else:
                    free_v_max = max(free_v_max, free_v)
                if t_ok and v_ok:
                    n_both += 1
        counts[i, 0] = n_eligible
        counts[i, 1] = n_t
        counts[i, 2] = n_v
        counts[i, 3] = n_both
        counts[i, 4] = n_capable
        largest[i, 0] = free_t_max
        largest[i, 1] = share_t_max
        largest[i, 2] = free_v_max
        verdict[i] = _verdict(n_eligible, n_t, n_v, n_both, count)
    return verdict, counts, largest


@njit(cache=True)
def score_nodes_numba(nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v, w_t, w_v, compact):
    """Per node, 0–100: the mean over its eligible GPUs of the weighted used
    share (compact) or free share (low load).  A node without eligible GPUs
    scores 0."""
    k = nodes.shape[0]
    out = np.zeros(k, np.float64)
    slots = node_gpus.shape[1]
    for i in range(k):
        n = nodes[i]
        if n < 0:
            continue
        total = 0.0
        m = 0
        for s in range(slots):
            g = node_gpus[n, s]
            if g < 0:
                break
            if not eligible[g]:
                continue
            share = 0.0
            if cap_v[g] > 0:
                share += w_v * used_v[g] / cap_v[g]
            if cap_t[g] > 0:
                share += w_t * used_t[g] / cap_t[g]
            total += share
            m += 1
        if m > 0:
            mean = total / m
            out[i] = 100.0 * mean if compact else 100.0 * (1.0 - mean)
    return out


@njit(cache=True)
def pick_gpus_numba(
    node, node_gpus, eligible, cap_t, cap_v, used_t, used_v, req_t, req_pct, req_v, count, w_t, w_v, compact
):
    """The ``count`` GPUs of ``node`` to allocate: among those with room,
    fullest first (compact) or emptiest first, ties by inventory order.
    Returns an empty array when fewer than ``count`` fit."""
    slots = node_gpus.shape[1]
    cand = np.empty(slots, np.int32)
    key = np.empty(slots, np.float64)
    m = 0
    for s in range(slots):
        g = node_gpus[node, s]
        if g < 0:
            break
        if not eligible[g]:
            continue
        if cap_t[g] - used_t[g] < _need_tflops(req_t, req_pct, cap_t[g]):
            continue
        if cap_v[g] - used_v[g] < req_v:
            continue
        share = 0.0
        if cap_v[g] > 0:
            share += w_v * used_v[g] / cap_v[g]
        if cap_t[g] > 0:
            share += w_t * used_t[g] / cap_t[g]
        cand[m] = g
        key[m] = -share if compact else share
        m += 1
    if m < count:
        return np.empty(0, np.int32)
    order = np.argsort(key[:m], kind="mergesort")
    return cand[:m][order[:count]].copy()


# -- fragmentation (FGD, Weng et al., USENIX ATC '23, in two dimensions) --------------
#
# A workload mix is what the cluster is likely to be asked next: request types
# (per-GPU TFLOPS absolute ``mix_t`` or a share ``mix_pct`` of the GPU, VRAM
# ``mix_v``, GPU count ``mix_count``, the pod's CPU ``mix_cpu`` and memory
# ``mix_mem``) and their popularity ``mix_p`` (sums to 1). A GPU's free room
# counts in one measure, its weighted free share w_t·free_t/cap_t +
# w_v·free_v/cap_v (0–1 of a GPU). For one type, a node's fragmentation is the
# free room it cannot use: all of it when the node lacks the type's CPU or
# memory or fewer than ``count`` of its GPUs fit the type, else that of the GPUs
# the type does not fit on. The expected fragmentation is the popularity-weighted
# sum over types. A placement is scored by how much it *raises* the expected
# fragmentation of its node (lower is better). ``free_cpu``/``free_mem`` are per
# node index; a pod with ``count`` 0 (no GPU) only takes CPU and memory.


@njit(cache=True, inline="always")
def _gpu_free(g, ut_j, uv_j, cap_t, cap_v, w_t, w_v):
    free = 0.0
    if cap_t[g] > 0:
        free += w_t * (cap_t[g] - ut_j) / cap_t[g]
    if cap_v[g] > 0:
        free += w_v * (cap_v[g] - uv_j) / cap_v[g]
    return free


@njit(cache=True, inline="always")
def _fits_type(g, ut_j, uv_j, cap_t, cap_v, t, pct, v):
    return cap_t[g] - ut_j >= _need_tflops(t, pct, cap_t[g]) and cap_v[g] - uv_j >= v


@njit(cache=True)
def _frag_total(n_fit, unfit, free_all, fc, fm, mix_count, mix_cpu, mix_mem, mix_p):
    """Expected fragmentation from per-type counts of fitting GPUs and their unfit room."""
    total = 0.0
    for k in range(mix_p.shape[0]):
        usable = n_fit[k] >= mix_count[k] and fc >= mix_cpu[k] and fm >= mix_mem[k]
        total += mix_p[k] * (unfit[k] if usable else free_all)
    return total


@njit(cache=True)
def _frag_pick(
    n,
    node_gpus,
    eligible,
    cap_t,
    cap_v,
    used_t,
    used_v,
    free_cpu,
    free_mem,
    req_t,
    req_pct,
    req_v,
    count,
    req_cpu,
    req_mem,
    mix_t,
    mix_pct,
    mix_v,
    mix_count,
    mix_cpu,
    mix_mem,
    mix_p,
    w_t,
    w_v,
    picked,
):
    """Greedy: ``count`` times, the GPU whose share raises the node's expected
    fragmentation least (ties: fullest, then inventory order). Fills ``picked``;
    returns (GPUs picked, rise in expected fragmentation); (-1, inf) when the
    node lacks the pod's CPU or memory. Per type it keeps how many GPUs fit and
    the room of those that do not, so a candidate costs one pass over the types."""
    slots = node_gpus.shape[1]
    n_types = mix_p.shape[0]
    gpus = np.empty(slots, np.int32)
    ut = np.empty(slots, np.float64)
    uv = np.empty(slots, np.float64)
    free = np.empty(slots, np.float64)
    fits = np.zeros((n_types, slots), np.bool_)
    taken = np.zeros(slots, np.bool_)
    n_fit = np.zeros(n_types, np.int64)
    unfit = np.zeros(n_types, np.float64)
    m = 0
    free_all = 0.0
    for s in range(slots):
        g = node_gpus[n, s]
        if g < 0:
            break
        gpus[m] = g
        ut[m] = used_t[g]
        uv[m] = used_v[g]
        free[m] = _gpu_free(g, ut[m], uv[m], cap_t, cap_v, w_t, w_v)
        free_all += free[m]
        for k in range(n_types):
            if _fits_type(g, ut[m], uv[m], cap_t, cap_v, mix_t[k], mix_pct[k], mix_v[k]):
                fits[k, m] = True
                n_fit[k] += 1
            else:
                unfit[k] += free[m]
        m += 1
    fc = free_cpu[n]
    fm = free_mem[n]
    before = _frag_total(n_fit, unfit, free_all, fc, fm, mix_count, mix_cpu, mix_mem, mix_p)
    fc -= req_cpu
    fm -= req_mem
    if fc < 0 or fm < 0:
        return -1, np.inf
    current = _frag_total(n_fit, unfit, free_all, fc, fm, mix_count, mix_cpu, mix_mem, mix_p)
    n_fit_j = np.empty(n_types, np.int64)
    unfit_j = np.empty(n_types, np.float64)
    for c in range(count):
        best = -1
        best_frag = np.inf
        best_free = np.inf
        for j in range(m):
            g = gpus[j]
            if taken[j] or not eligible[g]:
                continue
            need_t = _need_tflops(req_t, req_pct, cap_t[g])
            if cap_t[g] - ut[j] < need_t or cap_v[g] - uv[j] < req_v:
                continue
            after = _gpu_free(g, ut[j] + need_t, uv[j] + req_v, cap_t, cap_v, w_t, w_v)
            for k in range(n_types):
                now = _fits_type(g, ut[j] + need_t, uv[j] + req_v, cap_t, cap_v, mix_t[k], mix_pct[k], mix_v[k])
                n_fit_j[k] = n_fit[k] - fits[k, j] + now
                unfit_j[k] = unfit[k] - (0.0 if fits[k, j] else free[j]) + (0.0 if now else after)
            frag = _frag_total(n_fit_j, unfit_j, free_all - free[j] + after, fc, fm, mix_count, mix_cpu, mix_mem, mix_p)
            if frag < best_frag - 1e-12 or (abs(frag - best_frag) <= 1e-12 and after < best_free - 1e-12):
                best, best_frag, best_free = j, frag, after
        if best < 0:
            return c, np.inf
        g = gpus[best]
        ut[best] += _need_tflops(req_t, req_pct, cap_t[g])
        uv[best] += req_v
        after = _gpu_free(g, ut[best], uv[best], cap_t, cap_v, w_t, w_v)
        for k in range(n_types):
            now = _fits_type(g, ut[best], uv[best], cap_t, cap_v, mix_t[k], mix_pct[k], mix_v[k])
            n_fit[k] += now - fits[k, best]
            unfit[k] += (0.0 if now else after) - (0.0 if fits[k, best] else free[best])
            fits[k, best] = now
        free_all += after - free[best]
        free[best] = after
        taken[best] = True
        picked[c] = g
        current = best_frag
    return count, current - before


@njit(cache=True)
def frag_scores_numba(
    nodes,
    node_gpus,
    eligible,
    cap_t,
    cap_v,
    used_t,
    used_v,
    free_cpu,
    free_mem,
    req_t,
    req_pct,
    req_v,
    count,
    req_cpu,
    req_mem,
    mix_t,
    mix_pct,
    mix_v,
    mix_count,
    mix_cpu,
    mix_mem,
    mix_p,
    w_t,
    w_v,
):
    """Per node: the rise in expected fragmentation if the pod went there
    (GPUs picked as :func:`frag_pick_numba` would), +inf where it does not fit."""
    k = nodes.shape[0]
    out = np.full(k, np.inf)
    picked = np.empty(max(count, 1), np.int32)
    for i in range(k):
        n = nodes[i]
        if n < 0:
            continue
        got, rise = _frag_pick(
            n,
            node_gpus,
            eligible,
            cap_t,
            cap_v,
            used_t,
            used_v,
            free_cpu,
            free_mem,
            req_t,
            req_pct,
            req_v,
            count,
            req_cpu,
            req_mem,
            mix_t,
            mix_pct,
            mix_v,
            mix_count,
            mix_cpu,
            mix_mem,
            mix_p,
            w_t,
            w_v,
            picked,
        )
        if got == count:
            out[i] = rise
    return out


@njit(cache=True)
def frag_pick_numba(
    node,
    node_gpus,
    eligible,
    cap_t,
    cap_v,
    used_t,
    used_v,
    free_cpu,
    free_mem,
    req_t,
    req_pct,
    req_v,
    count,
    req_cpu,
    req_mem,
    mix_t,
    mix_pct,
    mix_v,
    mix_count,
    mix_cpu,
    mix_mem,
    mix_p,
    w_t,
    w_v,
):
    """The ``count`` GPUs of ``node`` whose shares raise its expected
    fragmentation least; empty when fewer than ``count`` fit."""
    picked = np.empty(max(count, 1), np.int32)
    got, _ = _frag_pick(
        node,
        node_gpus,
        eligible,
        cap_t,
        cap_v,
        used_t,
        used_v,
        free_cpu,
        free_mem,
        req_t,
        req_pct,
        req_v,
        count,
        req_cpu,
        req_mem,
        mix_t,
        mix_pct,
        mix_v,
        mix_count,
        mix_cpu,
        mix_mem,
        mix_p,
        w_t,
        w_v,
        picked,
    )
    if got < count:
        return np.empty(0, np.int32)
    return picked[:count].copy()


@njit(cache=True)
def node_free_share_numba(nodes, node_gpus, usable, cap_t, cap_v, used_t, used_v, w_t, w_v):
    """Per node of ``nodes``: the free share of its usable GPUs, each GPU weighed
    ``w_t`` TFLOPS and ``w_v`` VRAM (a free GPU counts 1); 0 for -1."""
    out = np.zeros(nodes.shape[0])
    for i in range(nodes.shape[0]):
        n = nodes[i]
        if n < 0:
            continue
        free = 0.0
        for s in range(node_gpus.shape[1]):
            g = node_gpus[n, s]
            if g < 0:
                break
            if usable[g]:
                # _gpu_free's arithmetic, written out: calling it here ran 4x slower (0.49 against
                # 0.12 ms at 5,000 nodes x 8 GPUs); the twin below does use _free_share_numpy.
                if cap_t[g] > 0:
                    free += w_t * (cap_t[g] - used_t[g]) / cap_t[g]
                if cap_v[g] > 0:
                    free += w_v * (cap_v[g] - used_v[g]) / cap_v[g]
        out[i] = free
    return out


@njit(cache=True)
def request_share_numba(nodes, node_gpus, usable, cap_t, cap_v, req_t, req_pct, req_v, count, w_t, w_v):
    """Per node of ``nodes``: the GPU shares a request takes there, its share of a
    GPU averaged over the node's usable GPUs (weighed as in
    :func:`node_free_share_numba`, at most 1 per GPU) times ``count``; 0 without any."""
    out = np.zeros(nodes.shape[0])
    for i in range(nodes.shape[0]):
        n = nodes[i]
        if n < 0:
            continue
        total = 0.0
        k = 0
        for s in range(node_gpus.shape[1]):
            g = node_gpus[n, s]
            if g < 0:
                break
            if not usable[g]:
                continue
            share = 0.0
            if cap_t[g] > 0:
                share += w_t * min((req_t + req_pct * cap_t[g]) / cap_t[g], 1.0)
            if cap_v[g] > 0:
                share += w_v * min(req_v / cap_v[g], 1.0)
            total += share
            k += 1
        if k:
            out[i] = count * total / k
    return out


def _need_tflops_numpy(req_t: float, req_pct: float, cap: np.ndarray) -> np.ndarray:
    return req_t + np.ceil(req_pct * cap - 1e-9)


def fit_nodes_numpy(nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v, req_t, req_pct, req_v, count):
    """numpy twin of :func:`fit_nodes_numba`."""
    known = nodes >= 0
    gpus = node_gpus[np.where(known, nodes, 0)]  # [k × slots]
    present = (gpus >= 0) & known[:, None]
    g = np.where(present, gpus, 0)
    elig = present & eligible[g]
    free_t = cap_t[g] - used_t[g]
    free_v = cap_v[g] - used_v[g]
    need_t = _need_tflops_numpy(req_t, req_pct, cap_t[g])
    t_ok = elig & (free_t >= need_t)
    v_ok = elig & (free_v >= req_v)
    capable = elig & (cap_t[g] >= need_t) & (cap_v[g] >= req_v)
    counts = np.stack([elig.sum(1), t_ok.sum(1), v_ok.sum(1), (t_ok & v_ok).sum(1), capable.sum(1)], axis=1).astype(
        np.int32
    )
    short_t = elig & ~t_ok
    with np.errstate(divide="ignore", invalid="ignore"):
        share_t = np.where(short_t & (cap_t[g] > 0), free_t / cap_t[g], 0.0)
    largest = np.stack(
        [
            np.where(short_t, free_t, 0.0).max(1, initial=0.0),
            share_t.max(1, initial=0.0),
            np.where(elig & ~v_ok, free_v, 0.0).max(1, initial=0.0),
        ],
        axis=1,
    ).astype(np.float64)
    n_e, n_t, n_v, n_b, _ = counts.T
    verdict = np.select(
        [n_e == 0, n_e < count, n_b >= count, n_v >= count, n_t >= count],
        [FIT_NO_ELIGIBLE_GPU, FIT_TOO_FEW_GPUS, FIT_OK, FIT_NO_TFLOPS, FIT_NO_VRAM],
        default=FIT_NO_BOTH,
    ).astype(np.int8)
    return verdict, counts, largest


def _used_share_numpy(g, cap_t, cap_v, used_t, used_v, w_t, w_v):
    with np.errstate(divide="ignore", invalid="ignore"):
        share_v = np.where(cap_v[g] > 0, w_v * used_v[g] / cap_v[g], 0.0)
        share_t = np.where(cap_t[g] > 0, w_t * used_t[g] / cap_t[g], 0.0)
    return share_v + share_t


def score_nodes_numpy(nodes, node_gpus, eligible, cap_t, cap_v, used_t, used_v, w_t, w_v, compact):
    """numpy twin of :func:`score_nodes_numba`."""
    known = nodes >= 0
    gpus = node_gpus[np.where(known, nodes, 0)]
    present = (gpus >= 0) & known[:, None]
    g = np.where(present, gpus, 0)
    elig = present & eligible[g]
    share = np.where(elig, _used_share_numpy(g, cap_t, cap_v, used_t, used_v, w_t, w_v), 0.0)
    m = elig.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(m > 0, share.sum(1) / np.maximum(m, 1), 0.0)
    score = 100.0 * mean if compact else 100.0 * (1.0 - mean)
    return np.where(m > 0, score, 0.0)


def pick_gpus_numpy(
    node, node_gpus, eligible, cap_t, cap_v, used_t, used_v, req_t, req_pct, req_v, count, w_t, w_v, compact
):
    """numpy twin of :func:`pick_gpus_numba`."""
    row = node_gpus[node]
    g = row[row >= 0]
    fits = (
        eligible[g]
        & (cap_t[g] - used_t[g] >= _need_tflops_numpy(req_t, req_pct, cap_t[g]))
        & (cap_v[g] - used_v[g] >= req_v)
    )
    cand = g[fits].astype(np.int32)
    if cand.size < count:
        return np.empty(0, np.int32)
    share = _used_share_numpy(cand, cap_t, cap_v, used_t, used_v, w_t, w_v)
    order = np.argsort(-share if compact else share, kind="mergesort")
    return cand[order[:count]]


def _free_share_numpy(g, ut, uv, cap_t, cap_v, w_t, w_v) -> np.ndarray:
    """Weighted free share of GPUs ``g`` with used TFLOPS/VRAM ``ut``/``uv``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        free = np.where(cap_t[g] > 0, w_t * (cap_t[g] - ut) / cap_t[g], 0.0)
        return free + np.where(cap_v[g] > 0, w_v * (cap_v[g] - uv) / cap_v[g], 0.0)


def _node_frag_numpy(g, ut, uv, fc, fm, cap_t, cap_v, mix, w_t, w_v) -> float:
    mix_t, mix_pct, mix_v, mix_count, mix_cpu, mix_mem, mix_p = mix
    free = _free_share_numpy(g, ut, uv, cap_t, cap_v, w_t, w_v)
    need_t = _need_tflops_numpy(mix_t[:, None], mix_pct[:, None], cap_t[g][None, :])  # [types × GPUs]
    fit = ((cap_t[g] - ut)[None, :] >= need_t) & ((cap_v[g] - uv)[None, :] >= mix_v[:, None])
    unfit = (free[None, :] * ~fit).sum(axis=1)
    usable = (fit.sum(axis=1) >= mix_count) & (fc >= mix_cpu) & (fm >= mix_mem)
    frag = np.where(usable, unfit, free.sum())
    return float((mix_p * frag).sum())


def _frag_pick_numpy(
    node, node_gpus, eligible, cap_t, cap_v, used_t, used_v, free_cpu, free_mem, request, mix, w_t, w_v
):
    req_t, req_pct, req_v, count, req_cpu, req_mem = request
    row = node_gpus[node]
    g = row[row >= 0]
    ut, uv = used_t[g].copy(), used_v[g].copy()
    fc, fm = free_cpu[node], free_mem[node]
    before = _node_frag_numpy(g, ut, uv, fc, fm, cap_t, cap_v, mix, w_t, w_v)
    fc, fm = fc - req_cpu, fm - req_mem
    if fc < 0 or fm < 0:
        return np.empty(0, np.int32), np.inf
    current = _node_frag_numpy(g, ut, uv, fc, fm, cap_t, cap_v, mix, w_t, w_v)
    picked: list[int] = []
    for _ in range(count):
        best, best_frag, best_free = -1, np.inf, np.inf
        for j in range(g.size):
            need_t = _need_tflops_numpy(req_t, req_pct, cap_t[g[j]])
            if g[j] in picked or not eligible[g[j]] or cap_t[g[j]] - ut[j] < need_t or cap_v[g[j]] - uv[j] < req_v:
                continue
            ut[j] += need_t
            uv[j] += req_v
            frag = _node_frag_numpy(g, ut, uv, fc, fm, cap_t, cap_v, mix, w_t, w_v)
            free = float(_free_share_numpy(g[j : j + 1], ut[j : j + 1], uv[j : j + 1], cap_t, cap_v, w_t, w_v)[0])
            ut[j] -= need_t
            uv[j] -= req_v
            if frag < best_frag - 1e-12 or (abs(frag - best_frag) <= 1e-12 and free < best_free - 1e-12):
                best, best_frag, best_free = j, frag, free
        if best < 0:
            return np.empty(0, np.int32), np.inf
        ut[best] += _need_tflops_numpy(req_t, req_pct, cap_t[g[best]])
        uv[best] += req_v
        picked.append(int(g[best]))
        current = best_frag
    return np.array(picked, np.int32), current - before


def frag_scores_numpy(
    nodes,
    node_gpus,
    eligible,
    cap_t,
    cap_v,
    used_t,
    used_v,
    free_cpu,
    free_mem,
    req_t,
    req_pct,
    req_v,
    count,
    req_cpu,
    req_mem,
    mix_t,
    mix_pct,
    mix_v,
    mix_count,
    mix_cpu,
    mix_mem,
    mix_p,
    w_t,
    w_v,
):
    """numpy twin of :func:`frag_scores_numba`."""
    mix = (mix_t, mix_pct, mix_v, mix_count, mix_cpu, mix_mem, mix_p)
    request = (req_t, req_pct, req_v, count, req_cpu, req_mem)
    cluster = (node_gpus, eligible, cap_t, cap_v, used_t, used_v, free_cpu, free_mem)
    out = np.full(nodes.shape[0], np.inf)
    for i, n in enumerate(nodes.tolist()):
        if n >= 0:
            picked, rise = _frag_pick_numpy(n, *cluster, request, mix, w_t, w_v)
            if picked.size == count and np.isfinite(rise):
                out[i] = rise
    return out


def frag_pick_numpy(
    node,
    node_gpus,
    eligible,
    cap_t,
    cap_v,
    used_t,
    used_v,
    free_cpu,
    free_mem,
    req_t,
    req_pct,
    req_v,
    count,
    req_cpu,
    req_mem,
    mix_t,
    mix_pct,
    mix_v,
    mix_count,
    mix_cpu,
    mix_mem,
    mix_p,
    w_t,
    w_v,
):
    """numpy twin of :func:`frag_pick_numba`."""
    mix = (mix_t, mix_pct, mix_v, mix_count, mix_cpu, mix_mem, mix_p)
    request = (req_t, req_pct, req_v, count, req_cpu, req_mem)
    cluster = (node_gpus, eligible, cap_t, cap_v, used_t, used_v, free_cpu, free_mem)
    return _frag_pick_numpy(node, *cluster, request, mix, w_t, w_v)[0]


def _gathered(nodes, node_gpus, usable):
    known = nodes >= 0
    rows = node_gpus[np.where(known, nodes, 0)]
    g = np.where(rows >= 0, rows, 0)
    return g, (rows >= 0) & usable[g] & known[:, None]


def node_free_share_numpy(nodes, node_gpus, usable, cap_t, cap_v, used_t, used_v, w_t, w_v):
    """numpy twin of :func:`node_free_share_numba`."""
    g, on = _gathered(nodes, node_gpus, usable)
    free = _free_share_numpy(g, used_t[g], used_v[g], cap_t, cap_v, w_t, w_v)
    return np.where(on, free, 0.0).sum(axis=1)


def request_share_numpy(nodes, node_gpus, usable, cap_t, cap_v, req_t, req_pct, req_v, count, w_t, w_v):
    """numpy twin of :func:`request_share_numba`."""
    g, on = _gathered(nodes, node_gpus, usable)
    share = np.zeros(g.shape)
    ct, cv = cap_t[g], cap_v[g]
    share += np.where(ct > 0, w_t * np.minimum((req_t + req_pct * ct) / np.where(ct > 0, ct, 1.0), 1.0), 0.0)
    share += np.where(cv > 0, w_v * np.minimum(req_v / np.where(cv > 0, cv, 1.0), 1.0), 0.0)
    k = on.sum(axis=1)
    return np.where(k > 0, count * np.where(on, share, 0.0).sum(axis=1) / np.maximum(k, 1), 0.0)


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) every kernel, so the first
    real request does not pay for it.  Called before /readyz turns ready."""
    nodes = np.zeros(1, np.int32)
    node_gpus = np.zeros((1, 1), np.int32)
    eligible = np.ones(1, np.bool_)
    cap = np.ones(1, np.float64)
    used = np.zeros(1, np.float64)
    fit_nodes_numba(nodes, node_gpus, eligible, cap, cap, used, used, 0.0, 0.0, 0.0, 1)
    score_nodes_numba(nodes, node_gpus, eligible, cap, cap, used, used, 0.3, 0.7, True)
    pick_gpus_numba(0, node_gpus, eligible, cap, cap, used, used, 0.0, 0.0, 0.0, 1, 0.3, 0.7, True)
    mix = (np.zeros(1), np.zeros(1), np.zeros(1), np.ones(1, np.int64), np.zeros(1), np.zeros(1), np.ones(1))
    request = (0.0, 0.0, 0.0, 1, 0.0, 0.0)
    frag_scores_numba(nodes, node_gpus, eligible, cap, cap, used, used, cap, cap, *request, *mix, 0.3, 0.7)
    frag_pick_numba(0, node_gpus, eligible, cap, cap, used, used, cap, cap, *request, *mix, 0.3, 0.7)
    node_free_share_numba(nodes, node_gpus, eligible, cap, cap, used, used, 0.3, 0.7)
    request_share_numba(nodes, node_gpus, eligible, cap, cap, 0.0, 0.0, 0.0, 1, 0.3, 0.7)
