"""CPU and memory per node, for the fragmentation-aware mode.

FGD counts a node's free GPUs as fragments for every request whose CPU or
memory no longer fits on that node, so the mode needs what kube-scheduler's
NodeResourcesFit sees: each Node's allocatable CPU and memory and what the pods
bound there request (containers summed, init containers at their maximum,
as kube-scheduler computes a pod's request). Kept in the inventory's per-node
arrays, updated per pod event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tfsched.allocation.ledger import TERMINAL_PHASES
from tfsched.clustermodel.quantity import QuantityError, parse_quantity
from tfsched.scoring.inventory import Inventory


def _quantity(value: Any) -> float:
    try:
        return parse_quantity(value) if isinstance(value, str | int | float) else 0.0
    except QuantityError:
        return 0.0


def _field(obj: Any, key: str) -> Any:
    """``obj[key]`` when ``obj`` is a mapping (hostile objects have any shape)."""
    return obj.get(key) if isinstance(obj, Mapping) else None


def _requests(containers: Any) -> list[tuple[float, float]]:
    out = []
    for c in containers if isinstance(containers, list) else []:
        requests = _field(_field(c, "resources"), "requests")
        if isinstance(requests, Mapping):
            out.append((_quantity(requests.get("cpu", 0)) * 1000, _quantity(requests.get("memory", 0))))
    return out


def pod_cpu_mem(pod: Any) -> tuple[float, float]:
    """milli-CPU and bytes the pod requests, as kube-scheduler sums them (0 for what cannot be read)."""
    spec = _field(pod, "spec")
    main = _requests(_field(spec, "containers"))
    init = _requests(_field(spec, "initContainers"))
    cpu = max(sum(c for c, _ in main), max((c for c, _ in init), default=0.0))
    mem = max(sum(m for _, m in main), max((m for _, m in init), default=0.0))
    return cpu, mem


def node_cpu_mem(node: Mapping[str, Any]) -> tuple[float, float] | None:
    """A Node's allocatable milli-CPU and bytes (None when it reports none)."""
    allocatable = _field(_field(node, "status"), "allocatable")
    if not isinstance(allocatable, Mapping) or "cpu" not in allocatable or "memory" not in allocatable:
        return None
    return _quantity(allocatable["cpu"]) * 1000, _quantity(allocatable["memory"])


class NodeResources:
    """Keeps ``inventory.node_alloc_*`` and ``node_used_*`` in line with Nodes and pods."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._pods: dict[str, tuple[int, float, float]] = {}  # uid -> (node index, cpu, mem)

    def set_node(self, name: str, allocatable: tuple[float, float] | None) -> None:
        inv = self.inventory
        n = inv.node(name)
        cpu, mem = allocatable if allocatable is not None else (float("inf"), float("inf"))
        inv.set_allocatable(n, cpu, mem)

    def observe_pod(self, uid: str, pod: Mapping[str, Any] | None) -> None:
        """The pod as it is now (None: deleted); it counts while bound and not finished."""
        inv = self.inventory
        old = self._pods.pop(uid, None)
        if old is not None:
            inv.node_used_cpu[old[0]] -= old[1]
            inv.node_used_mem[old[0]] -= old[2]
            inv.touch_node(old[0])
        if pod is None or not uid:
            return
        node = _field(_field(pod, "spec"), "nodeName")
        if not node or not isinstance(node, str) or _field(_field(pod, "status"), "phase") in TERMINAL_PHASES:
            return
        cpu, mem = pod_cpu_mem(pod)
        n = inv.node(node)
        inv.node_used_cpu[n] += cpu
        inv.node_used_mem[n] += mem
        inv.touch_node(n)
        self._pods[uid] = (n, cpu, mem)
