"""The autoscale loop: usage → recommendation → status → pods (the I/O edge).

Each interval, on the leader only:

1. find the workloads (TensorFusionWorkloads, and pods that enable autoscaling
   for a workload that has no object yet, which gets one created);
2. fetch the usage since the last fetch from Prometheus and feed the
   histograms (:class:`tfsched.autoscale.bank.UsageBank`); when Prometheus fails,
   nothing changes and each workload gets a condition saying why;
3. per workload, run :func:`tfsched.autoscale.recommend.recommend` and write
   ``status`` through the status subresource;
4. when applying is enabled, resize worker pods in place where the new request
   fits on the GPUs they hold (through the same ledger bind uses), evict one
   pod at a time where it does not, and patch the owner's ``scale`` for
   replica changes;
5. every ``checkpointInterval`` (and on shutdown) save the histograms into the
   workload's ``status.histogramCheckpoint`` in VPA's checkpoint shape; a
   restarted loop loads them and continues where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import ValidationError
from tfsched.allocation.ledger import NoFit
from tfsched.allocation.state import ClusterState
from tfsched.autoscale.bank import NONE_NS, UsageBank, estimate_all
from tfsched.autoscale.estimators import Estimates
from tfsched.autoscale.histogram import DecayingHistogram
from tfsched.autoscale.prometheus import MetricsUnavailable, PrometheusSource, UsageSample
from tfsched.autoscale.recommend import Condition, PreviousStatus, Recommendation, recommend, transition_time
from tfsched.autoscale.replicas import ReplicaState
from tfsched.autoscale.settings import AutoscaleSettings
from tfsched.autoscale.usage import HALF_LIFE, TFLOPS_OPTIONS, VRAM_OPTIONS
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, AutoSetResources, Resources, ResourceValues
from tfsched.clustermodel.cache import Kind, Obj
from tfsched.clustermodel.gpurequest import GPURequest, RequestError, parse_gpu_request
from tfsched.clustermodel.quantity import MILLI_PER_TFLOPS, format_bytes, format_tflops
from tfsched.clustermodel.times import format_micro_time, format_time, from_unix_ns, parse_time_or_none, to_unix_ns
from tfsched.kubeapi.client import KubeApiError, KubeClient, PatchType, pod_path
from tfsched.kubeapi.events import record_event

log = logging.getLogger(__name__)

CONDITION_METRICS_AVAILABLE = "MetricsAvailable"
REASON_METRICS_UNAVAILABLE = "MetricsUnavailable"
REASON_METRICS_OK = "MetricsQueried"
TERMINAL = ("Succeeded", "Failed")
HISTORY_POINTS_PER_CHUNK = 60


def workload_path(namespace: str, name: str, sub: str = "") -> str:
    base = f"/apis/{ann.GROUP_VERSION}/namespaces/{namespace}/{ann.WORKLOAD_PLURAL}"
    return f"{base}/{name}" + (f"/{sub}" if sub else "")


class Clock:
    """Wall-clock time plus an offset that tests move (``/debug/clock``)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def wall(self) -> datetime:
        """Real time, for fetching usage: Prometheus holds wall-clock samples."""
        return datetime.now(UTC)


@dataclass
class Workload:
    namespace: str
    name: str
    obj: Obj
    config: AutoScalingConfig
    pods: list[Obj]  # worker pods, not terminal

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass
class Tracked:
    """What the loop remembers about one workload between intervals."""

    row: int
    cutoff_ns: int = NONE_NS  # samples up to here are already in a restored checkpoint
    last_eviction: datetime | None = None
    last_scale_up: datetime | None = None
    last_scale_down: datetime | None = None
    latest_tflops: dict[str, tuple[datetime, float]] = field(default_factory=dict)


def _resources_of(request: GPURequest) -> Resources:
    return Resources(
        requests=ResourceValues(tflops=request.tflops_request, vram=request.vram_request),
        limits=ResourceValues(tflops=request.tflops_limit, vram=request.vram_limit),
    )


def _request_of(pod: Obj) -> GPURequest | None:
    try:
        return parse_gpu_request((pod.get("metadata") or {}).get("annotations") or {})
    except RequestError:
        return None


