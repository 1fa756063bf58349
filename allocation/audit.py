"""The ledger auditor's comparison: the ledger against a fresh list of pods.

Pure: the caller lists pods (a quorum read) and hands them in.  A list is a
snapshot at one resourceVersion while the ledger keeps moving with the watch,
so a difference seen once may just be an event in flight; only a difference
seen again by the next audit, unchanged on both sides, counts as drift.  What
is safe to repair is repaired by ``ClusterState.repair`` through the cache,
as the missed watch event would have done; over-committed GPUs cannot be
repaired by tfsched, only reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tfsched.allocation.ledger import Allocation, Ledger

# Drift kinds (the metric's label).
ALLOCATION_WITHOUT_POD = "allocation_without_pod"
POD_WITHOUT_ALLOCATION = "pod_without_allocation"
ALLOCATION_MISMATCH = "allocation_mismatch"
GPU_OVERCOMMITTED = "gpu_overcommitted"
DRIFT_KINDS = (ALLOCATION_WITHOUT_POD, POD_WITHOUT_ALLOCATION, ALLOCATION_MISMATCH, GPU_OVERCOMMITTED)


@dataclass(frozen=True, slots=True)
class Drift:
    kind: str
    uid: str  # the pod's uid, or the GPU's name for GPU_OVERCOMMITTED
    message: str
    pod: dict[str, Any] | None = None  # the listed pod, when there is one


@dataclass
class Auditor:
    """Remembers what the previous audit saw, to tell drift from events in flight."""

    ledger: Ledger
    _suspects: dict[tuple[str, str], tuple] = field(default_factory=dict)

    def start(self) -> AuditPass:
        """One audit, fed a listed pod at a time (as the list's pages arrive)."""
        return AuditPass(self)

    def audit(self, pods: Iterable[dict[str, Any]]) -> list[Drift]:
        """Compare, and return the drift confirmed by two audits in a row (GPU
        over-commit is reported at once: it is a fact about the ledger now)."""
        audit = self.start()
        for pod in pods:
            audit.take(pod)
        return audit.finish()


class AuditPass:
    """One audit in progress.  Of each listed pod it keeps only its uid and the shape of
    what it holds, and the pod itself only when the previous audit suspected it (a confirmed
    drift names its pod in the Event): every pod of a large cluster held until the list ends
    raised the peak at 20,000 nodes from 613 to 645 MB."""

    def __init__(self, auditor: Auditor) -> None:
        self.auditor = auditor
        self.held: dict[str, tuple | None] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self._suspected = {uid for _, uid in auditor._suspects}

    def take(self, pod: dict[str, Any], keep: Callable[[dict[str, Any]], dict[str, Any]] = lambda pod: pod) -> None:
        """One listed pod; ``keep`` gives the form to hold it in, if it is held."""
        uid = (pod.get("metadata") or {}).get("uid")
        if not isinstance(uid, str) or not uid:
            return
        held = self.auditor.ledger.holding(pod)[0]
        self.held[uid] = None if held is None else _shape(held)
        if uid in self._suspected:
            self.pods[uid] = keep(pod)

    def finish(self) -> list[Drift]:
        auditor, ledger, held = self.auditor, self.auditor.ledger, self.held
        seen: dict[tuple[str, str], tuple] = {}
        for uid, alloc in ledger.allocations.items():
            if alloc.reserved:
                continue  # a bind or resize in flight: not yet on the pod
            listed = held.get(uid)
            if listed is None:
                seen[(ALLOCATION_WITHOUT_POD, uid)] = _shape(alloc)
            elif listed != _shape(alloc):
                seen[(ALLOCATION_MISMATCH, uid)] = (_shape(alloc), listed)
        for uid, shape in held.items():
            if shape is not None and uid not in ledger.allocations:
                seen[(POD_WITHOUT_ALLOCATION, uid)] = shape
        confirmed = [key for key, value in seen.items() if auditor._suspects.get(key) == value]
        auditor._suspects = seen
        out = []
        for kind, uid in confirmed:
            pod = self.pods.get(uid)
            alloc = ledger.allocations.get(uid)
            what = alloc.pod if alloc is not None else _name(pod)
            if kind == ALLOCATION_WITHOUT_POD:
                message = f"the ledger held GPUs for pod {what}, which no longer holds them; released"
            elif kind == POD_WITHOUT_ALLOCATION:
                message = f"pod {what} holds GPUs the ledger did not count; counted now"
            else:
                message = f"the ledger's record of pod {what} differed from the pod; taken from the pod"
            out.append(Drift(kind, uid, message, pod))
        out.extend(
            Drift(GPU_OVERCOMMITTED, name, f"GPU {name}: its holders together exceed its capacity")
            for name in ledger.overcommitted()
        )
        return out


def _shape(alloc: Allocation) -> tuple:
    return (alloc.node, alloc.gpu_names, alloc.tflops, alloc.percent, alloc.vram)


def _name(pod: dict[str, Any] | None) -> str:
    meta = (pod or {}).get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
