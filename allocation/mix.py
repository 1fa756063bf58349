"""The workload mix the fragmentation-aware mode places for: what the cluster asks.

FGD scores a placement against the requests the cluster is likely to receive
next; here those are the effective requests of the GPU pods the cache holds
(bound and pending: an effective request carries the workload's
recommendation or cron override, so the autoscaler's view of what a workload
will ask is in it). Each pod counts once under its request type. FGD weighs a
type by its share of the pods; here by that share over the share of the GPUs
able to hold it (``Inventory.capable_share``): a type only 5 % of the GPUs can
take must find room there, so a node spoilt for it costs it twenty times what
the next-pod expectation says (openb ``multigpu50``: 8-GPU pods asking
120 CPUs fit only the 39 largest nodes; bench/RESULTS.md). The arrays are
rebuilt from the heaviest types once 1 % of the pods changed, or the capacity did.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Protocol

import numpy as np

from tfsched.clustermodel.gpurequest import GPURequest
from tfsched.scoring.inventory import request_units

# Types beyond the heaviest ones add cost to every score and little to the estimate.
MAX_MIX_TYPES = 32
# The arrays are rebuilt once this share of the pods seen (at least one pod) has changed:
# the mix is an estimate, and each rebuild invalidates every cached rise (extender.placement).
MIX_REFRESH_SHARE = 0.01

# Per-GPU TFLOPS units, share of a GPU, VRAM units, GPU count; and the pod's milli-CPU and memory bytes.
RequestType = tuple[float, float, float, int, float, float]


class Capability(Protocol):
    """What the cluster could hold, per request type (``scoring.inventory.Inventory``)."""

    capacity_version: int

    def capable_share(self, types: Sequence[RequestType]) -> np.ndarray: ...


def request_type(request: GPURequest, cpu: float = 0.0, mem: float = 0.0) -> RequestType:
    return (*request_units(request), float(cpu), float(mem))


@dataclass(frozen=True, slots=True)
class MixArrays:
    """Kernel inputs: per type its TFLOPS, share, VRAM, count, CPU, memory and
    popularity (sums to 1)."""

    tflops: np.ndarray
    share: np.ndarray
    vram: np.ndarray
    count: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    popularity: np.ndarray

    def args(self) -> tuple[np.ndarray, ...]:
        return (self.tflops, self.share, self.vram, self.count, self.cpu, self.mem, self.popularity)

    @classmethod
    def of(
        cls,
        counts: Counter[RequestType],
        limit: int = MAX_MIX_TYPES,
        capable_share: Callable[[Sequence[RequestType]], np.ndarray] | None = None,
    ) -> MixArrays:
        """Popularity by pods (FGD's), over each type's capable share when given (types
        no GPU could hold are left out). (Weighing types by the GPUs they ask instead lost
        1.3 and 3.8 points at 100 % arrived on the openb replay: bench/RESULTS.md.)"""
        weights: dict[RequestType, float] | Counter[RequestType] = counts
        if capable_share is not None and counts:
            keys = list(counts)
            shares = capable_share(keys).tolist()
            weights = {k: counts[k] / s for k, s in zip(keys, shares, strict=True) if s > 0}
        common = heapq.nlargest(limit, weights.items(), key=itemgetter(1))
        types, top = zip(*common, strict=True) if common else ((), ())
        cols = [np.array(col) for col in zip(*types, strict=True)] if types else [np.zeros(0)] * 6
        t, share, v, count, cpu, mem = cols
        w = np.array(top, np.float64)
        return cls(
            t.astype(np.float64),
            share.astype(np.float64),
            v.astype(np.float64),
            count.astype(np.int64),
            cpu.astype(np.float64),
            mem.astype(np.float64),
            w / w.sum() if w.size else w,
        )


class WorkloadMix:
    """Request types of the pods seen, by uid; ``arrays(request)`` for the kernels.
    ``capability``: weigh each type by the GPUs able to hold it (None: by pods alone)."""

    def __init__(self, capability: Capability | None = None) -> None:
        self._by_uid: dict[str, RequestType] = {}
        self._counts: Counter[RequestType] = Counter()
        self._arrays: MixArrays | None = None
        self._changes = 0  # pods changed since the arrays were built
        self._capability = capability
        self._capacity_version = -1  # the capability's, when the arrays were built
        self.version = 0  # bumped at each rebuild

    def __len__(self) -> int:
        return len(self._by_uid)

    def observe(self, uid: str, request: GPURequest | None, cpu: float = 0.0, mem: float = 0.0) -> None:
        """The pod's current GPU request and CPU/memory (None: it asks no GPU, or is gone)."""
        new = request_type(request, cpu, mem) if request is not None else None
        old = self._by_uid.get(uid)
        if old == new:
            return
        if old is not None:
            self._counts[old] -= 1
            if self._counts[old] <= 0:
                del self._counts[old]
            del self._by_uid[uid]
        if new is not None:
            self._by_uid[uid] = new
            self._counts[new] += 1
        self._changes += 1

    def arrays(self, request: GPURequest | None, cpu: float = 0.0, mem: float = 0.0) -> MixArrays:
        """The mix; with no pods seen yet, the GPU request being placed stands for it
        (a pod without GPUs, ``request`` None, is no GPU request type: the mix as it is)."""
        if not self._counts and request is not None:
            return MixArrays.of(Counter({request_type(request, cpu, mem): 1}))
        cap = self._capability
        capacity_version = cap.capacity_version if cap is not None else -1
        if (
            self._arrays is None
            or self._changes >= max(1.0, MIX_REFRESH_SHARE * len(self._by_uid))
            or capacity_version != self._capacity_version
        ):
            self._arrays = MixArrays.of(self._counts, capable_share=cap.capable_share if cap is not None else None)
            self._changes = 0
            self._capacity_version = capacity_version
            self.version += 1
        return self._arrays
