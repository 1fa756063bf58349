"""Feeding the autoscaler: which workloads exist, and their usage into the bank.

Discovery reads the cluster state (workloads parsed once per version by
:class:`tfsched.allocation.state.ClusterState`, and their worker pods) and
creates the TensorFusionWorkload a pod asks for when none exists.  Ingestion
takes usage as columns straight from the source into the
:class:`~tfsched.autoscale.bank.UsageBank`: pods are resolved to bank slots
once per pod, never per sample.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from tfsched.allocation.state import ClusterState
from tfsched.autoscale.bank import NONE_NS, UsageBank
from tfsched.autoscale.checkpoint import restore_checkpoint
from tfsched.autoscale.columns import UsageColumns
from tfsched.autoscale.ports import UsageSource
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, Resources, ResourceValues
from tfsched.clustermodel.cache import Kind, Obj
from tfsched.clustermodel.gpurequest import GPURequest, RequestError, parse_gpu_request
from tfsched.clustermodel.times import format_time, from_unix_ns
from tfsched.clustermodel.workload import WorkloadView
from tfsched.kubeapi.client import KubeApi, KubeApiError, namespaced_path

log = logging.getLogger(__name__)

TERMINAL = ("Succeeded", "Failed")
HISTORY_POINTS_PER_CHUNK = 60


@dataclass
class Workload:
    """One workload this interval: its object, parsed view and live worker pods."""

    view: WorkloadView
    obj: Obj  # as the API server has it, for status comparisons and events
    pods: list[Obj]  # worker pods, not terminal

    @property
    def namespace(self) -> str:
        return self.view.namespace

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def key(self) -> tuple[str, str]:
        return (self.view.namespace, self.view.name)

    @property
    def config(self) -> AutoScalingConfig:
        assert self.view.config is not None  # discovery keeps only valid workloads
        return self.view.config


@dataclass
class Tracked:
    """What the loop remembers about one workload between intervals."""

    row: int
    cutoff_ns: int = NONE_NS  # samples up to here are already in a restored checkpoint
    last_eviction: datetime | None = None
    last_scale_up: datetime | None = None
    last_scale_down: datetime | None = None
    latest_tflops: dict[str, tuple[datetime, float]] = field(default_factory=dict)


def resources_of(request: GPURequest) -> Resources:
    return Resources(
        requests=ResourceValues(tflops=request.tflops_request, vram=request.vram_request),
        limits=ResourceValues(tflops=request.tflops_limit, vram=request.vram_limit),
    )


def request_of(pod: Obj) -> GPURequest | None:
    try:
        return parse_gpu_request((pod.get("metadata") or {}).get("annotations") or {})
    except RequestError:
        return None


def workload_path(namespace: str, name: str = "", sub: str = "") -> str:
    return namespaced_path(ann.GROUP_VERSION, namespace, ann.WORKLOAD_PLURAL, name, sub)


def _align(moment: datetime, step: timedelta) -> datetime:
    """The first multiple of ``step`` (since the epoch) at or after ``moment``."""
    step_us = max(int(step.total_seconds() * 1_000_000), 1)
    us = int(moment.timestamp() * 1_000_000)
    return datetime.fromtimestamp(-(-us // step_us) * step_us / 1e6, UTC)


def _align_down(moment: datetime, step: timedelta) -> datetime:
    step_us = max(int(step.total_seconds() * 1_000_000), 1)
    us = int(moment.timestamp() * 1_000_000)
    return datetime.fromtimestamp(us // step_us * step_us / 1e6, UTC)


class Feeder:
    """Discovery and ingestion; owns the bank and what is tracked per workload."""

    def __init__(self, state: ClusterState, kube: KubeApi) -> None:
        self.state = state
        self.kube = kube
        self.bank = UsageBank()
        self.tracked: dict[tuple[str, str], Tracked] = {}
        self.pod_workload: dict[tuple[str, str], tuple[str, str]] = {}
        self.last_fetch: datetime | None = None
        self._requests: dict[str, tuple[str, GPURequest | None]] = {}

    # -- discovery -------------------------------------------------------------

    def workloads(self) -> list[Workload]:
        cache = self.state.cache
        pods_by_workload: dict[tuple[str, str], list[Obj]] = {}
        for pod in cache.list(Kind.POD):
            meta = pod.get("metadata") or {}
            name = (meta.get("annotations") or {}).get(ann.WORKLOAD)
            if not name or (pod.get("status") or {}).get("phase") in TERMINAL:
                continue
            pods_by_workload.setdefault((meta.get("namespace", ""), name), []).append(pod)
        out = []
        for key, view in self.state.workloads.items():
            if view.config is None:
                continue  # invalid autoScalingConfig: logged when it was parsed
            obj = cache.get(Kind.WORKLOAD, *key)
            if obj is not None:
                out.append(Workload(view, obj, pods_by_workload.get(key, [])))
        return out

    def pod_request(self, pod: Obj) -> GPURequest | None:
        """A pod's request from its annotations, parsed once per resourceVersion."""
        meta = pod.get("metadata") or {}
        key = meta.get("uid", "")
        version = meta.get("resourceVersion", "")
        cached = self._requests.get(key)
        if cached is None or cached[0] != version or not version:
            cached = self._requests[key] = (version, request_of(pod))
        return cached[1]

    async def create_missing_workloads(self) -> None:
        """A pod that enables autoscaling for a workload with no object gets one,
        built from its annotations (and a WorkloadProfile's config when named)."""
        cache = self.state.cache
        wanted: dict[tuple[str, str], Obj] = {}
        for pod in cache.list(Kind.POD):
            meta = pod.get("metadata") or {}
            notes = meta.get("annotations") or {}
            name = notes.get(ann.WORKLOAD)
            enabled = notes.get(ann.AUTO_RESOURCES) == "true" or notes.get(ann.AUTO_REPLICAS) == "true"
            key = (meta.get("namespace", ""), name or "")
            if name and enabled and cache.get(Kind.WORKLOAD, *key) is None and key not in wanted:
                wanted[key] = pod
        for (namespace, name), pod in wanted.items():
            body = self._workload_from_pod(namespace, name, pod)
            try:
                await self.kube.create(workload_path(namespace), body)
                log.info("created TensorFusionWorkload %s/%s from pod annotations", namespace, name)
            except KubeApiError as exc:
                if exc.status != 409:
                    log.warning("could not create workload %s/%s: %s", namespace, name, exc)

    def _workload_from_pod(self, namespace: str, name: str, pod: Obj) -> Obj:
        notes = (pod.get("metadata") or {}).get("annotations") or {}
        config: dict[str, Any] = {}
        profile_name = notes.get(ann.WORKLOAD_PROFILE)
        profile = self.state.cache.get(Kind.WORKLOAD_PROFILE, namespace, profile_name) if profile_name else None
        if profile is not None:
            config = dict((profile.get("spec") or {}).get("autoScalingConfig") or {})
        auto = dict(config.get("autoSetResources") or {})
        if notes.get(ann.AUTO_RESOURCES) == "true":
            auto["enable"] = True
            auto["targetResource"] = notes.get(ann.AUTO_SCALE_TARGET_RESOURCE, "")
        config["autoSetResources"] = auto
        if notes.get(ann.AUTO_REPLICAS) == "true":
            config["autoSetReplicas"] = {**(config.get("autoSetReplicas") or {}), "enable": True}
        spec: dict[str, Any] = {"autoScalingConfig": config}
        request = request_of(pod)
        if request is not None:
            spec["resources"] = resources_of(request).to_dict()
            spec["gpuCount"] = request.gpu_count
        return {
            "apiVersion": ann.GROUP_VERSION,
            "kind": ann.WORKLOAD_KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "tfsched"}},
            "spec": spec,
        }

    def track(self, workload: Workload) -> Tracked:
        tracked = self.tracked.get(workload.key)
        if tracked is None:
            row = int(self.bank.add_workloads(1)[0])
            tracked = self.tracked[workload.key] = Tracked(row)
            checkpoint = (workload.obj.get("status") or {}).get("histogramCheckpoint")
            if isinstance(checkpoint, Mapping):
                try:
                    tracked.cutoff_ns = restore_checkpoint(self.bank, row, checkpoint)
                    log.info("workload %s/%s: restored histograms from its checkpoint", *workload.key)
                except Exception as exc:  # a bad checkpoint must not stop the loop: start afresh
                    log.warning("workload %s/%s: ignoring unreadable checkpoint: %s", *workload.key, exc)
                    self.bank.reset_workload(row)
                    tracked.cutoff_ns = NONE_NS
        for pod in workload.pods:
            meta = pod.get("metadata") or {}
            self.pod_workload[(meta.get("namespace", ""), meta.get("name", ""))] = workload.key
        return tracked

    def prune(self, workloads: list[Workload]) -> None:
        """Forget parsed pods of objects that are gone."""
        live_pods = {(p.get("metadata") or {}).get("uid") for w in workloads for p in w.pods}
        self._requests = {uid: v for uid, v in self._requests.items() if uid in live_pods}

    # -- usage -----------------------------------------------------------------

    async def fetch(self, source: UsageSource, until: datetime, step: timedelta, history: timedelta) -> bool:
        """Fetch usage since the last fetch (or ``history`` back) up to ``until``.

        Returns whether anything was due.  History comes in chunks, each
        ingested before the next is fetched, so a long history never sits in
        memory as one response.  Raises ``MetricsUnavailable`` from the source.
        """
        # query_range includes both ends: start one step after the last fetch, or
        # its last sample would be counted twice.  On multiples of the step, so
        # every process evaluates Prometheus on the same grid (a restarted loop
        # must see the same points it checkpointed).
        start = _align(self.last_fetch + step if self.last_fetch else until - history, step)
        chunk = step * HISTORY_POINTS_PER_CHUNK
        chunk_start = start
        fetched = 0
        queried = False
        while chunk_start <= until:
            chunk_end = min(chunk_start + chunk, _align_down(until, step))
            if chunk_end < chunk_start:
                break
            queried = True
            usage = await source.samples(chunk_start, chunk_end)
            fetched += len(usage)
            self.ingest(usage)
            self.last_fetch = chunk_end
            chunk_start = chunk_end + step
        if queried and self.last_fetch is not None:
            log.debug("usage from %s to %s: %d samples", format_time(start), format_time(self.last_fetch), fetched)
        return queried

    def ingest(self, usage: UsageColumns) -> int:
        """Feed time-ordered usage to the bank; pods of no tracked workload are skipped."""
        if not len(usage):
            return 0
        slot_of = np.full(len(usage.pods), -1, np.int64)
        cutoff_of = np.full(len(usage.pods), NONE_NS, np.int64)
        tracked_of: list[Tracked | None] = []
        for code, (namespace, pod) in enumerate(usage.pods):
            key = self.pod_workload.get((namespace, pod))
            tracked = self.tracked.get(key) if key else None
            tracked_of.append(tracked)
            if tracked is not None:
                slot_of[code] = self.bank.worker_slot(tracked.row, f"{namespace}/{pod}")
                cutoff_of[code] = tracked.cutoff_ns
        codes = usage.pod
        slots = slot_of[codes]
        # Older samples are in a restored checkpoint already.
        fresh = (slots >= 0) & (usage.time_ns > cutoff_of[codes])
        self._remember_latest(usage, fresh, tracked_of)
        accepted = self.bank.add_samples(slots[fresh], usage.time_ns[fresh], usage.tflops[fresh], usage.vram[fresh])
        return sum(accepted)

    @staticmethod
    def _remember_latest(usage: UsageColumns, fresh: np.ndarray, tracked_of: list[Tracked | None]) -> None:
        """The latest TFLOPS reading per pod, for the replica recommender's utilisation."""
        rows = np.flatnonzero(fresh & ~np.isnan(usage.tflops))
        if rows.size == 0:
            return
        # Rows are in time order: the last row of each pod is its latest.
        codes_reversed = usage.pod[rows][::-1]
        unique_codes, first_in_reversed = np.unique(codes_reversed, return_index=True)
        latest_rows = rows[::-1][first_in_reversed]
        for code, row in zip(unique_codes.tolist(), latest_rows.tolist(), strict=True):
            tracked = tracked_of[code]
            if tracked is None:
                continue
            moment = from_unix_ns(int(usage.time_ns[row]))
            pod = usage.pods[code][1]
            previous = tracked.latest_tflops.get(pod)
            if previous is None or previous[0] <= moment:
                tracked.latest_tflops[pod] = (moment, float(usage.tflops[row]))