class Autoscaler:
    def __init__(
        self,
        state: ClusterState,
        client: KubeClient,
        source: PrometheusSource,
        settings: AutoscaleSettings,
        clock: Clock | None = None,
    ) -> None:
        self.state = state
        self.client = client
        self.source = source
        self.settings = settings
        self.clock = clock or Clock()
        self.tz = ZoneInfo(settings.time_zone)
        self.bank = UsageBank()
        self.tracked: dict[tuple[str, str], Tracked] = {}
        self.pod_workload: dict[tuple[str, str], tuple[str, str]] = {}
        self.last_fetch: datetime | None = None
        self.last_checkpoint: datetime | None = None
        self.ticks = 0
        self._tick_lock = asyncio.Lock()
        self._replicaset_owner: dict[tuple[str, str], str | None] = {}
        self._configs: dict[tuple[Any, Any], AutoScalingConfig] = {}
        self._requests: dict[str, tuple[str, GPURequest | None]] = {}
        self._max_allowed_now: ResourceValues | None = None

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
        for obj in cache.list(Kind.WORKLOAD):
            meta = obj.get("metadata") or {}
            raw = (obj.get("spec") or {}).get("autoScalingConfig") or {}
            try:
                config = self._config_of(obj, raw)
            except ValidationError as exc:
                log.warning(
                    "workload %s/%s: invalid autoScalingConfig: %s", meta.get("namespace"), meta.get("name"), exc
                )
                continue
            key = (meta.get("namespace", ""), meta.get("name", ""))
            out.append(Workload(key[0], key[1], obj, config, pods_by_workload.get(key, [])))
        return out

    def _config_of(self, obj: Obj, raw: Any) -> AutoScalingConfig:
        """The validated autoScalingConfig, re-validated only when the spec changes
        (a new ``metadata.generation``)."""
        meta = obj.get("metadata") or {}
        version = (meta.get("uid"), meta.get("generation") or meta.get("resourceVersion"))
        cached = self._configs.get(version)
        if cached is None:
            cached = self._configs[version] = AutoScalingConfig.model_validate(raw)
        return cached

    def _pod_request(self, pod: Obj) -> GPURequest | None:
        """A pod's request from its annotations, parsed once per resourceVersion."""
        meta = pod.get("metadata") or {}
        key = meta.get("uid", "")
        version = meta.get("resourceVersion", "")
        cached = self._requests.get(key)
        if cached is None or cached[0] != version or not version:
            cached = self._requests[key] = (version, _request_of(pod))
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
                await self.client.create(workload_path(namespace, "").rstrip("/"), body)
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
        request = _request_of(pod)
        if request is not None:
            spec["resources"] = _resources_of(request).to_dict()
            spec["gpuCount"] = request.gpu_count
        return {
            "apiVersion": ann.GROUP_VERSION,
            "kind": ann.WORKLOAD_KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "tfsched"}},
            "spec": spec,
        }

    # -- usage -----------------------------------------------------------------

    def track(self, workload: Workload) -> Tracked:
        tracked = self.tracked.get(workload.key)
        if tracked is None:
            row = int(self.bank.add_workloads(1)[0])
            tracked = self.tracked[workload.key] = Tracked(row)
            self._restore(workload, tracked)
        for pod in workload.pods:
            meta = pod.get("metadata") or {}
            self.pod_workload[(meta.get("namespace", ""), meta.get("name", ""))] = workload.key
        return tracked

    def _restore(self, workload: Workload, tracked: Tracked) -> None:
        checkpoint = (workload.obj.get("status") or {}).get("histogramCheckpoint")
        if not isinstance(checkpoint, Mapping):
            return
        try:
            for bank, options, key in (
                (self.bank.tflops, TFLOPS_OPTIONS, "tflops"),
                (self.bank.vram, VRAM_OPTIONS, "vram"),
            ):
                histogram = DecayingHistogram(options, HALF_LIFE)
                histogram.load_from_checkpoint(checkpoint.get(key))
                bank.load_histogram(tracked.row, histogram)
            first = parse_time_or_none(checkpoint.get("firstSampleStart"))
            last = parse_time_or_none(checkpoint.get("lastSampleStart"))
            if first is not None and last is not None:
                self.bank.first[tracked.row] = to_unix_ns(first)
                self.bank.last[tracked.row] = to_unix_ns(last)
                tracked.cutoff_ns = to_unix_ns(last)
            self.bank.count[tracked.row] = int(checkpoint.get("totalSamplesCount") or 0)
            log.info("workload %s/%s: restored histograms from its checkpoint", *workload.key)
        except Exception as exc:  # a bad checkpoint must not stop the loop: start afresh
            log.warning("workload %s/%s: ignoring unreadable checkpoint: %s", *workload.key, exc)
            self.bank.reset_workload(tracked.row)
            tracked.cutoff_ns = NONE_NS

    def ingest(self, samples: list[UsageSample]) -> int:
        """Feed samples (time-ordered) to the bank; pods of no tracked workload are skipped.

        Pods are resolved to bank slots once per pod, not per sample, and the
        samples become arrays with one pass, since a history load brings
        millions of them.
        """
        targets: dict[tuple[str, str], tuple[Tracked, int] | None] = {}
        kept: list[UsageSample] = []
        slots = array("q")  # 8 bytes an entry, not a Python int object each
        cutoffs = array("q")
        for sample in samples:
            pod = (sample.namespace, sample.pod)
            target = targets.get(pod, False)
            if target is False:
                key = self.pod_workload.get(pod)
                tracked = self.tracked.get(key) if key else None
                target = targets[pod] = (
                    (tracked, self.bank.worker_slot(tracked.row, f"{pod[0]}/{pod[1]}")) if tracked else None
                )
            if target is None:
                continue
            kept.append(sample)
            slots.append(target[1])
            cutoffs.append(target[0].cutoff_ns)
        if not kept:
            return 0
        times = np.fromiter((to_unix_ns(s.time) for s in kept), np.int64, len(kept))
        tflops = np.fromiter((np.nan if s.tflops is None else s.tflops for s in kept), np.float64, len(kept))
        vram = np.fromiter((np.nan if s.vram is None else s.vram for s in kept), np.float64, len(kept))
        slot_array = np.frombuffer(slots, np.int64)
        fresh = times > np.frombuffer(cutoffs, np.int64)  # older ones are in a restored checkpoint
        self._remember_latest(kept, tflops, fresh, targets)
        order = np.argsort(times[fresh], kind="stable")
        accepted = self.bank.add_samples(
            slot_array[fresh][order], times[fresh][order], tflops[fresh][order], vram[fresh][order]
        )
        return sum(accepted)

    def _remember_latest(
        self,
        kept: list[UsageSample],
        tflops: np.ndarray,
        fresh: np.ndarray,
        targets: Mapping[tuple[str, str], tuple[Tracked, int] | None],
    ) -> None:
        """The latest TFLOPS reading per pod, for the replica recommender's utilisation."""
        latest: dict[tuple[str, str], int] = {}
        for index in np.flatnonzero(fresh & ~np.isnan(tflops)).tolist():
            sample = kept[index]
            latest[(sample.namespace, sample.pod)] = index  # samples come in time order
        for pod, index in latest.items():
            target = targets[pod]
            if target is None:
                continue
            tracked = target[0]
            sample = kept[index]
            previous = tracked.latest_tflops.get(pod[1])
            if previous is None or previous[0] <= sample.time:
                tracked.latest_tflops[pod[1]] = (sample.time, float(tflops[index]))

    # -- one interval ------------------------------------------------------------

    async def tick(self) -> None:
        async with self._tick_lock:
            await self._tick()
            self.ticks += 1

    async def _tick(self) -> None:
        now = self.clock.now()
        await self.create_missing_workloads()
        workloads = self.workloads()
        for workload in workloads:
            self.track(workload)
        self._prune_caches(workloads)
        step = self.settings.metrics.step
        # query_range includes both ends: start one step after the last fetch, or
        # its last sample would be counted twice.
        # Usage is fetched by wall-clock time (what Prometheus holds); ``now`` is
        # the loop's clock, which decides cron windows and cooldowns.
        fetch_until = self.clock.wall()
        start = self.last_fetch + step if self.last_fetch else fetch_until - self.settings.metrics.history_length
        # On multiples of the step, so every process evaluates Prometheus on the
        # same grid (a restarted loop must see the same points it checkpointed).
        start = _align(start, step)
        try:
            # History comes in chunks, each ingested before the next is fetched,
            # so a long history never sits in memory as one response.
            chunk = step * HISTORY_POINTS_PER_CHUNK
            chunk_start = start
            fetched = 0
            queried = False
            while chunk_start <= fetch_until:
                chunk_end = min(chunk_start + chunk, _align_down(fetch_until, step))
                if chunk_end < chunk_start:
                    break
                queried = True
                samples = await self.source.samples(chunk_start, chunk_end)
                fetched += len(samples)
                self.ingest(samples)
                self.last_fetch = chunk_end
                chunk_start = chunk_end + step
            if queried:
                log.info("usage from %s to %s: %d samples", format_time(start), format_time(self.last_fetch), fetched)
        except MetricsUnavailable as exc:
            log.warning("usage metrics unavailable: %s", exc)
            for workload in workloads:
                await self._report_metrics(workload, now, False, str(exc))
            return
        self._max_allowed_now = self._max_allowed()
        estimates = self._estimate_all(workloads)
        for workload in workloads:
            try:
                await self.reconcile(
                    workload, now, metrics_ok=True if queried else None, estimates=estimates.get(workload.key)
                )
            except Exception:
                log.exception("workload %s/%s: reconcile failed", *workload.key)
        due = self.last_checkpoint is None or now - self.last_checkpoint >= self.settings.checkpoint_interval
        if due:
            await self.checkpoint(workloads, now)

    def _prune_caches(self, workloads: list[Workload]) -> None:
        """Forget parsed pods and configs of objects that are gone."""
        live_pods = {(p.get("metadata") or {}).get("uid") for w in workloads for p in w.pods}
        self._requests = {uid: v for uid, v in self._requests.items() if uid in live_pods}
        live = {((w.obj.get("metadata") or {}).get("uid")) for w in workloads}
        self._configs = {k: v for k, v in self._configs.items() if k[0] in live}

    def _current(self, workload: Workload) -> Resources | None:
        """What the workers run with now: the most common request among them."""
        requests = [r for r in map(self._pod_request, workload.pods) if r is not None]
        if not requests:
            return None
        common = Counter((r.tflops_request, r.tflops_limit, r.vram_request, r.vram_limit) for r in requests)
        t_req, t_lim, v_req, v_lim = common.most_common(1)[0][0]
        return Resources(
            requests=ResourceValues(tflops=t_req, vram=v_req), limits=ResourceValues(tflops=t_lim, vram=v_lim)
        )

    def _original(self, workload: Workload) -> Resources | None:
        raw = (workload.obj.get("spec") or {}).get("resources")
        if not raw:
            return None
        try:
            return Resources.model_validate(raw)
        except ValidationError:
            return None

    def _max_allowed(self) -> ResourceValues:
        """No request may exceed the largest usable GPU: beyond it no pod could be placed."""
        inv = self.state.inventory
        usable = inv.usable
        if not usable.any():
            return ResourceValues(tflops=0.0, vram=0.0)
        return ResourceValues(
            tflops=float(inv.cap_t[usable].max()) / MILLI_PER_TFLOPS, vram=float(inv.cap_v[usable].max())
        )

    def _replica_state(
        self, workload: Workload, tracked: Tracked, now: datetime, replicas: int | None
    ) -> ReplicaState | None:
        if replicas is None:
            return None
        window = workload.config.auto_set_replicas.evaluation_period
        limits = [r.tflops_limit for r in map(self._pod_request, workload.pods) if r is not None and r.tflops_limit]
        recent = [v for t, v in tracked.latest_tflops.values() if now - t <= window]
        utilization = None
        if recent and limits:
            utilization = 100.0 * (sum(recent) / len(recent)) / (sum(limits) / len(limits))
        return ReplicaState(replicas, utilization, tracked.last_scale_up, tracked.last_scale_down)

    def _estimate_all(self, workloads: list[Workload]) -> dict[tuple[str, str], Estimates]:
        """Target and bounds of every workload, in one numba pass per distinct
        ``autoSetResources`` (the same numbers as the per-workload estimators)."""
        groups: dict[AutoSetResources, list[Workload]] = {}
        for workload in workloads:
            groups.setdefault(workload.config.auto_set_resources, []).append(workload)
        out: dict[tuple[str, str], Estimates] = {}
        for config, members in groups.items():
            rows = np.array([self.tracked[w.key].row for w in members], np.int64)
            batch = estimate_all(self.bank, config, rows)
            for i, workload in enumerate(members):
                out[workload.key] = batch.estimates(i)
        return out

    async def reconcile(
        self,
        workload: Workload,
        now: datetime,
        *,
        metrics_ok: bool | None = None,
        estimates: Estimates | None = None,
    ) -> Recommendation | None:
        """One workload: recommend, write status, apply.  ``metrics_ok``: whether
        this interval read Prometheus (None: nothing was due, say nothing)."""
        tracked = self.tracked[workload.key]
        original = self._original(workload)
        current = self._current(workload) or original
        if current is None:
            return None
        status = workload.obj.get("status") or {}
        owner = replicas = None
        if _scales_replicas(workload.config):
            owner = await self._owner_scale_path(workload)
            replicas = await self._owner_replicas(owner) if owner else None
        rec = recommend(
            workload.config,
            self.bank.summary(tracked.row),
            current,
            now,
            original=original or current,
            max_allowed=self._max_allowed_now or self._max_allowed(),
            replicas=self._replica_state(workload, tracked, now, replicas),
            previous=PreviousStatus.from_status(status),
            tz=self.tz,
            estimates=estimates,
        )
        fragment = rec.to_status()
        fragment.pop("desiredReplicas", None)  # not a TensorFusion status field
        applied_pods = workload.pods
        if rec.to_apply is not None:
            await self._write_status(workload, fragment, status, now, None)  # new pods see it first
            applied_pods = await self.apply(workload, rec, tracked, now)
        target = rec.resources.to_model()
        fragment["appliedRecommendedReplicas"] = sum(
            1 for p in applied_pods if _runs_with(self._pod_request(p), target)
        )
        fragment["workerCount"] = len(workload.pods)
        await self._write_status(workload, fragment, status, now, metrics_ok)
        if rec.replicas is not None and rec.replicas.changes and owner:
            await self._scale(workload, tracked, owner, rec, now)
        return rec

    async def _write_status(
        self,
        workload: Workload,
        fragment: dict[str, Any],
        old: Mapping[str, Any],
        now: datetime,
        metrics_ok: bool | None,
    ) -> None:
        status = dict(fragment)
        fresh = fragment.get("conditions") or []
        # A recommendation stands until a new one replaces it, and so does the condition saying why.
        replaced = {c.get("type") for c in fresh} | ({CONDITION_METRICS_AVAILABLE} if metrics_ok is not None else set())
        conditions = [c for c in (old.get("conditions") or []) if c.get("type") not in replaced]
        conditions.extend(fresh)
        if metrics_ok is not None:
            conditions.append(metrics_available_condition(old, now, metrics_ok, "usage history read from Prometheus"))
        status["conditions"] = conditions
        if all(old.get(k) == v for k, v in status.items()):
            return
        await self._patch_status(workload, status)

    async def _patch_status(self, workload: Workload, status: dict[str, Any]) -> None:
        try:
            updated = await self.client.patch(
                workload_path(workload.namespace, workload.name, "status"), {"status": status}, PatchType.MERGE
            )
            workload.obj = updated
        except KubeApiError as exc:
            log.warning("workload %s/%s: status update failed: %s", *workload.key, exc)

    async def _report_metrics(self, workload: Workload, now: datetime, ok: bool, message: str) -> None:
        old = workload.obj.get("status") or {}
        conditions = [c for c in (old.get("conditions") or []) if c.get("type") != CONDITION_METRICS_AVAILABLE]
        conditions.append(metrics_available_condition(old, now, ok, message))
        if conditions != (old.get("conditions") or []):
            await self._patch_status(workload, {"conditions": conditions})

    # -- applying ------------------------------------------------------------------

    async def apply(self, workload: Workload, rec: Recommendation, tracked: Tracked, now: datetime) -> list[Obj]:
        """Bring each bound worker to ``rec.to_apply``: in place where it fits,
        else evict (one pod per workload at a time).  Returns the pods as they are now."""
        target = rec.to_apply.to_model() if rec.to_apply is not None else None
        if target is None:
            return workload.pods
        out: list[Obj] = []
        for pod in workload.pods:
            meta = pod.get("metadata") or {}
            if (
                not (pod.get("spec") or {}).get("nodeName")
                or meta.get("deletionTimestamp")
                or _runs_with(self._pod_request(pod), target)
            ):
                out.append(pod)
                continue
            request = self._pod_request(pod)
            if request is None:
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
            resized = await self._resize_in_place(workload, pod, request, new_request)
            if resized is not None:
                out.append(resized)
            else:
                await self._evict(workload, pod, tracked, now, new_request)
                out.append(pod)
        return out

    async def _resize_in_place(self, workload: Workload, pod: Obj, old: GPURequest, new: GPURequest) -> Obj | None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        ledger = self.state.ledger
        try:
            previous = ledger.resize(uid, new)
        except NoFit as exc:
            log.info("pod %s/%s: new request does not fit in place: %s", meta.get("namespace"), meta.get("name"), exc)
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
            updated = await self.client.patch(
                pod_path(meta.get("namespace", ""), meta.get("name", "")),
                {"metadata": {"annotations": patch}},
                PatchType.MERGE,
            )
        except Exception as exc:
            ledger.restore(previous)
            log.warning(
                "pod %s/%s: in-place resize failed, rolled back: %s", meta.get("namespace"), meta.get("name"), exc
            )
            return None
        ledger.commit(uid)
        up = (new.tflops_request, new.vram_request) > (old.tflops_request, old.vram_request)
        reason = "ResourceScaledUp" if up else "ResourceScaledDown"
        old_t, new_t = format_tflops(old.tflops_request), format_tflops(new.tflops_request)
        old_v, new_v = format_bytes(old.vram_request), format_bytes(new.vram_request)
        message = f"pod {meta.get('name')}: TFLOPS {old_t} -> {new_t}, VRAM {old_v} -> {new_v} (in place)"
        await record_event(self.client, workload.obj, reason, message)
        await record_event(self.client, updated, reason, message)
        return updated

    async def _evict(self, workload: Workload, pod: Obj, tracked: Tracked, now: datetime, new: GPURequest) -> None:
        meta = pod.get("metadata") or {}
        if tracked.last_eviction is not None and now - tracked.last_eviction < self.settings.eviction_interval:
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
            await self.client.create(pod_path(meta.get("namespace", ""), meta.get("name", ""), "eviction"), body)
        except KubeApiError as exc:
            log.info("pod %s/%s: eviction refused: %s", meta.get("namespace"), meta.get("name"), exc)
            return
        tracked.last_eviction = now
        message = (
            f"pod {meta.get('name')} evicted to be rescheduled: TFLOPS {format_tflops(new.tflops_request)} / "
            f"VRAM {format_bytes(new.vram_request)} no longer fit on its GPUs"
        )
        log.info("%s/%s: %s", *workload.key, message)
        await record_event(self.client, workload.obj, "Rescheduled", message)

    # -- replicas --------------------------------------------------------------------

    async def _owner_scale_path(self, workload: Workload) -> str | None:
        """The ``scale`` subresource of the Deployment or StatefulSet owning the workers."""
        for pod in workload.pods:
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
                if ref.get("kind") == "StatefulSet":
                    return f"/apis/apps/v1/namespaces/{workload.namespace}/statefulsets/{ref['name']}/scale"
                if ref.get("kind") == "ReplicaSet":
                    # A ReplicaSet's owner never changes: look it up once.
                    cache_key = (workload.namespace, ref["name"])
                    if cache_key not in self._replicaset_owner:
                        try:
                            rs = await self.client.get(
                                f"/apis/apps/v1/namespaces/{workload.namespace}/replicasets/{ref['name']}"
                            )
                        except KubeApiError:
                            continue
                        owners = (rs.get("metadata") or {}).get("ownerReferences") or []
                        deployment = next((o["name"] for o in owners if o.get("kind") == "Deployment"), None)
                        self._replicaset_owner[cache_key] = deployment
                    deployment = self._replicaset_owner[cache_key]
                    if deployment:
                        return f"/apis/apps/v1/namespaces/{workload.namespace}/deployments/{deployment}/scale"
        return None

    async def _owner_replicas(self, path: str) -> int | None:
        try:
            scale = await self.client.get(path)
        except KubeApiError:
            return None
        return int((scale.get("spec") or {}).get("replicas") or 0)

    async def _scale(self, workload: Workload, tracked: Tracked, path: str, rec: Recommendation, now: datetime) -> None:
        decision = rec.replicas
        assert decision is not None
        try:
            await self.client.patch(path, {"spec": {"replicas": decision.desired}}, PatchType.MERGE)
        except KubeApiError as exc:
            log.warning("workload %s/%s: scaling failed: %s", *workload.key, exc)
            return
        if decision.desired > decision.current:
            tracked.last_scale_up = now
        else:
            tracked.last_scale_down = now
        reason = "ReplicasScaledUp" if decision.desired > decision.current else "ReplicasScaledDown"
        await record_event(
            self.client, workload.obj, reason, f"replicas {decision.current} -> {decision.desired}: {decision.message}"
        )

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint_of(self, tracked: Tracked) -> dict[str, Any]:
        row = tracked.row
        first, last = int(self.bank.first[row]), int(self.bank.last[row])
        return {
            "version": "v3",
            "tflops": self.bank.tflops.to_histogram(row).save_to_checkpoint(),
            "vram": self.bank.vram.to_histogram(row).save_to_checkpoint(),
            # Microseconds, not metav1.Time's whole seconds: the confidence of the
            # bounds depends on the span, and a restart must not move them.
            "firstSampleStart": None if first == NONE_NS else format_micro_time(from_unix_ns(first)),
            "lastSampleStart": None if last == NONE_NS else format_micro_time(from_unix_ns(last)),
            "totalSamplesCount": int(self.bank.count[row]),
        }

    async def checkpoint(self, workloads: list[Workload], now: datetime) -> None:
        for workload in workloads:
            tracked = self.tracked.get(workload.key)
            if tracked is None or self.bank.count[tracked.row] == 0:
                continue
            await self._patch_status(workload, {"histogramCheckpoint": self.checkpoint_of(tracked)})
        self.last_checkpoint = now

    # -- running ---------------------------------------------------------------------------

    async def run(self, leading: asyncio.Event | None = None) -> None:
        while True:
            if leading is not None:
                await leading.wait()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("autoscale interval failed")
            await asyncio.sleep(self.settings.interval.total_seconds())

    async def shutdown(self) -> None:
        """Save the histograms so a successor continues with them."""
        try:
            await self.checkpoint(self.workloads(), self.clock.now())
        except Exception as exc:
            log.warning("final checkpoint failed: %s", exc)


