"""Appliers: bring worker pods and their owner to what the recommender decided.

* In place: the new per-GPU request is reserved on the GPUs the pod holds
  through the same ledger bind uses, the pod is patched, then the reservation
  is committed (or restored when the patch fails).
* Eviction: when the new request does not fit there, one pod per workload at
  a time, rate limited; its replacement is placed through the extender with
  the recommendation.
* Replicas: the owner's ``scale`` subresource (Deployment via its ReplicaSet,
  or StatefulSet).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from tfsched.allocation.ledger import NoFit
from tfsched.allocation.state import ClusterState
from tfsched.autoscale.feed import Feeder, Tracked, Workload
from tfsched.autoscale.metrics import AutoscaleMetrics
from tfsched.autoscale.recommend import Recommendation
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.autoscaling_config import Resources
from tfsched.clustermodel.cache import Obj
from tfsched.clustermodel.gpurequest import GPURequest
from tfsched.clustermodel.quantity import format_bytes, format_tflops
from tfsched.kubeapi.client import KubeApi, KubeApiError, PatchType, namespaced_path, pod_path
from tfsched.kubeapi.events import record_event

log = logging.getLogger(__name__)


def runs_with(request: GPURequest | None, target: Resources) -> bool:
    """Whether a pod's request already is ``target``."""
    if request is None:
        return False
    return (
        abs(request.tflops_request - target.requests.tflops) < 1e-6
        and abs(request.tflops_limit - target.limits.tflops) < 1e-6
        and abs(request.vram_request - target.requests.vram) < 1
        and abs(request.vram_limit - target.limits.vram) < 1
    )


def action_fields(action: str, workload: Workload, pod: Obj | None = None) -> dict[str, str]:
    """The action fields of a log line (tfsched.logs)."""
    fields = {"action": action, "workload": "/".join(workload.key)}
    if pod is not None:
        fields["pod"] = str(pod.get("name", ""))
    return fields


class PodResizer:
    """In-place resize, else eviction."""

    def __init__(
        self,
        state: ClusterState,
        kube: KubeApi,
        feeder: Feeder,
        eviction_interval: timedelta,
        metrics: AutoscaleMetrics | None = None,
    ) -> None:
        self.state = state
        self.kube = kube
        self.feeder = feeder
        self.eviction_interval = eviction_interval
        self.metrics = metrics or AutoscaleMetrics()

    async def apply(self, workload: Workload, rec: Recommendation, tracked: Tracked, now: datetime) -> list[Obj]:
        """Bring each bound worker to ``rec.to_apply``: in place where it fits,
        else evict (one pod per workload at a time).  Returns the pods as they are now."""
        target = rec.to_apply.to_model() if rec.to_apply is not None else None
        if target is None:
            return workload.pods
        out: list[Obj] = []
        for pod in workload.pods:
            meta = pod.get("metadata") or {}
            request = self.feeder.pod_request(pod)
            if (
                not (pod.get("spec") or {}).get("nodeName")
                or meta.get("deletionTimestamp")
                or request is None
                or runs_with(request, target)
            ):
                out.append(pod)
                continue
            new_request = replace(
                request,
                tflops_request=target.requests.tflops,
                tflops_limit=target.limits.tflops,
                vram_request=target.requests.vram,
                vram_limit=target.limits.vram,
                percent_request=0.0,
                percent_limit=0.0,
            )
            resized = await self.resize_in_place(workload, pod, request, new_request)
            if resized is not None:
                out.append(resized)
            else:
                await self.evict(workload, pod, tracked, now, new_request)
                out.append(pod)
        return out

    async def resize_in_place(self, workload: Workload, pod: Obj, old: GPURequest, new: GPURequest) -> Obj | None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        ledger = self.state.ledger
        try:
            previous = ledger.resize(uid, new)
        except NoFit as exc:
            self.metrics.resizes.labels("no_fit").inc()
            log.info(
                "workload %s/%s: pod %s does not fit its new size in place, to be evicted: %s",
                *workload.key,
                meta.get("name"),
                exc,
            )
            return None
        patch = {
            ann.TFLOPS_REQUEST: format_tflops(new.tflops_request),
            ann.TFLOPS_LIMIT: format_tflops(new.tflops_limit),
            ann.VRAM_REQUEST: format_bytes(new.vram_request),
            ann.VRAM_LIMIT: format_bytes(new.vram_limit),
            ann.COMPUTE_PERCENT_REQUEST: None,
            ann.COMPUTE_PERCENT_LIMIT: None,
        }
        try:
            updated = await self.kube.patch(
                pod_path(meta.get("namespace", ""), meta.get("name", "")),
                {"metadata": {"annotations": patch}},
                PatchType.MERGE,
            )
        except Exception as exc:
            ledger.restore(previous)
            self.metrics.resizes.labels("failed").inc()
            log.warning(
                "workload %s/%s: pod %s: in-place resize failed, rolled back: %s", *workload.key, meta.get("name"), exc
            )
            return None
        ledger.commit(uid)
        self.metrics.resizes.labels("applied").inc()
        up = (new.tflops_request, new.vram_request) > (old.tflops_request, old.vram_request)
        reason = "ResourceScaledUp" if up else "ResourceScaledDown"
        old_t, new_t = format_tflops(old.tflops_request), format_tflops(new.tflops_request)
        old_v, new_v = format_bytes(old.vram_request, exact=False), format_bytes(new.vram_request, exact=False)
        message = f"pod {meta.get('name')}: TFLOPS {old_t} -> {new_t}, VRAM {old_v} -> {new_v} (in place)"
        log.info(
            "workload %s/%s: resized %s to its recommendation",
            *workload.key,
            message,
            extra=action_fields("resize", workload, meta),
        )
        await record_event(self.kube, workload.obj, reason, message)
        await record_event(self.kube, updated, reason, message)
        return updated

    async def evict(self, workload: Workload, pod: Obj, tracked: Tracked, now: datetime, new: GPURequest) -> None:
        meta = pod.get("metadata") or {}
        if tracked.last_eviction is not None and now - tracked.last_eviction < self.eviction_interval:
            return
        # One at a time: wait until earlier replacements are placed and nothing is terminating.
        for other in workload.pods:
            if not (other.get("spec") or {}).get("nodeName") or (other.get("metadata") or {}).get("deletionTimestamp"):
                return
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        }
        try:
            await self.kube.create(pod_path(meta.get("namespace", ""), meta.get("name", ""), "eviction"), body)
        except KubeApiError as exc:
            # 429: a PodDisruptionBudget does not allow it now (the eviction API's answer).
            self.metrics.evictions.labels("refused" if exc.status == 429 else "failed").inc()
            log.info("workload %s/%s: eviction of pod %s refused: %s", *workload.key, meta.get("name"), exc)
            return
        tracked.last_eviction = now
        self.metrics.evictions.labels("evicted").inc()
        message = (
            f"pod {meta.get('name')} evicted to be rescheduled: TFLOPS {format_tflops(new.tflops_request)} / "
            f"VRAM {format_bytes(new.vram_request, exact=False)} no longer fit on its GPUs"
        )
        log.info("workload %s/%s: %s", *workload.key, message, extra=action_fields("evict", workload, meta))
        await record_event(self.kube, workload.obj, "Rescheduled", message)


