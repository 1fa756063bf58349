"""Prometheus metrics of the extender and of the allocation, in one registry per process.

Cardinality is bounded by the cluster, never by traffic: the labels of counters
are verbs, results, reasons and kinds (fixed sets); the allocation series are
one per node and one per GPU (``node``, ``gpu`` labels; 5 series per node and 5
per GPU), read from the inventory at scrape time; no label carries a pod name.
The registry also has the process, platform and GC collectors.
"""

from __future__ import annotations

import platform
from collections import Counter as Tally
from collections.abc import Iterator

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tfsched.allocation.state import ClusterState
from tfsched.extender.placement import DENIAL_UNKNOWN_NODE
from tfsched.scoring.modes import VERDICT_NAMES

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
VERBS = ("filter", "prioritize", "bind")
# tfsched_extender_errors_total's kinds (extender.app): parse budget exhausted, malformed request,
# a bug, the cache not current, unreadable pod annotations.
ERROR_KINDS = ("busy", "bad_request", "internal", "untrusted", "bad_annotation")
# A filter denial that is not a node's verdict: the pod's annotations cannot be read (each node counts).
DENIAL_BAD_REQUEST = "invalid_request"


def build_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tfsched")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def new_registry() -> CollectorRegistry:
    """A registry with the process, platform and GC collectors and ``tfsched_build_info``."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Gauge(
        "tfsched_build_info",
        "Always 1; the labels say which tfsched and Python run.",
        ["version", "python_version"],
        registry=registry,
    ).labels(build_version(), platform.python_version()).set(1)
    return registry


class ExtenderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or new_registry()
        self.latency = Histogram(
            "tfsched_extender_request_duration_seconds",
            "Time to answer one extender call, by verb (bind includes the API server's write).",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.filter_nodes = Counter(
            "tfsched_extender_filter_nodes_total",
            "Nodes judged by filter calls for GPU pods, by result (passed, failed: preemption may help, "
            "unresolvable: it cannot).",
            ["result"],
            registry=self.registry,
        )
        self.filter_denials = Counter(
            "tfsched_extender_filter_denials_total",
            "Nodes a GPU pod was refused on, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.binds = Counter(
            "tfsched_extender_binds_total",
            "Bind calls for GPU pods, by result (bound, failed).",
            ["result"],
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
        self.drift = Gauge(
            "tfsched_ledger_drift",
            "Differences between the ledger and the pods' gpu-ids that the last audit confirmed, by kind "
            "(should be 0).",
            ["kind"],
            registry=self.registry,
        )
        self.allocations = Gauge(
            "tfsched_ledger_allocations",
            "Pod allocations held by the ledger.",
            ["state"],
            registry=self.registry,
        )
        self.allocation = AllocationCollector()
        self.registry.register(self.allocation)
        # Every known label value from the start, at 0: rate() and the dashboard see a series
        # before the first event, and a missing series means a scrape problem, not "none yet".
        for verb in VERBS:
            self.latency.labels(verb)
            for kind in ERROR_KINDS:
                self.errors.labels(verb, kind)
        for result in ("passed", "failed", "unresolvable"):
            self.filter_nodes.labels(result)
        for reason in (*VERDICT_NAMES.values(), DENIAL_UNKNOWN_NODE, DENIAL_BAD_REQUEST):
            self.filter_denials.labels(reason)
        for result in ("bound", "failed"):
            self.binds.labels(result)

    def count_filter(self, passed: int, failed: int, unresolvable: int, denials: Tally[str]) -> None:
        self.filter_nodes.labels("passed").inc(passed)
        self.filter_nodes.labels("failed").inc(failed)
        self.filter_nodes.labels("unresolvable").inc(unresolvable)
        for reason, n in denials.items():
            self.filter_denials.labels(reason).inc(n)

    def refresh(self, state: ClusterState, writing: bool) -> None:
        """The gauges read from the state, before a scrape."""
        ledger = state.ledger
        reserved = sum(1 for a in ledger.allocations.values() if a.reserved)
        self.allocations.labels("reserved").set(reserved)
        self.allocations.labels("committed").set(len(ledger.allocations) - reserved)
        self.leading.set(1 if writing else 0)
        self.overcommitted.set(state.overcommitted_gpus)
        for kind, count in state.problems.counts.items():
            self.problems.labels(kind).set(count)
        for kind, count in state.drift_found.items():
            self.drift.labels(kind).set(count)
        self.allocation.snapshot(state)


ALLOCATION_DOCS = {
    "tfsched_gpu_tflops_allocated": "TFLOPS held on a GPU by the ledger's allocations.",
    "tfsched_gpu_tflops_available": "TFLOPS of a GPU not held (0 for a GPU tfsched may not hand out).",
    "tfsched_gpu_vram_allocated_bytes": "VRAM held on a GPU by the ledger's allocations.",
    "tfsched_gpu_vram_available_bytes": "VRAM of a GPU not held (0 for a GPU tfsched may not hand out).",
    "tfsched_gpu_pods": "Pods holding a share of a GPU.",
    "tfsched_node_tflops_allocated": "TFLOPS held on a node's GPUs.",
    "tfsched_node_tflops_available": "TFLOPS of a node's usable GPUs not held.",
    "tfsched_node_vram_allocated_bytes": "VRAM held on a node's GPUs.",
    "tfsched_node_vram_available_bytes": "VRAM of a node's usable GPUs not held.",
    "tfsched_node_gpu_pods": "Pods holding GPU shares on a node.",
}


class AllocationCollector(Collector):
    """Per GPU and per node allocation, from a snapshot of the inventory taken on the
    event loop (``snapshot``) so the text can be written in a thread."""

    def __init__(self) -> None:
        self._families: dict[str, list[tuple[tuple[str, ...], float]]] = {}

    def snapshot(self, state: ClusterState) -> None:
        inv = state.inventory
        pods_per_gpu: Tally[str] = Tally()
        pods_per_node: Tally[str] = Tally()
        for alloc in state.ledger.allocations.values():
            pods_per_gpu.update(alloc.gpu_names)
            pods_per_node[alloc.node] += 1
        fam: dict[str, list[tuple[tuple[str, ...], float]]] = {name: [] for name in ALLOCATION_DOCS}
        node_sums: dict[str, np.ndarray] = {}
        for name, g in inv.gpu_index.items():
            n = int(inv.gpu_node[g])
            if n < 0:
                continue
            node = inv.node_names[n]
            usable = bool(inv.usable[g])
            # Inventory units: milli-TFLOPS and bytes.
            used_t, used_v = float(inv.used_t[g]) / 1000.0, float(inv.used_v[g])
            free_t = max(float(inv.cap_t[g]) / 1000.0 - used_t, 0.0) if usable else 0.0
            free_v = max(float(inv.cap_v[g]) - used_v, 0.0) if usable else 0.0
            pods = float(pods_per_gpu.get(name, 0))
            labels = (node, name)
            for family, value in zip(
                ("tflops_allocated", "tflops_available", "vram_allocated_bytes", "vram_available_bytes", "pods"),
                (used_t, free_t, used_v, free_v, pods),
                strict=True,
            ):
                fam[f"tfsched_gpu_{family}"].append((labels, value))
            sums = node_sums.setdefault(node, np.zeros(4))
            sums += (used_t, free_t, used_v, free_v)
        for node, sums in node_sums.items():
            for family, value in zip(
                ("tflops_allocated", "tflops_available", "vram_allocated_bytes", "vram_available_bytes"),
                sums.tolist(),
                strict=True,
            ):
                fam[f"tfsched_node_{family}"].append(((node,), value))
            fam["tfsched_node_gpu_pods"].append(((node,), float(pods_per_node.get(node, 0))))
        self._families = fam

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, doc in ALLOCATION_DOCS.items():
            labels = ["node", "gpu"] if name.startswith("tfsched_gpu_") else ["node"]
            family = GaugeMetricFamily(name, doc, labels=labels)
            for values, value in self._families.get(name, ()):
                family.add_metric(list(values), value)
            yield family
