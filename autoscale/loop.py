"""The autoscale loop: one interval as named steps, on the active instance only.

1. **discover**: the workloads (creating the TensorFusionWorkload a pod asks
   for), tracked in the bank (:mod:`tfsched.autoscale.feed`);
2. **fetch usage** since the last fetch into the bank; when the source fails,
   nothing changes and each workload gets a condition saying why;
3. **estimate** every workload in one batch per distinct config;
4. **reconcile** each workload: :func:`tfsched.autoscale.recommend.recommend`
   (pure), the status (:mod:`tfsched.autoscale.status`), the appliers
   (:mod:`tfsched.autoscale.apply`);
5. **checkpoint** the histograms every ``checkpointInterval`` and on shutdown
   (:mod:`tfsched.autoscale.checkpoint`); a restarted loop continues from them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import ValidationError

from tfsched.allocation.state import ClusterState
from tfsched.autoscale.apply import OwnerScaler, PodResizer, action_fields, runs_with
from tfsched.autoscale.bank import UsageBank, estimate_all
from tfsched.autoscale.checkpoint import checkpoint_of
from tfsched.autoscale.estimators import Estimates
from tfsched.autoscale.feed import Feeder, Tracked, Workload, resources_of
from tfsched.autoscale.metrics import AutoscaleMetrics
from tfsched.autoscale.ports import MetricsUnavailable, UsageSource
from tfsched.autoscale.recommend import PreviousStatus, Recommendation, recommend
from tfsched.autoscale.replicas import ReplicaState
from tfsched.autoscale.settings import AutoscaleSettings
from tfsched.autoscale.status import StatusWriter
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, AutoSetResources, Resources, ResourceValues
from tfsched.clustermodel.quantity import MILLI_PER_TFLOPS, format_bytes, format_tflops
from tfsched.kubeapi.client import KubeApi

log = logging.getLogger(__name__)


class Clock:
    """Wall-clock time plus an offset that tests move (``/debug/clock``)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def wall(self) -> datetime:
        """Real time, for fetching usage: Prometheus holds wall-clock samples."""
        return datetime.now(UTC)


def _scales_replicas(config: AutoScalingConfig) -> bool:
    """Whether replicas can change: autoSetReplicas, or a cron rule that sets them."""
    if config.auto_set_replicas.enable:
        return True
    return any(rule.desired_replicas is not None for rule in config.cron_scaling_rules)


def _text(resources: Resources | None) -> str:
    """``TFLOPS 10 / VRAM 4Gi (limits 20 / 8Gi)`` for log lines."""
    if resources is None:
        return "none"
    req, lim = resources.requests, resources.limits
    return (
        f"TFLOPS {format_tflops(req.tflops)} / VRAM {format_bytes(req.vram)}"
        f" (limits {format_tflops(lim.tflops)} / {format_bytes(lim.vram)})"
    )


def _log_cron(workload: Workload, previous: PreviousStatus, rec: Recommendation) -> None:
    """One line when a cron rule takes effect or ends (the status keeps the active one)."""
    before, now = previous.active_cron_rule, rec.active_cron_rule
    if before == now:
        return
    if now is not None:
        log.info(
            "workload %s/%s: cron rule %r applied: resources %s -> %s",
            *workload.key,
            now.name,
            _text(rec.current.to_model()),
            _text(rec.resources_model),
            extra=action_fields("cron_apply", workload),
        )
    else:
        log.info(
            "workload %s/%s: cron rule %r ended: resources %s -> %s",
            *workload.key,
            before.name if before is not None else "",
            _text(rec.current.to_model()),
            _text(rec.resources_model),
            extra=action_fields("cron_revert", workload),
        )


