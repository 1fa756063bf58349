"""Background upkeep of the allocation state: the ledger auditor and the GPU
status writer.  Both are edges (they list and patch through the API); the
comparisons they act on are pure (``allocation/audit.py``, ``Ledger.gpu_view``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tfsched.allocation.audit import DRIFT_KINDS, GPU_OVERCOMMITTED, Auditor
from tfsched.allocation.state import ClusterState, keep_pod
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import Kind, slim_pod
from tfsched.clustermodel.quantity import MILLI_PER_TFLOPS, format_bytes, format_tflops
from tfsched.extender.metrics import ExtenderMetrics
from tfsched.kubeapi.client import KubeApiError, KubeClient, path_segment
from tfsched.kubeapi.informer import RESOURCES, list_objects
from tfsched.kubeapi.leader import WriterGate
from tfsched.kubeapi.ratelimit import WritePacer, retry_after

log = logging.getLogger(__name__)

GPU_STATUS_MIN_INTERVAL_S = 1.0  # at most one status write per GPU per second
# A changed GPU is written once its changes have paused this long (a node filling up in a
# burst of binds is one write per GPU, not one per bind)...
GPU_STATUS_QUIET_S = 1.0
# ...or once its oldest unwritten change is this old (TensorFusion syncs GPU status every 10 s).
GPU_STATUS_MAX_LAG_S = 10.0
GPU_STATUS_CONCURRENCY = 8
# The pace of status writes (config gpuStatus): kube-scheduler's own client QPS and burst.
# Steady scheduling needs ~0.1 writes per bound pod; a new leader's pass over a cluster whose
# statuses are stale is what the pace holds back (63,000 writes in 8 s at 20,000 nodes before).
GPU_STATUS_QPS = 50.0
GPU_STATUS_BURST = 100


def _slim(pod: dict[str, Any]) -> dict[str, Any]:
    """A listed pod in the cache's slim form: what the comparison, a repair and an Event
    about it read."""
    try:
        slim = slim_pod(pod)
    except Exception:
        return pod  # a shape the slim form cannot take: compared (and reported) as it came
    slim["apiVersion"] = pod.get("apiVersion")  # Events name the object with it
    return slim


def _keeps(pod: dict[str, Any]) -> bool:
    try:
        return keep_pod(pod)
    except Exception:
        return False


class LedgerAuditor:
    """Every ``interval``, compare the ledger with a fresh list of pods; report
    drift (metric, log, Warning event) and repair what is safe."""

    def __init__(
        self, client: KubeClient, state: ClusterState, distrust: Callable[[], str], interval: float = 60.0
    ) -> None:
        self.client = client
        self.state = state
        self.distrust = distrust
        self.interval = interval
        self.auditor = Auditor(state.ledger)

    async def audit_once(self) -> int:
        """One audit; returns the number of drifts found."""
        audit = self.auditor.start()
        # Compared as the pages arrive: only the suspects' pods are held (see AuditPass).
        async for pod in list_objects(self.client, RESOURCES[Kind.POD]):
            if isinstance(pod, dict) and _keeps(pod):
                audit.take(pod, _slim)
        if self.distrust():
            return 0  # the cache is being re-listed: comparing now would only find noise
        drifts = audit.finish()
        self.state.overcommitted_gpus = sum(1 for d in drifts if d.kind == GPU_OVERCOMMITTED)
        found = Counter(d.kind for d in drifts)
        self.state.drift_found = {kind: found.get(kind, 0) for kind in {*DRIFT_KINDS, *found}}
        for drift in drifts:
            if drift.kind == GPU_OVERCOMMITTED:
                ref = {"apiVersion": ann.GROUP_VERSION, "kind": ann.GPU_KIND, "metadata": {"name": drift.uid}}
                reason = ann.EVENT_GPU_OVERCOMMITTED
            else:
                ref = drift.pod or {"kind": "Pod", "metadata": {"uid": drift.uid}}
                reason = ann.EVENT_LEDGER_DRIFT
            if self.state.problems.report(drift.kind, ref, reason, drift.message):
                log.warning("ledger audit: %s", drift.message)
            self.state.repair(drift)
        return len(drifts)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.distrust():
                continue
            try:
                await self.audit_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ledger audit failed: %s: %s", type(exc).__name__, exc)


class GpuStatusWriter:
    """Keeps each GPU's ``status.available`` and ``status.runningApps`` showing
    the ledger (a view: the ledger stays the truth).  Only the writer that
    binds writes them, and only while the ledger is trusted (``distrust``: a
    partly listed cache would show GPUs emptier than they are).  A GPU's
    changes are coalesced until they pause for ``GPU_STATUS_QUIET_S`` or are
    ``GPU_STATUS_MAX_LAG_S`` old, at most one write per GPU per second, and a
    GPU whose status already says it is not written.  Each write costs the API
    server a patch of a custom resource (schema validation, managed fields, a
    watch event): about 1 ms of its CPU; so writes go at ``qps`` (``burst`` at
    once), and a 429 holds them all back for as long as it asks."""

    def __init__(
        self,
        client: KubeClient,
        state: ClusterState,
        gate: WriterGate,
        distrust: Callable[[], str],
        metrics: ExtenderMetrics | None = None,
        *,
        qps: float = GPU_STATUS_QPS,
        burst: int = GPU_STATUS_BURST,
    ) -> None:
        self.client = client
        self.state = state
        self.gate = gate
        self.distrust = distrust
        self.pacer = WritePacer(qps, burst)
        metrics = metrics or ExtenderMetrics()
        self._written = metrics.gpu_status_writes.labels("written")  # the series looked up once
        self._failed = metrics.gpu_status_writes.labels("failed")
        self._throttled = metrics.gpu_status_writes.labels("throttled")
        unwritten = metrics.gpu_status_unwritten
        metrics.before_scrape.append(lambda: unwritten.set(self.unwritten()))  # on the loop: it reads the ledger
        self._queued = 0  # due GPUs of the pass under way, not yet taken by a worker
        self.last_write: dict[str, float] = {}
        self.pending: dict[str, tuple[float, float]] = {}  # GPU -> (first, last) unwritten change seen
        self.writes = 0

    def desired(self, name: str) -> dict[str, Any] | None:
        view = self.state.ledger.gpu_view(name)
        if view is None:
            return None
        free_t, free_v, holders = view
        apps: dict[tuple[str, str], int] = {}
        for holder in holders:
            namespace, _, pod_name = holder.partition("/")
            pod = self.state.cache.get(Kind.POD, namespace, pod_name) or {}
            workload = ((pod.get("metadata") or {}).get("annotations") or {}).get(ann.WORKLOAD)
            key = (namespace, workload if isinstance(workload, str) and workload else pod_name)
            apps[key] = apps.get(key, 0) + 1
        return {
            "available": {"tflops": format_tflops(free_t / MILLI_PER_TFLOPS), "vram": format_bytes(free_v)},
            "runningApps": [{"name": n, "namespace": ns, "count": c} for (ns, n), c in sorted(apps.items())],
        }

    def _due(self, now: float) -> list[str]:
        """Take in the ledger's changed GPUs; the pending ones due now, no longer pending."""
        ledger = self.state.ledger
        for name in ledger.changed_gpus:
            first, _ = self.pending.get(name, (now, now))
            self.pending[name] = (first, now)
        ledger.changed_gpus.clear()
        due = [
            name
            for name, (first, last) in self.pending.items()
            if (now - last >= GPU_STATUS_QUIET_S or now - first >= GPU_STATUS_MAX_LAG_S)
            and now - self.last_write.get(name, -1e9) >= GPU_STATUS_MIN_INTERVAL_S
        ]
        for name in due:
            del self.pending[name]
        return due

    def unwritten(self) -> int:
        """GPUs with a change not yet written: coalescing, or queued in the pass under way."""
        changed = self.state.ledger.changed_gpus
        return len(self.pending) + sum(1 for name in changed if name not in self.pending) + self._queued

    def _changed_status(self, name: str) -> dict[str, Any] | None:
        """The status ``name`` should show, or None when its cached status already shows it."""
        status = self.desired(name)
        cached = self.state.cache.get(Kind.GPU, "", name) or {}
        current = cached.get("status") or {}
        if status is None or all(current.get(k) == v for k, v in status.items()):
            return None
        return status

    async def write_due(self, now: float | None = None) -> int:
        """Write the changed GPUs that are due (``now``: monotonic seconds); returns how many were written.

        ``GPU_STATUS_CONCURRENCY`` workers take the due GPUs one at a time, each working out
        its status just before waiting for its turn to write it: a new leader's pass over
        every GPU of a large cluster holds a few statuses and requests at a time, not one of
        each per GPU.  Failures are logged once per pass, not once per GPU."""
        ledger = self.state.ledger
        now = time.monotonic() if now is None else now
        due_names = self._due(now)
        due = iter(due_names)  # shared by the workers: each GPU taken once
        self._queued = len(due_names)
        written = 0
        failed, first_failure = 0, ""

        def deferred(name: str) -> bool:
            """A re-list began during the pass: the rest waits for it."""
            if not self.distrust():
                return False
            ledger.changed_gpus.add(name)
            return True

        async def worker() -> None:
            nonlocal written, failed, first_failure
            for name in due:
                self._queued -= 1
                if deferred(name):  # before the token too: a deferred GPU must not wait for one
                    continue
                status = self._changed_status(name)
                if status is None:
                    continue
                # A change while it waits marks the GPU again: written in a later pass.
                await self.pacer.wait()
                if deferred(name):
                    continue
                written += 1
                self.last_write[name] = now
                path = f"/apis/{ann.GROUP_VERSION}/{ann.GPU_PLURAL}/{path_segment(name)}/status"
                try:
                    await self.client.patch(path, {"status": status})
                    self.writes += 1
                    self._written.inc()
                except Exception as exc:
                    if isinstance(exc, KubeApiError) and exc.status == 429:
                        self._throttled.inc()
                        self.pacer.pause(retry_after(exc.retry_after_s))
                    else:
                        self._failed.inc()
                    failed += 1
                    first_failure = first_failure or f"GPU {name}: {exc}"
                    ledger.changed_gpus.add(name)  # retried when due again

        try:
            await asyncio.gather(*(worker() for _ in range(GPU_STATUS_CONCURRENCY)))
        finally:
            ledger.changed_gpus.update(due)  # a pass cut short (shutdown) keeps what it did not take
            self._queued = 0
            if failed:
                log.warning("GPU status: %d write(s) failed in this pass, retried when due (first: %s)",
                            failed, first_failure)  # fmt: skip
        return written

    async def run(self, every: float = 0.2) -> None:
        was_active = False
        while True:
            active = self.gate.active.is_set()
            if active and not was_active:
                # A new leader: whatever the previous one wrote is checked once.
                self.state.ledger.changed_gpus.update(self.state.inventory.gpu_index)
            was_active = active
            if active and not self.distrust() and (self.state.ledger.changed_gpus or self.pending):
                try:
                    await self.write_due()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("GPU status writer: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(every)
