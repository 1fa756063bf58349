"""Prometheus metrics of the autoscaler, in the process's registry (``extender.metrics.new_registry``).

Cardinality: counters are labelled by step, result or direction (fixed sets);
the one per-workload series, ``tfsched_autoscaler_workload_metrics_available``,
has a series per TensorFusionWorkload (namespace, workload) and is removed
when the workload goes.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STEPS = ("discover", "fetch", "estimate", "reconcile", "checkpoint")


class AutoscaleMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.step_duration = Histogram(
            "tfsched_autoscaler_step_duration_seconds",
            "Time one step of an autoscaling interval took (discover, fetch, estimate, reconcile, checkpoint).",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.intervals = Counter(
            "tfsched_autoscaler_intervals_total",
            "Autoscaling intervals run, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.prometheus_errors = Counter(
            "tfsched_autoscaler_prometheus_errors_total", "Usage queries to Prometheus that failed.", registry=r
        )
        self.recommendations = Counter(
            "tfsched_autoscaler_recommendations_total",
            "Recommendations made (one per workload per interval), by whether they changed the resources.",
            ["changed"],
            registry=r,
        )
        self.resizes = Counter(
            "tfsched_autoscaler_resizes_total",
            "In-place resizes of a pod, by result (applied; no_fit: its GPUs lack the room; failed: the patch).",
            ["result"],
            registry=r,
        )
        self.evictions = Counter(
            "tfsched_autoscaler_evictions_total",
            "Evictions to reschedule a pod at a new size, by result (evicted; refused: a PodDisruptionBudget "
            "said no; failed).",
            ["result"],
            registry=r,
        )
        self.replica_changes = Counter(
            "tfsched_autoscaler_replica_changes_total",
            "Replica changes written to a workload's owner, by direction (up, down) and result (applied, failed).",
            ["direction", "result"],
            registry=r,
        )
        self.cron_rules_active = Gauge(
            "tfsched_autoscaler_cron_rules_active", "Workloads with a cron scaling rule in effect now.", registry=r
        )
        self.leading = Gauge(
            "tfsched_autoscaler_leading",
            "1 where the autoscaler runs (this instance leads), 0 on standby.",
            registry=r,
        )
        self.workload_metrics = Gauge(
            "tfsched_autoscaler_workload_metrics_available",
            "1 when the last usage query answered for the workload, 0 when it failed.",
            ["namespace", "workload"],
            registry=r,
        )
        self._workloads: set[tuple[str, str]] = set()
        # Known label values at 0 from the start (see extender.metrics).
        for step in STEPS:
            self.step_duration.labels(step)
        for result in ("ok", "failed"):
            self.intervals.labels(result)
        for changed in ("true", "false"):
            self.recommendations.labels(changed)
        for result in ("applied", "no_fit", "failed"):
            self.resizes.labels(result)
        for result in ("evicted", "refused", "failed"):
            self.evictions.labels(result)
        for direction in ("up", "down"):
            for result in ("applied", "failed"):
                self.replica_changes.labels(direction, result)

    def workloads_seen(self, keys: set[tuple[str, str]]) -> None:
        """Drop the per-workload series of workloads that are gone."""
        for key in self._workloads - keys:
            with contextlib.suppress(KeyError):
                self.workload_metrics.remove(*key)
        self._workloads = set(keys)