class Autoscaler:
    def __init__(
        self,
        state: ClusterState,
        kube: KubeApi,
        source: UsageSource,
        settings: AutoscaleSettings,
        clock: Clock | None = None,
        metrics: AutoscaleMetrics | None = None,
    ) -> None:
        self.state = state
        self.metrics = metrics or AutoscaleMetrics()
        self.source = source
        self.settings = settings
        self.clock = clock or Clock()
        self.tz = ZoneInfo(settings.time_zone)
        self.feeder = Feeder(state, kube)
        self.status = StatusWriter(kube)
        self.resizer = PodResizer(state, kube, self.feeder, settings.eviction_interval, self.metrics)
        self.owners = OwnerScaler(kube, self.metrics)
        self.last_checkpoint: datetime | None = None
        self.ticks = 0
        self._tick_lock = asyncio.Lock()
        self._max_allowed_now: ResourceValues | None = None

    @property
    def bank(self) -> UsageBank:
        return self.feeder.bank

    # -- one interval ------------------------------------------------------------

    async def tick(self) -> None:
        async with self._tick_lock:
            try:
                await self._tick()
            except Exception:
                self.metrics.intervals.labels("failed").inc()
                raise
            self.metrics.intervals.labels("ok").inc()
            self.ticks += 1

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.step_duration.labels(name).observe(time.perf_counter() - started)

    async def _tick(self) -> None:
        now = self.clock.now()
        started = time.perf_counter()
        with self._step("discover"):
            workloads = await self._discover()
        self.metrics.workloads_seen({w.key for w in workloads})
        try:
            with self._step("fetch"):
                queried = await self._fetch_usage()
        except MetricsUnavailable as exc:
            log.warning("usage metrics unavailable: %s", exc)
            self.metrics.prometheus_errors.inc()
            for workload in workloads:
                self.metrics.workload_metrics.labels(*workload.key).set(0)
                await self.status.report_metrics(workload, now, False, str(exc))
            return
        if queried:
            for workload in workloads:
                self.metrics.workload_metrics.labels(*workload.key).set(1)
        self._max_allowed_now = self._max_allowed()
        with self._step("estimate"):
            estimates = self._estimate_all(workloads)
        cron_active = failed = 0
        with self._step("reconcile"):
            for workload in workloads:
                try:
                    rec = await self.reconcile(
                        workload, now, metrics_ok=True if queried else None, estimates=estimates.get(workload.key)
                    )
                except Exception:
                    failed += 1
                    log.exception("workload %s/%s: reconcile failed", *workload.key)
                    continue
                if rec is not None and rec.active_cron_rule is not None:
                    cron_active += 1
        self.metrics.cron_rules_active.set(cron_active)
        if self.last_checkpoint is None or now - self.last_checkpoint >= self.settings.checkpoint_interval:
            with self._step("checkpoint"):
                await self.checkpoint(workloads, now)
        log.info(
            "autoscale interval: %d workloads, %d failed, %d with a cron rule active, usage %s, %.2f s",
            len(workloads),
            failed,
            cron_active,
            "read" if queried else "not due",
            time.perf_counter() - started,
        )

    async def _discover(self) -> list[Workload]:
        await self.feeder.create_missing_workloads()
        workloads = self.status.freshest(self.feeder.workloads())
        for workload in workloads:
            self.feeder.track(workload)
        self.feeder.prune(workloads)
        return workloads

    async def _fetch_usage(self) -> bool:
        # Usage is fetched by wall-clock time (what Prometheus holds); ``now`` is
        # the loop's clock, which decides cron windows and cooldowns.
        metrics = self.settings.metrics
        return await self.feeder.fetch(self.source, self.clock.wall(), metrics.step, metrics.history_length)

    def _estimate_all(self, workloads: list[Workload]) -> dict[tuple[str, str], Estimates]:
        """Target and bounds of every workload, in one numba pass per distinct
        ``autoSetResources`` (the same numbers as the per-workload estimators)."""
        groups: dict[AutoSetResources, list[Workload]] = {}
        for workload in workloads:
            groups.setdefault(workload.config.auto_set_resources, []).append(workload)
        out: dict[tuple[str, str], Estimates] = {}
        tracked = self.feeder.tracked
        for config, members in groups.items():
            rows = np.array([tracked[w.key].row for w in members], np.int64)
            batch = estimate_all(self.bank, config, rows)
            for i, workload in enumerate(members):
                out[workload.key] = batch.estimates(i)
        return out

    # -- one workload ------------------------------------------------------------

    def _current(self, workload: Workload) -> Resources | None:
        """What the workers run with now: the most common request among them."""
        requests = [r for r in map(self.feeder.pod_request, workload.pods) if r is not None]
        if not requests:
            return None
        amounts = [(r.tflops_request, r.tflops_limit, r.vram_request, r.vram_limit) for r in requests]
        common = Counter(amounts).most_common(1)[0][0]
        return resources_of(requests[amounts.index(common)])

    @staticmethod
    def _original(workload: Workload) -> Resources | None:
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
        pod_requests = map(self.feeder.pod_request, workload.pods)
        limits = [r.tflops_limit for r in pod_requests if r is not None and r.tflops_limit]
        recent = [v for t, v in tracked.latest_tflops.values() if now - t <= window]
        utilization = None
        if recent and limits:
            utilization = 100.0 * (sum(recent) / len(recent)) / (sum(limits) / len(limits))
        return ReplicaState(replicas, utilization, tracked.last_scale_up, tracked.last_scale_down)

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
        tracked = self.feeder.tracked[workload.key]
        original = self._original(workload)
        current = self._current(workload) or original
        if current is None:
            return None
        owner = replicas = None
        if _scales_replicas(workload.config):
            owner = await self.owners.scale_path(workload)
            replicas = await self.owners.replicas(owner) if owner else None
        previous = PreviousStatus.from_status(workload.view.status)
        rec = recommend(
            workload.config,
            self.bank.summary(tracked.row),
            current,
            now,
            original=original or current,
            max_allowed=self._max_allowed_now or self._max_allowed(),
            replicas=self._replica_state(workload, tracked, now, replicas),
            previous=previous,
            tz=self.tz,
            estimates=estimates,
        )
        self.metrics.recommendations.labels("true" if rec.changed else "false").inc()
        _log_cron(workload, previous, rec)
        log.debug(
            "workload %s/%s: current %s, recommended %s%s",
            *workload.key,
            _text(current),
            _text(rec.resources_model),
            "" if rec.to_apply is None else " (to apply)",
        )
        fragment = rec.to_status()
        fragment.pop("desiredReplicas", None)  # not a TensorFusion status field
        applied_pods = workload.pods
        if rec.to_apply is not None:
            await self.status.write(workload, fragment, now, None)  # new pods see it first
            applied_pods = await self.resizer.apply(workload, rec, tracked, now)
        target = rec.resources.to_model()
        fragment["appliedRecommendedReplicas"] = sum(
            1 for p in applied_pods if runs_with(self.feeder.pod_request(p), target)
        )
        fragment["workerCount"] = len(workload.pods)
        await self.status.write(workload, fragment, now, metrics_ok)
        if rec.replicas is not None and rec.replicas.changes and owner:
            await self.owners.scale(workload, tracked, owner, rec, now)
        return rec

    # -- checkpoints and running ---------------------------------------------------

    async def checkpoint(self, workloads: list[Workload], now: datetime) -> None:
        for workload in workloads:
            tracked = self.feeder.tracked.get(workload.key)
            if tracked is None or self.bank.count[tracked.row] == 0:
                continue
            await self.status.patch(workload, {"histogramCheckpoint": checkpoint_of(self.bank, tracked.row)})
        self.last_checkpoint = now

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
            await self.checkpoint(self.feeder.workloads(), self.clock.now())
        except Exception as exc:
            log.warning("final checkpoint failed: %s", exc)


def warm_up() -> None:
    """Compile (or load) the autoscaler's numba kernels: the banks' and the
    Prometheus number parser's.  Run off the event loop before the loop starts."""
    from tfsched.autoscale import bank, numbers

    bank.warm_up()
    numbers.parse_numbers(b"1.5,2e3")
