"""Filter and score: functions of (cluster state, pod) with the kernels underneath.

The effective request is resolved once per call; node names become inventory
indices once; the kernels run over arrays; reasons are formatted only for
failed nodes and only once per distinct outcome.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.gpurequest import GPURequest
from tfsched.clustermodel.quantity import MIB, MILLI_PER_TFLOPS, format_bytes, format_tflops
from tfsched.scoring.inventory import request_units, vram_units
from tfsched.scoring.kernels import fit_nodes_numba, frag_scores_numba, score_nodes_numba
from tfsched.scoring.modes import (
    FIT_NO_BOTH,
    FIT_NO_ELIGIBLE_GPU,
    FIT_NO_TFLOPS,
    FIT_NO_VRAM,
    FIT_OK,
    FIT_TOO_FEW_GPUS,
    VERDICT_NAMES,
    PlacementMode,
)
from tfsched.scoring.rank import MAX_SCORE, decisive_scores, ratio_class

# Rises in expected fragmentation closer than this (GPUs' worth) count as equal, so the
# consistent tie-break decides (openb replay: 0.04–0.25 within 0.1 point; bench/RESULTS.md).
RISE_RESOLUTION = 0.1
# Free CPU per free GPU is matched to a GPU pod's in factors of this: class 0 is a node with
# 1-4x the pod's ratio (openb replay: +0.7 point at 100 % arrived against name order alone).
CPU_RATIO_BASE = 4.0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _tflops_text(request: GPURequest) -> str:
    if request.percent_request and not request.tflops_request:
        return f"{request.percent_request:g}% of TFLOPS"
    return f"{format_tflops(request.tflops_request)} TFLOPS"


def _constraints_text(request: GPURequest) -> str:
    parts = [
        f"{label}={value}"
        for label, value in (
            ("model", " or ".join(request.gpu_models)),
            ("vendor", request.vendor),
            ("pool", request.pool),
        )
        if value
    ]
    if request.gpu_indices:
        parts.append("indices=" + ",".join(str(i) for i in sorted(request.gpu_indices)))
    return " matching " + ", ".join(parts) if parts else ""


def foreign_text(gpus: dict[str, str]) -> str:
    """``2 GPUs used by nvidia-device-plugin``: why GPUs of a node are not ours to share."""
    by_user = Counter(gpus.values())
    return ", ".join(f"{_plural(n, 'GPU')} used by {user}" for user, n in sorted(by_user.items()))


def _largest_text(need: int, have: int, free: str) -> str:
    """``largest free 12Gi`` (one GPU), ``1 has it, largest free on the others 12Gi`` (several)."""
    if need == 1:
        return f"largest free {free}"
    return f"{have} {'has' if have == 1 else 'have'} it, largest free on the others {free}"


def _free_vram_text(request: GPURequest, free_v: float) -> str:
    # Rounded up to Mi like the request, unless that would read as enough.
    exact = format_bytes(free_v, exact=False) == format_bytes(request.vram_request, exact=False)
    return format_bytes(free_v, exact=exact)


def _free_tflops_text(request: GPURequest, free_t: float, share_t: float) -> str:
    if request.percent_request and not request.tflops_request:
        return f"{math.floor(share_t * 100):g}% of TFLOPS"  # down: never reads as enough
    return f"{format_tflops(free_t / MILLI_PER_TFLOPS)} TFLOPS"


def _capacity_text(need: int, capable: int) -> str:
    """Why preemption cannot help: too few GPUs could hold the request even if empty."""
    if capable >= need:
        return ""
    if capable == 0:
        return "; no GPU on the node is that large"
    return f"; only {_plural(capable, 'GPU')} on the node {'is' if capable == 1 else 'are'} that large"


def fail_reason(
    request: GPURequest, verdict: int, counts: Sequence[int], node_has_gpus: bool, largest: Sequence[float] = ()
) -> str:
    """The reason kube-scheduler shows in the pod's FailedScheduling event.

    ``counts`` and ``largest``: the fit kernel's (``fit_nodes_numba``) counts and
    largest free TFLOPS, TFLOPS share and VRAM among the node's eligible GPUs
    short of each.
    """
    eligible, t_ok, v_ok, both, capable = (int(c) for c in counts)
    free_t, share_t, free_v = (float(x) for x in largest) if len(largest) else (0.0, 0.0, 0.0)
    need = request.gpu_count
    gpus = _plural(need, "GPU")
    if verdict == FIT_NO_ELIGIBLE_GPU:
        if not node_has_gpus:
            return "node has no TensorFusion GPUs"
        return f"no usable GPU{_constraints_text(request)} on node"
    if verdict == FIT_TOO_FEW_GPUS:
        return f"insufficient GPUs: need {gpus}{_constraints_text(request)}, node has {eligible}"
    vram = format_bytes(request.vram_request, exact=False)
    if verdict == FIT_NO_VRAM:
        short = f"VRAM: need {gpus} with {vram} free, " + _largest_text(need, v_ok, _free_vram_text(request, free_v))
    elif verdict == FIT_NO_TFLOPS:
        free = _free_tflops_text(request, free_t, share_t)
        short = f"TFLOPS: need {gpus} with {_tflops_text(request)} free, " + _largest_text(need, t_ok, free)
    elif verdict == FIT_NO_BOTH:
        free = f"{_free_tflops_text(request, free_t, share_t)} and {_free_vram_text(request, free_v)}"
        short = f"TFLOPS and VRAM: need {gpus} with {_tflops_text(request)} and {vram} free, "
        short += _largest_text(need, both, free)
    else:
        raise ValueError(f"not a failure verdict: {verdict}")
    return f"insufficient {short}{_capacity_text(need, capable)}"


@dataclass(slots=True)
class FilterOutcome:
    passed: np.ndarray  # bool per position in the request's node list
    failed: dict[str, str]  # too little free now: preemption might help
    unresolvable: dict[str, str]  # no such node / no matching GPU / GPUs too small to ever hold it: it cannot
    denials: Counter[str] = field(default_factory=Counter)  # refused nodes by reason (metrics' names)


UNKNOWN_NODE_REASON = "node is unknown to the extender (no Node or GPU object seen)"
DENIAL_UNKNOWN_NODE = "unknown_node"  # its name in tfsched_extender_filter_denials_total


def _kernel_args(state: ClusterState, request: GPURequest) -> tuple:
    inv = state.inventory
    eligible = inv.eligible_mask(request.gpu_models, request.vendor, request.pool, request.gpu_indices)
    return (inv.node_gpus, eligible, inv.cap_t, inv.cap_v, inv.used_t, inv.used_v)


def _shown(request: GPURequest, verdict: np.ndarray, largest: np.ndarray) -> np.ndarray:
    """Per failed node, what its reason shows of the largest free shares (the rest 0), so
    nodes that read the same share one reason: free TFLOPS or a whole percent, VRAM in
    whole Mi (exact and negated where that Mi is the request's: the reason shows bytes)."""
    free_mi = np.ceil(largest[:, 2] / MIB)
    need_mi = math.ceil(vram_units(request.vram_request) / MIB)
    shows_t = (verdict == FIT_NO_TFLOPS) | (verdict == FIT_NO_BOTH)
    shows_v = (verdict == FIT_NO_VRAM) | (verdict == FIT_NO_BOTH)
    percent_only = bool(request.percent_request and not request.tflops_request)
    out = np.zeros((len(verdict), 3))
    if percent_only:
        out[:, 1] = np.where(shows_t, np.floor(largest[:, 1] * 100), 0.0)
    else:
        out[:, 0] = np.where(shows_t, largest[:, 0], 0.0)
    out[:, 2] = np.where(shows_v, np.where(free_mi == need_mi, -largest[:, 2], free_mi), 0.0)
    return out


def filter_nodes(
    state: ClusterState, request: GPURequest, names: Sequence[str], nodes: np.ndarray | None = None
) -> FilterOutcome:
    """``nodes``: the inventory indices of ``names`` when the caller has them cached."""
    inv = state.inventory
    if nodes is None:
        nodes = inv.node_indices(list(names))
    verdict, counts, largest = fit_nodes_numba(nodes, *_kernel_args(state, request), *request_units(request))
    ok = verdict == FIT_OK
    failed: dict[str, str] = {}
    unresolvable: dict[str, str] = {}
    denials: Counter[str] = Counter()
    if not ok.all():
        reasons: dict[tuple, str] = {}
        fails = np.flatnonzero(~ok)
        shown = _shown(request, verdict[fails], largest[fails])
        for i, v, row, seen, incapable in zip(
            fails.tolist(),
            verdict[fails].tolist(),
            counts[fails].tolist(),
            shown.tolist(),
            (counts[fails, 4] < request.gpu_count).tolist(),
            strict=True,
        ):
            name = names[i]
            n = int(nodes[i])
            if n < 0 or (not inv.node_present[n] and inv.gpus_of_node(n).size == 0):
                unresolvable[name] = UNKNOWN_NODE_REASON
                denials[DENIAL_UNKNOWN_NODE] += 1
                continue
            denials[VERDICT_NAMES[v]] += 1
            has_gpus = inv.gpus_of_node(n).size > 0 if v == FIT_NO_ELIGIBLE_GPU else True
            key = (v, *row, has_gpus, *seen)
            reason = reasons.get(key)
            if reason is None:
                reason = reasons[key] = fail_reason(request, v, row, has_gpus, largest[i])
            # Only looked up when some GPU is another system's (usually none is).
            foreign = state.foreign_gpus and v in (FIT_NO_ELIGIBLE_GPU, FIT_TOO_FEW_GPUS) and state.foreign_gpus_of(n)
            if foreign:
                reason = f"{reason} ({foreign_text(foreign)})"
            # Preemption frees usage, not capacity: where too few GPUs could ever hold the
            # request, kube-scheduler should not try it (FailedAndUnresolvableNodes).
            if v in (FIT_NO_ELIGIBLE_GPU, FIT_TOO_FEW_GPUS) or incapable:
                unresolvable[name] = reason
            else:
                failed[name] = reason
    return FilterOutcome(ok, failed, unresolvable, denials)


def best_nodes(
    state: ClusterState,
    request: GPURequest,
    names: Sequence[str],
    nodes: np.ndarray | None,
    passed: np.ndarray,
    cpu_mem: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """``passed`` narrowed to the nodes that score highest among them (``scoreInFilter``):
    what kube-scheduler's prioritize call would have preferred, decided in filter."""
    kept = np.flatnonzero(passed)
    if kept.size < 2:
        return passed
    if nodes is None:
        nodes = state.inventory.node_indices(list(names))
    scores = score_nodes(state, request, [names[i] for i in kept.tolist()], nodes[kept], cpu_mem)
    best = np.zeros_like(passed)
    best[kept[scores == scores.max()]] = True
    return best


def score_nodes(
    state: ClusterState,
    request: GPURequest | None,
    names: Sequence[str],
    nodes: np.ndarray | None = None,
    cpu_mem: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Scores 0–10 in the order of ``names``.

    The kernel gives each node 0–100 (mean weighted used share of its eligible
    GPUs for compact modes, free share for low-load); these are stretched
    min–max over the candidates so the preference survives kube-scheduler's
    integer scale even when every node is nearly empty.  Equal nodes all
    score the same.  ``request`` None: a pod without GPUs, which only the
    fragmentation-aware mode scores (by what its CPU and memory ``cpu_mem``
    would strand); the other modes give every node 0.
    """
    inv = state.inventory
    mode: PlacementMode = state.config.mode_for(request.pool if request is not None else "")
    w_t, w_v = state.config.weights
    if nodes is None:
        nodes = inv.node_indices(list(names))
    if mode.fragmentation_aware:
        return _least_fragmentation_scores(state, request, nodes, float(w_t), float(w_v), cpu_mem)
    if request is None:
        return np.zeros(len(names), np.int64)
    raw = score_nodes_numba(nodes, *_kernel_args(state, request), float(w_t), float(w_v), bool(mode.node_compact))
    if raw.size == 0:
        return np.zeros(0, np.int64)
    low, high = float(raw.min()), float(raw.max())
    if high - low < 1e-9:
        return np.full(raw.size, MAX_SCORE if high > 0 else 0, np.int64)
    return np.rint((raw - low) * (MAX_SCORE / (high - low))).astype(np.int64)


def _least_fragmentation_scores(
    state: ClusterState,
    request: GPURequest | None,
    nodes: np.ndarray,
    w_t: float,
    w_v: float,
    cpu_mem: tuple[float, float],
) -> np.ndarray:
    """0–10: 10 for the one node where the pod raises expected fragmentation
    least, the others by how much more (``scoring.rank``); 0 where it does not fit.

    Among nodes within ``RISE_RESOLUTION`` of the least rise: a GPU pod goes to
    a node whose free CPU per free GPU is nearest (``CPU_RATIO_BASE``) what the pod
    asks per GPU, so CPU-hungry pods take CPU-rich nodes and the others leave it,
    then to the first by name, so pods pack consistently instead of spreading over
    equals (and the same way after a restart); a pod without GPUs to the node
    with the most free CPU per free GPU, where its CPU strands the fewest GPUs
    (then by name).
    """
    inv = state.inventory
    if request is None:  # no GPU: it takes CPU and memory only
        gpus, pod = (inv.node_gpus, inv.usable, inv.cap_t, inv.cap_v, inv.used_t, inv.used_v), (0.0, 0.0, 0.0, 0)
    else:
        gpus, pod = _kernel_args(state, request), request_units(request)
    mix = state.mix.arrays(request, *cpu_mem)
    free_cpu, free_mem = inv.free_cpu_mem()
    key = (
        pod,
        cpu_mem,
        None if request is None else (request.gpu_models, request.vendor, request.pool, request.gpu_indices),
        state.mix.version if len(state.mix) else -1,  # -1: no pods seen, the request stands for the mix
        w_t,
        w_v,
    )

    def tie_key(subset: np.ndarray) -> np.ndarray:
        if request is not None and cpu_mem[0] <= 0:
            return np.zeros(subset.size)
        node_ratio = inv.free_cpu_per_free_gpu(subset, w_t, w_v)
        if request is None:
            return -node_ratio
        pod_ratio = cpu_mem[0] / np.maximum(inv.request_share(subset, *pod, w_t, w_v), 1e-6)
        return ratio_class(node_ratio, pod_ratio, CPU_RATIO_BASE)

    def compute(subset: np.ndarray) -> np.ndarray:
        rows = np.empty((subset.size, 2))
        rows[:, 0] = frag_scores_numba(subset, *gpus, free_cpu, free_mem, *pod, *cpu_mem, *mix.args(), w_t, w_v)
        rows[:, 1] = tie_key(subset)
        return rows

    # Both depend on the node and the request alone, so they are kept together per node version.
    rows = state.rise_cache.rises(key, nodes, inv.node_version, compute)
    tie = rows[:, 1]
    return decisive_scores(
        rows[:, 0], lambda positions: (tie[positions], inv.name_rank(nodes[positions])), RISE_RESOLUTION
    )
