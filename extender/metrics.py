"""Prometheus metrics of the extender and of the allocation, in one registry per process.

Cardinality is bounded by the cluster, never by traffic: the labels of counters
are verbs, results, reasons and kinds (fixed sets); the allocation series are
one per node and one per GPU (``node``, ``gpu`` labels; 5 series per node and 5
per GPU, the per-GPU ones switchable off: ``metrics.perGPU``), read from the
inventory at scrape time and written as text off the event loop; no label
carries a pod name.
The registry also has the process, platform and GC collectors.
"""

from __future__ import annotations

import platform
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.quantity import MILLI_PER_TFLOPS
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
        # Readings taken on the event loop by refresh(), before a scrape: the registry is
        # written out in a thread, and a gauge's callback there would race the loop's state.
        self.before_scrape: list[Callable[[], None]] = []
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
        self.gpu_status_writes = Counter(
            "tfsched_status_writes_total",
            "GPU status patches written from the ledger, by result (written; failed, throttled: "
            "refused with a 429, which holds every write back as long as it asks; both retried when due again).",
            ["result"],
            registry=self.registry,
        )
        self.gpu_status_unwritten = Gauge(
            "tfsched_status_unwritten_gpus",
            "GPUs whose status does not yet show the ledger's latest change (coalescing, or waiting their turn).",
            registry=self.registry,
        )
        # Every known label value from the start, at 0: rate() and the dashboard see a series
        # before the first event, and a missing series means a scrape problem, not "none yet".
        for verb in VERBS:
            self.latency.labels(verb)
            for kind in ERROR_KINDS:
                self.errors.labels(verb, kind)
        # Looked up once: filter counts into these on every call (labels() is a locked lookup).
        self._filter_counts = tuple(self.filter_nodes.labels(r) for r in ("passed", "failed", "unresolvable"))
        for reason in (*VERDICT_NAMES.values(), DENIAL_UNKNOWN_NODE, DENIAL_BAD_REQUEST):
            self.filter_denials.labels(reason)
        # Looked up once, as filter's: every bind counts into one of these.
        self.bind_results = {result: self.binds.labels(result) for result in ("bound", "failed")}
        for result in ("written", "failed", "throttled"):
            self.gpu_status_writes.labels(result)

    def count_filter(self, passed: int, failed: int, unresolvable: int, denials: Tally[str]) -> None:
        for series, n in zip(self._filter_counts, (passed, failed, unresolvable), strict=True):
            series.inc(n)
        for reason, n in denials.items():
            self.filter_denials.labels(reason).inc(n)

    def refresh(self, state: ClusterState, writing: bool) -> AllocationSnapshot:
        """The gauges read from the state, before a scrape; the allocation's numbers to write."""
        for read in self.before_scrape:
            read()
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
        return allocation_snapshot(state)

    def exposition(self, snapshot: AllocationSnapshot, per_gpu: bool) -> bytes:
        """The whole scrape: the registry's families, then the allocation's (off the event loop)."""
        return generate_latest(self.registry) + allocation_text(snapshot, per_gpu)


GPU_FAMILIES = {
    "tfsched_gpu_tflops_allocated": "TFLOPS held on a GPU by the ledger's allocations.",
    "tfsched_gpu_tflops_available": "TFLOPS of a GPU not held (0 for a GPU tfsched may not hand out).",
    "tfsched_gpu_vram_allocated_bytes": "VRAM held on a GPU by the ledger's allocations.",
    "tfsched_gpu_vram_available_bytes": "VRAM of a GPU not held (0 for a GPU tfsched may not hand out).",
    "tfsched_gpu_pods": "Pods holding a share of a GPU.",
}
NODE_FAMILIES = {
    "tfsched_node_tflops_allocated": "TFLOPS held on a node's GPUs.",
    "tfsched_node_tflops_available": "TFLOPS of a node's usable GPUs not held.",
    "tfsched_node_vram_allocated_bytes": "VRAM held on a node's GPUs.",
    "tfsched_node_vram_available_bytes": "VRAM of a node's usable GPUs not held.",
    "tfsched_node_gpu_pods": "Pods holding GPU shares on a node.",
}


@dataclass(frozen=True, slots=True)
class AllocationSnapshot:
    """The inventory's numbers copied on the event loop, to be written as text in a thread."""

    gpu_names: list[str]
    gpu_nodes: np.ndarray  # node index per GPU
    values: np.ndarray  # per GPU: TFLOPS allocated, available, VRAM allocated, available, pods
    node_names: list[str]
    node_pods: np.ndarray  # per node index


def allocation_snapshot(state: ClusterState) -> AllocationSnapshot:
    inv = state.inventory
    # Linked slots are live GPUs: remove_gpu unlinks a slot before it forgets the name.
    slots = np.flatnonzero(inv.gpu_node[: len(inv.gpu_names)] >= 0)
    names = [inv.gpu_names[g] for g in slots.tolist()]
    usable = inv.usable[slots]
    # Inventory units: milli-TFLOPS and bytes.
    used_t, used_v = inv.used_t[slots] / MILLI_PER_TFLOPS, inv.used_v[slots]
    free_t = np.where(usable, np.maximum(inv.cap_t[slots] / MILLI_PER_TFLOPS - used_t, 0.0), 0.0)
    free_v = np.where(usable, np.maximum(inv.cap_v[slots] - used_v, 0.0), 0.0)
    pods = inv.holders[slots].astype(np.float64)
    node_pods = np.zeros(len(inv.node_names))
    for node, count in Tally(alloc.node for alloc in state.ledger.allocations.values()).items():
        n = inv.node_index.get(node)
        if n is not None:
            node_pods[n] = count
    return AllocationSnapshot(
        names,
        inv.gpu_node[slots].copy(),
        np.column_stack([used_t, free_t, used_v, free_v, pods]),
        list(inv.node_names),
        node_pods,
    )


def allocation_text(snap: AllocationSnapshot, per_gpu: bool = True) -> bytes:
    """The per-node (and per-GPU) families in Prometheus' text format. Node and GPU names are
    Kubernetes object names (DNS labels and subdomains): nothing to escape in a label value."""
    lines: list[str] = []
    if per_gpu:
        for column, (family, doc) in enumerate(GPU_FAMILIES.items()):
            lines += (f"# HELP {family} {doc}", f"# TYPE {family} gauge")
            values = snap.values[:, column].tolist()
            nodes = snap.gpu_nodes.tolist()
            lines += [
                f'{family}{{node="{snap.node_names[n]}",gpu="{g}"}} {v!r}'
                for g, n, v in zip(snap.gpu_names, nodes, values, strict=True)
            ]
    has_gpus = np.zeros(len(snap.node_names), np.bool_)
    has_gpus[snap.gpu_nodes] = True
    nodes = np.flatnonzero(has_gpus)
    sums = [np.bincount(snap.gpu_nodes, snap.values[:, c], len(snap.node_names))[nodes] for c in range(4)]
    sums.append(snap.node_pods[nodes])
    names = [snap.node_names[n] for n in nodes.tolist()]
    for (family, doc), column in zip(NODE_FAMILIES.items(), sums, strict=True):
        lines += (f"# HELP {family} {doc}", f"# TYPE {family} gauge")
        lines += [f'{family}{{node="{name}"}} {v!r}' for name, v in zip(names, column.tolist(), strict=True)]
    return ("\n".join(lines) + "\n").encode()
