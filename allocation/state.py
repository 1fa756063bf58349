"""The extender's view of the cluster: cache → inventory and ledger.

Handlers subscribed to the cache keep the inventory arrays and the ledger in
step with every watch event, so a request never rebuilds anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tfsched.allocation.audit import DRIFT_KINDS, GPU_OVERCOMMITTED, Drift
from tfsched.allocation.config import SchedulingConfig
from tfsched.allocation.ledger import TERMINAL_PHASES, Ledger
from tfsched.allocation.mix import WorkloadMix
from tfsched.allocation.noderesources import NodeResources, node_cpu_mem, pod_cpu_mem
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import Change, ClusterCache, EventType, Kind, Obj, shared_text
from tfsched.clustermodel.gpurequest import (
    GPURequest,
    RequestError,
    apply_override,
    is_gpu_pod,
    parse_gpu_request,
)
from tfsched.clustermodel.problems import ProblemLog
from tfsched.clustermodel.quantity import QuantityError, parse_quantity
from tfsched.clustermodel.workload import WorkloadView, read_workload
from tfsched.scoring.inventory import GPUSpec, Inventory
from tfsched.scoring.risecache import RiseCache

log = logging.getLogger(__name__)

GPU_RUNNING_PHASE = "Running"
# Problem kinds (the metric's label).
PROBLEM_POD = "pod_record"
PROBLEM_UNREADABLE = "unreadable_object"


def gpu_spec(gpu: Obj) -> GPUSpec:
    """Read a GPU object; a GPU whose capacity cannot be read is kept but unusable."""
    meta = gpu.get("metadata") or {}
    status = gpu.get("status") or {}
    labels = meta.get("labels") or {}
    capacity = status.get("capacity") or {}
    node = (status.get("nodeSelector") or {}).get(ann.HOSTNAME_LABEL) or labels.get(ann.HOSTNAME_LABEL, "")
    used_by = status.get("usedBy") or ""
    if not isinstance(used_by, str):
        foreign = "an unreadable usedBy"  # not provably ours: not ours to share
    else:
        foreign = "" if used_by in ann.USED_BY_OURS else used_by[:64]
    usable = status.get("phase") == GPU_RUNNING_PHASE and bool(node) and not foreign
    try:
        tflops = parse_quantity(capacity.get("tflops", 0))
        vram = parse_quantity(capacity.get("vram", 0))
    except QuantityError as exc:
        log.warning("GPU %s has an unreadable capacity (%s); treating it as unusable", meta.get("name"), exc)
        tflops = vram = 0.0
        usable = False
    try:
        index = int(status.get("index", -1))
    except (TypeError, ValueError):
        index = -1
    return GPUSpec(
        name=meta.get("name", ""),
        node=shared_text(node),  # one string with the Node's name and its pods' nodeName
        tflops=tflops,
        vram=vram,
        model=str(status.get("gpuModel") or ""),
        vendor=str(status.get("vendor") or ""),
        pool=str(labels.get(ann.GPU_POOL) or ""),
        device_index=index,
        usable=usable,
        used_by=foreign,
    )


class ClusterState:
    def __init__(self, config: SchedulingConfig | None = None, cache: ClusterCache | None = None) -> None:
        self.config = config or SchedulingConfig()
        self.cache = cache or ClusterCache()
        self.problems = ProblemLog()
        self.overcommitted_gpus = 0  # as the last audit found
        self.drift_found: dict[str, int] = dict.fromkeys(DRIFT_KINDS, 0)  # by kind, as the last audit confirmed
        self.cache.on_error = self._unreadable
        self.inventory = Inventory()
        self.ledger = Ledger(self.inventory)
        # What the cluster asks, for the fragmentation-aware mode (allocation/mix.py).
        self.mix = WorkloadMix(self.inventory)
        self.rise_cache = RiseCache()
        self.node_resources = NodeResources(self.inventory)
        self.cache.subscribe(Kind.NODE, self._on_node)
        self.cache.subscribe(Kind.GPU, self._on_gpu, self._on_gpu_page)
        self.cache.subscribe(Kind.POD, self._on_pod)
        self.cache.subscribe(Kind.WORKLOAD, self._on_workload)
        # GPU name -> the other system that hands it out (status.usedBy), for the filter's reasons.
        self.foreign_gpus: dict[str, str] = {}
        # Each workload parsed once per version, for every filter and the autoscaler.
        self.workloads: dict[tuple[str, str], WorkloadView] = {}

    def _on_node(self, event: EventType, obj: Obj, old: Obj | None) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if name and isinstance(name, str) and self.config.needs_all_pods:
            self.node_resources.set_node(name, None if event is EventType.DELETED else node_cpu_mem(obj))
        if name:
            self.inventory.set_node_present(name, event is not EventType.DELETED)

    def _read_gpu(self, obj: Obj, present: bool) -> GPUSpec | None:
        """A GPU object's spec, with whom else hands it out recorded; None when it has no name."""
        spec = gpu_spec(obj)
        if not spec.name:
            return None
        if spec.used_by and present:
            self.foreign_gpus[spec.name] = spec.used_by
        else:
            self.foreign_gpus.pop(spec.name, None)
        return spec

    @staticmethod
    def _placed(spec: GPUSpec) -> bool:
        if not spec.node:
            log.warning("GPU %s names no node (status.nodeSelector); ignoring it", spec.name)
        return bool(spec.node)

    def _on_gpu(self, event: EventType, obj: Obj, old: Obj | None) -> None:
        spec = self._read_gpu(obj, present=event is not EventType.DELETED)
        if spec is None:
            return
        if event is EventType.DELETED:
            self.ledger.remove_gpu(spec.name)
        elif self._placed(spec):
            self.ledger.upsert_gpu(spec)

    def _on_gpu_page(self, changes: list[Change]) -> None:
        """:meth:`_on_gpu` for a list page (additions and updates only): its GPUs go into
        the inventory at once."""
        read = (self._read_gpu(obj, present=True) for _event, obj, _old in changes)
        self.ledger.upsert_gpus([spec for spec in read if spec is not None and self._placed(spec)])

    def _on_pod(self, event: EventType, obj: Obj, old: Obj | None) -> None:
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        # The mix and each node's CPU and memory serve only a fragmentation-aware mode.
        weighs_nodes = self.config.needs_all_pods
        if event is EventType.DELETED:
            self.ledger.forget_pod(uid)
            if weighs_nodes:
                self.mix.observe(uid, None)
                self.node_resources.observe_pod(uid, None)
            self.problems.resolved(PROBLEM_POD, obj)
            return
        if weighs_nodes:
            self.node_resources.observe_pod(uid, obj)
            self.mix.observe(uid, self._asking(obj), *pod_cpu_mem(obj))
        problem = self.ledger.observe_pod(obj)
        if problem is None:
            self.problems.resolved(PROBLEM_POD, obj)
        elif self.problems.report(PROBLEM_POD, obj, problem.reason, problem.message):
            meta = obj.get("metadata") or {}
            log.warning("pod %s/%s: %s", meta.get("namespace"), meta.get("name"), problem.message)

    def keeps_pod(self, pod: Obj) -> bool:
        """Which pods the cache takes in: GPU pods; every pod when a fragmentation-aware
        mode needs each node's CPU and memory."""
        return self.config.needs_all_pods or keep_pod(pod)

    def _asking(self, pod: Obj) -> GPURequest | None:
        """What a pod asks while it runs or waits (None once finished, or unreadable)."""
        if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES or not is_gpu_pod(
            (pod.get("metadata") or {}).get("annotations")
        ):
            return None
        try:
            return self.effective_request(pod)
        except RequestError:
            return None

    def _unreadable(self, kind: Kind, obj: object, exc: Exception) -> None:
        """An object the cache could not take in: reported, and the rest go on."""
        message = f"tfsched could not read this {kind}: {type(exc).__name__}: {str(exc)[:200]}"
        ref = obj if isinstance(obj, Mapping) else {}
        if self.problems.report(PROBLEM_UNREADABLE, {"kind": str(kind), **ref}, ann.EVENT_UNREADABLE_OBJECT, message):
            log.warning("%s", message)

    def _on_workload(self, event: EventType, obj: Obj, old: Obj | None) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event is EventType.DELETED:
            self.workloads.pop(key, None)
            return
        previous = self.workloads.get(key)
        view = read_workload(obj, previous)
        # Once per spec change, not on every status write.
        if view.config_error and (previous is None or previous.raw_config != view.raw_config):
            log.warning("workload %s/%s: invalid autoScalingConfig: %s", *key, view.config_error)
        self.workloads[key] = view

    def load(self, objects: dict[Kind, list[Obj]]) -> None:
        """Replace the whole state with these objects (snapshot mode, tests)."""
        for kind in (Kind.NODE, Kind.GPU, Kind.WORKLOAD, Kind.WORKLOAD_PROFILE, Kind.POD):
            items = objects.get(kind, [])
            if kind is Kind.POD:
                items = [p for p in items if self.keeps_pod(p)]
            self.cache.replace(kind, items)

    def repair(self, drift: Drift) -> None:
        """Take in what a missed watch event would have brought: the listed pod,
        or the deletion of a pod the API server no longer has."""
        if drift.kind == GPU_OVERCOMMITTED:
            return  # not ours to repair: the holders are real pods
        if drift.pod is not None:
            self.cache.apply(Kind.POD, EventType.MODIFIED, drift.pod)
            return
        alloc = self.ledger.allocations.get(drift.uid)
        namespace, _, name = (alloc.pod if alloc is not None else "/").partition("/")
        cached = self.cache.get(Kind.POD, namespace, name)
        if cached is not None and (cached.get("metadata") or {}).get("uid") == drift.uid:
            self.cache.apply(Kind.POD, EventType.DELETED, cached)
        else:
            self.ledger.forget_pod(drift.uid)

    def foreign_gpus_of(self, node: int) -> dict[str, str]:
        """The GPUs of inventory node ``node`` that another system hands out, with that system."""
        inv = self.inventory
        names = (inv.gpu_names[g] for g in inv.gpus_of_node(node).tolist())
        return {name: self.foreign_gpus[name] for name in names if name in self.foreign_gpus}

    def workload_of(self, namespace: str, annotations: Mapping[str, Any]) -> WorkloadView | None:
        """The parsed workload a pod names in its ``workload`` annotation, if it exists."""
        name = annotations.get(ann.WORKLOAD)
        if not name or not isinstance(name, str):
            return None
        return self.workloads.get((namespace, name))

    def requests(self, pod: Mapping[str, Any]) -> tuple[GPURequest, GPURequest]:
        """(declared, effective): the pod's annotations, and with its workload's
        recommendation / cron rule applied.  Raises ``RequestError`` for
        unreadable annotations."""
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        declared = parse_gpu_request(annotations)
        namespace = meta.get("namespace")
        workload = self.workload_of(namespace if isinstance(namespace, str) else "", annotations)
        if workload is None:
            return declared, declared
        return declared, apply_override(declared, workload.override_for(annotations))

    def effective_request(self, pod: Mapping[str, Any]) -> GPURequest:
        """The request the pod is placed and accounted with (see :meth:`requests`)."""
        return self.requests(pod)[1]


def keep_pod(pod: Obj) -> bool:
    """Only GPU pods are cached: the rest never reach the extender."""
    return is_gpu_pod((pod.get("metadata") or {}).get("annotations"))
