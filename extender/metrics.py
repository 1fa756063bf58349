"""Prometheus metrics of the extender, in a registry of its own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ExtenderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.latency = Histogram(
            "tfsched_extender_request_duration_seconds",
            "Time to answer one extender call, by verb.",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "tfsched_extender_decisions_total",
            "Per-node filter outcomes and bind outcomes.",
            ["verb", "result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "tfsched_extender_errors_total",
            "Requests answered with an error, by verb and kind of error.",
            ["verb", "kind"],
            registry=self.registry,
        )
        self.leading = Gauge(
            "tfsched_writer_active",
            "1 on the one instance that binds and writes (the leader, fenced), 0 on standby.",
            registry=self.registry,
        )
        self.problems = Gauge(
            "tfsched_object_problems_reported",
            "Objects found wrong while taking the cluster in (squatting gpu-ids, unreadable objects, drift), by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.overcommitted = Gauge(
            "tfsched_gpus_overcommitted",
            "GPUs whose holders together exceed their capacity, as the last ledger audit found (should be 0).",
            registry=self.registry,
        )
        self.allocations = Gauge(
            "tfsched_ledger_allocations",
            "Pod allocations held by the ledger.",
            ["state"],
            registry=self.registry,
        )