def _scales_replicas(config: AutoScalingConfig) -> bool:
    """Whether replicas can change: autoSetReplicas, or a cron rule that sets them."""
    if config.auto_set_replicas.enable:
        return True
    return any(rule.desired_replicas is not None for rule in config.cron_scaling_rules)


def _runs_with(request: GPURequest | None, target: Resources) -> bool:
    if request is None:
        return False
    return (
        abs(request.tflops_request - target.requests.tflops) < 1e-6
        and abs(request.tflops_limit - target.limits.tflops) < 1e-6
        and abs(request.vram_request - target.requests.vram) < 1
        and abs(request.vram_limit - target.limits.vram) < 1
    )


def metrics_available_condition(old: Mapping[str, Any], now: datetime, ok: bool, message: str) -> dict[str, str]:
    """The MetricsAvailable condition, keeping its transition time while the status holds."""
    status = "True" if ok else "False"
    return Condition(
        type=CONDITION_METRICS_AVAILABLE,
        status=status,
        reason=REASON_METRICS_OK if ok else REASON_METRICS_UNAVAILABLE,
        message=message if ok else f"usage metrics unavailable, nothing changed: {message}",
        last_transition_time=transition_time(old.get("conditions") or (), CONDITION_METRICS_AVAILABLE, status, now),
    ).to_dict()


def _align(moment: datetime, step: timedelta) -> datetime:
    """The first multiple of ``step`` (since the epoch) at or after ``moment``."""
    step_us = max(int(step.total_seconds() * 1_000_000), 1)
    us = int(moment.timestamp() * 1_000_000)
    return datetime.fromtimestamp(-(-us // step_us) * step_us / 1e6, UTC)


def _align_down(moment: datetime, step: timedelta) -> datetime:
    step_us = max(int(step.total_seconds() * 1_000_000), 1)
    us = int(moment.timestamp() * 1_000_000)
    return datetime.fromtimestamp(us // step_us * step_us / 1e6, UTC)