class OwnerScaler:
    """Replicas through the owner's ``scale`` subresource."""

    def __init__(self, kube: KubeApi, metrics: AutoscaleMetrics | None = None) -> None:
        self.kube = kube
        self.metrics = metrics or AutoscaleMetrics()
        self._replicaset_owner: dict[tuple[str, str], str | None] = {}

    async def scale_path(self, workload: Workload) -> str | None:
        """The ``scale`` subresource of the Deployment or StatefulSet owning the workers."""
        for pod in workload.pods:
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
                if ref.get("kind") == "StatefulSet":
                    return namespaced_path("apps/v1", workload.namespace, "statefulsets", ref["name"], "scale")
                if ref.get("kind") == "ReplicaSet":
                    # A ReplicaSet's owner never changes: look it up once.
                    cache_key = (workload.namespace, ref["name"])
                    if cache_key not in self._replicaset_owner:
                        try:
                            rs = await self.kube.get(
                                namespaced_path("apps/v1", workload.namespace, "replicasets", ref["name"])
                            )
                        except KubeApiError:
                            continue
                        owners = (rs.get("metadata") or {}).get("ownerReferences") or []
                        deployment = next((o["name"] for o in owners if o.get("kind") == "Deployment"), None)
                        self._replicaset_owner[cache_key] = deployment
                    deployment = self._replicaset_owner[cache_key]
                    if deployment:
                        return namespaced_path("apps/v1", workload.namespace, "deployments", deployment, "scale")
        return None

    async def replicas(self, path: str) -> int | None:
        try:
            scale = await self.kube.get(path)
        except KubeApiError:
            return None
        return int((scale.get("spec") or {}).get("replicas") or 0)

    async def scale(self, workload: Workload, tracked: Tracked, path: str, rec: Recommendation, now: datetime) -> None:
        decision = rec.replicas
        assert decision is not None
        direction = "up" if decision.desired > decision.current else "down"
        try:
            await self.kube.patch(path, {"spec": {"replicas": decision.desired}}, PatchType.MERGE)
        except KubeApiError as exc:
            self.metrics.replica_changes.labels(direction, "failed").inc()
            log.warning("workload %s/%s: scaling failed: %s", *workload.key, exc)
            return
        self.metrics.replica_changes.labels(direction, "applied").inc()
        log.info(
            "workload %s/%s: replicas %d -> %d (%s: %s)",
            *workload.key,
            decision.current,
            decision.desired,
            decision.reason,
            decision.message,
            extra=action_fields("scale", workload),
        )
        if decision.desired > decision.current:
            tracked.last_scale_up = now
        else:
            tracked.last_scale_down = now
        reason = "ReplicasScaledUp" if decision.desired > decision.current else "ReplicasScaledDown"
        await record_event(
            self.kube, workload.obj, reason, f"replicas {decision.current} -> {decision.desired}: {decision.message}"
        )
