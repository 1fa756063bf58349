"""The workload mix the fragmentation-aware mode places for: what the cluster asks.

FGD scores a placement against the requests the cluster is likely to receive
next; here those are the effective requests of the GPU pods the cache holds
(bound and pending: an effective request carries the workload's
recommendation or cron override, so the autoscaler's view of what a workload
will ask is in it). Each pod counts once under its request type; the arrays
are rebuilt from the most common types once 1 % of the pods changed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from tfsched.clustermodel.gpurequest import GPURequest
from tfsched.scoring.inventory import request_units

# Types beyond the most common ones add cost to every score and little to the estimate.
MAX_MIX_TYPES = 32
# The arrays are rebuilt once this share of the pods seen (at least one pod) has changed:
# the mix is an estimate, and each rebuild invalidates every cached rise (extender.placement).
MIX_REFRESH_SHARE = 0.01

# Per-GPU TFLOPS units, share of a GPU, VRAM units, GPU count; and the pod's milli-CPU and memory bytes.
RequestType = tuple[float, float, float, int, float, float]


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
    def of(cls, counts: Counter[RequestType], limit: int = MAX_MIX_TYPES) -> MixArrays:
        # Popularity by pods, as FGD's. (Choosing types, or weighing them, by the GPUs they
        # ask — so 8-GPU requests are in the mix — lost 1.3 and 3.8 points at 100 % arrived
        # on the openb replay: bench/RESULTS.md.)
        common = counts.most_common(limit)
        types, weights = zip(*common, strict=True) if common else ((), ())
        cols = [np.array(col) for col in zip(*types, strict=True)] if types else [np.zeros(0)] * 6
        t, share, v, count, cpu, mem = cols
        w = np.array(weights, np.float64)
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
    """Request types of the pods seen, by uid; ``arrays(request)`` for the kernels."""

    def __init__(self) -> None:
        self._by_uid: dict[str, RequestType] = {}
        self._counts: Counter[RequestType] = Counter()
        self._arrays: MixArrays | None = None
        self._changes = 0  # pods changed since the arrays were built
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
        if self._arrays is None or self._changes >= max(1.0, MIX_REFRESH_SHARE * len(self._by_uid)):
            self._arrays = MixArrays.of(self._counts)
            self._changes = 0
            self.version += 1
        return self._arrays
