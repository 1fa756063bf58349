"""The allocation ledger: the one writer of GPU usage.

Every share of every GPU is held by exactly one pod allocation, either
*reserved* (a bind or an in-place resize is in flight) or *committed* (the
pod's ``gpu-ids`` and request annotations say so).  Filter and score read the
inventory's ``used`` arrays, which are the sum of all allocations, so an
in-flight bind already counts against the GPUs it is taking.

The ledger is rebuilt from pods alone: observing a pod *bound to a node*
with ``gpu-ids`` naming GPUs of that node (re)commits its allocation,
observing it terminated or deleted releases it.  A pod whose ``gpu-ids`` are
not backed by a binding (anyone who can create a pod can write annotations)
holds nothing: :meth:`Ledger.observe_pod` says why it was ignored, and the
GPUs it names stay free.  Allocations are kept by GPU *name*, so a GPU object
that appears after its pods (or is re-created) gets their usage back, and an
allocation counts only on GPUs of its own node.

All methods are synchronous: in one asyncio process, check-and-reserve cannot
interleave with another request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from tfsched.allocation.mix import MixArrays
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.gpurequest import MAX_GPU_COUNT, GPURequest, RequestError, parse_gpu_request
from tfsched.clustermodel.quantity import MILLI_PER_TFLOPS, format_bytes
from tfsched.scoring.inventory import GPUSpec, Inventory, request_units, tflops_units, vram_units
from tfsched.scoring.kernels import frag_pick_numba, pick_gpus_numba
from tfsched.scoring.modes import DEFAULT_TFLOPS_WEIGHT, DEFAULT_VRAM_WEIGHT, PlacementMode

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class PodProblem(NamedTuple):
    reason: str  # an Event reason
    message: str


class NoFit(Exception):
    """The request does not fit (any longer) on the node; the message says why."""


@dataclass(slots=True)
class Allocation:
    uid: str
    pod: str  # namespace/name, for messages and metrics
    node: str
    gpu_names: tuple[str, ...]
    tflops: float  # milli-TFLOPS per GPU (absolute requests)
    percent: float  # compute percent per GPU (0 unless the pod asked in percent)
    vram: float  # bytes per GPU
    reserved: bool = True

    def tflops_on(self, cap_t: float) -> float:
        if not self.percent:  # most requests are absolute: no numpy call per GPU they hold
            return self.tflops
        return self.tflops + float(np.ceil(self.percent / 100.0 * cap_t - 1e-9))


@dataclass
class Ledger:
    inventory: Inventory
    allocations: dict[str, Allocation] = field(default_factory=dict)
    # GPU name -> the uids of the allocations naming it, each once.  A tuple, not a set: most
    # GPUs have one or two holders, and 60,000 sets cost 10 MB more at 20,000 nodes.
    by_gpu: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # GPUs whose usage changed since the status writer last took them.
    changed_gpus: set[str] = field(default_factory=set)

    # -- GPUs ----------------------------------------------------------------

    def upsert_gpu(self, spec: GPUSpec) -> None:
        # Recount every time: a new GPU gets its holders back, a changed node or
        # capacity changes which holders count and what a percent request is.
        if spec.name not in self.by_gpu and spec.name not in self.inventory.gpu_index:
            self.inventory.upsert_gpu(spec)  # new, and no allocation names it: nothing to count
            return
        self._recount_gpu(spec.name, self.inventory.upsert_gpu(spec))

    def upsert_gpus(self, specs: list[GPUSpec]) -> None:
        """:meth:`upsert_gpu` for each, in order: the GPUs the inventory has not seen go
        in at once (:meth:`Inventory.add_gpus`), then the rest one by one."""
        inv = self.inventory
        new: dict[str, GPUSpec] = {}
        again: list[GPUSpec] = []  # known GPUs, and a name's later specs (they win, as in order)
        for spec in specs:
            if spec.name in inv.gpu_index or spec.name in new:
                again.append(spec)
            else:
                new[spec.name] = spec
        for spec, g in zip(new.values(), inv.add_gpus(list(new.values())), strict=True):
            if spec.name in self.by_gpu:  # pods listed before their GPU: its holders count now
                self._recount_gpu(spec.name, g)
        for spec in again:
            self.upsert_gpu(spec)

    def remove_gpu(self, name: str) -> None:
        self.inventory.remove_gpu(name)

    def _recount_gpu(self, name: str, g: int) -> None:
        inv = self.inventory
        if name not in self.by_gpu and inv.holders[g] == 0 and inv.used_t[g] == 0.0 and inv.used_v[g] == 0.0:
            return  # nothing held before or now (most GPUs of a first list): nothing to write
        used_t = used_v = 0.0
        holders = 0
        for uid in self.by_gpu.get(name, ()):
            alloc = self.allocations[uid]
            if not self._counts_on(alloc, g):
                continue
            used_t += alloc.tflops_on(inv.cap_t[g])
            used_v += alloc.vram
            holders += 1
        inv.holders[g] = holders
        if (inv.used_t[g], inv.used_v[g]) != (used_t, used_v):
            self.changed_gpus.add(name)
        inv.used_t[g] = used_t
        inv.used_v[g] = used_v
        inv.touch_gpu(g)

    # -- allocations -----------------------------------------------------------

    def _node_of(self, g: int) -> str:
        inv = self.inventory
        return inv.node_names[inv.gpu_node[g]]

    def _counts_on(self, alloc: Allocation, g: int) -> bool:
        """Only an allocation on the GPU's own node uses it."""
        return self._node_of(g) == alloc.node

    def _apply(self, alloc: Allocation, sign: float) -> None:
        inv = self.inventory
        for name in alloc.gpu_names:
            g = inv.gpu_index.get(name)
            if g is None:
                continue  # the GPU object is not here yet (upsert_gpu recounts it)
            node = int(inv.gpu_node[g])
            if inv.node_names[node] != alloc.node:
                continue  # not on this allocation's node (_counts_on, read once here)
            inv.used_t[g] += sign * (alloc.tflops_on(inv.cap_t[g]) if alloc.percent else alloc.tflops)
            inv.used_v[g] += sign * alloc.vram
            inv.holders[g] += int(sign)
            inv.touch_node(node)
            self.changed_gpus.add(name)

    def _put(self, alloc: Allocation) -> None:
        if self.allocations.get(alloc.uid) == alloc:
            return  # held as before (a status update, a re-list): no usage to move, no GPU changed
        self.release(alloc.uid)
        self.allocations[alloc.uid] = alloc
        for name in alloc.gpu_names:
            holders = self.by_gpu.get(name, ())
            if alloc.uid not in holders:
                self.by_gpu[name] = (*holders, alloc.uid)
        self._apply(alloc, +1.0)

    def release(self, uid: str) -> Allocation | None:
        alloc = self.allocations.pop(uid, None)
        if alloc is None:
            return None
        self._apply(alloc, -1.0)
        for name in alloc.gpu_names:
            holders = self.by_gpu.get(name)
            if holders is not None:
                rest = tuple(u for u in holders if u != uid)
                if rest:
                    self.by_gpu[name] = rest
                else:
                    del self.by_gpu[name]
        return alloc

    def observe_pod(self, pod: Mapping[str, Any]) -> PodProblem | None:
        """Bring the ledger in line with one pod as the API server has it.

        Returns what is wrong with the pod's record, for a once-per-pod report:
        ``gpu-ids`` ignored, or a request that cannot be read (its GPUs are
        then held at zero: the pod runs there whatever its annotations say)."""
        uid = (pod.get("metadata") or {}).get("uid") or ""
        if not uid or not isinstance(uid, str):
            return None
        held, problem = self.holding(pod)
        if held is not None:
            self._put(held)
            return problem
        current = self.allocations.get(uid)
        # A pod we are binding has no gpu-ids in the API yet: keep its reservation.
        if current is None or not current.reserved:
            self.release(uid)
        return problem

    def holding(self, pod: Mapping[str, Any]) -> tuple[Allocation | None, PodProblem | None]:
        """What a pod, as the API server has it, holds (``None``: nothing), and
        what is wrong with its record.  Changes nothing."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or ""
        annotations = meta.get("annotations") or {}
        phase = (pod.get("status") or {}).get("phase")
        gpu_ids = annotations.get(ann.GPU_IDS, "")
        node = (pod.get("spec") or {}).get("nodeName") or ""
        # A terminating pod still holds its GPUs until it is gone or terminal.
        if not uid or not gpu_ids or phase in TERMINAL_PHASES:
            return None, None
        text = str(gpu_ids)
        if "," in text:
            names = tuple(self._gpu_name(n.strip()) for n in text.split(",") if n.strip())
        else:  # most pods hold one GPU: no generator
            name = text.strip()
            names = (self._gpu_name(name),) if name else ()
        why = self._unbacked(names, node if isinstance(node, str) else "")
        if why:
            return None, PodProblem(ann.EVENT_GPU_IDS_IGNORED, f"gpu-ids ignored: {why}")
        problem = None
        try:
            request = parse_gpu_request(annotations)
        except RequestError as exc:
            request = GPURequest()
            problem = PodProblem(ann.EVENT_UNREADABLE_REQUEST, f"{exc}; its GPUs are held at zero")
        held = Allocation(
            uid=uid,
            pod=f"{meta.get('namespace', '')}/{meta.get('name', '')}",
            node=node,
            gpu_names=names,
            tflops=tflops_units(request.tflops_request),
            percent=request.percent_request,
            vram=vram_units(request.vram_request),
            reserved=False,
        )
        return held, problem

    def _gpu_name(self, name: str) -> str:
        """The inventory's own string for a GPU it knows, not one more copy per holder."""
        inv = self.inventory
        g = inv.gpu_index.get(name)
        return name if g is None else inv.gpu_names[g] or name

    def gpu_view(self, name: str) -> tuple[float, float, list[str]] | None:
        """(available milli-TFLOPS, available bytes, holders as namespace/name) of
        one GPU, for its status; ``None`` for a GPU the inventory lacks."""
        inv = self.inventory
        g = inv.gpu_index.get(name)
        if g is None:
            return None
        holders = sorted(
            alloc.pod for uid in self.by_gpu.get(name, ()) if self._counts_on(alloc := self.allocations[uid], g)
        )
        return max(inv.cap_t[g] - inv.used_t[g], 0.0), max(inv.cap_v[g] - inv.used_v[g], 0.0), holders

    def overcommitted(self) -> list[str]:
        """GPUs whose holders together exceed their capacity (the promise broken)."""
        inv = self.inventory
        over = (inv.used_t > inv.cap_t + 1e-6) | (inv.used_v > inv.cap_v + 1e-6)
        return [name for g in np.flatnonzero(over).tolist() if (name := inv.gpu_names[g]) is not None]

    def _unbacked(self, gpu_names: tuple[str, ...], node: str) -> str:
        """Why a pod's ``gpu-ids`` do not make it a holder ('' when they do)."""
        if not node:
            return "it has gpu-ids but is not bound to a node"
        if len(gpu_names) > MAX_GPU_COUNT:
            return f"its gpu-ids name {len(gpu_names)} GPUs (at most {MAX_GPU_COUNT})"
        inv = self.inventory
        for name in gpu_names:
            g = inv.gpu_index.get(name)
            if g is not None and self._node_of(g) != node:
                return f"its gpu-ids name GPU {name[:64]}, which is not on its node {node[:64]}"
        return ""

    def forget_pod(self, uid: str) -> None:
        """The pod is gone from the API server."""
        self.release(uid)

    def reserve(
        self,
        uid: str,
        pod: str,
        node: str,
        request: GPURequest,
        mode: PlacementMode,
        weights: tuple[float, float] = (DEFAULT_TFLOPS_WEIGHT, DEFAULT_VRAM_WEIGHT),
        mix: MixArrays | None = None,
        cpu_mem: tuple[float, float] = (0.0, 0.0),
    ) -> Allocation:
        """Check the request against the node *now* and reserve the GPUs it picks.

        Any previous allocation of the same pod is set aside first (a retried
        bind re-picks); if nothing fits, it is restored and :class:`NoFit` raised.
        """
        inv = self.inventory
        n = inv.node_index.get(node)
        if n is None:
            raise NoFit(f"node {node} is unknown to the extender")
        previous = self.release(uid)
        eligible = inv.eligible_mask(request.gpu_models, request.vendor, request.pool, request.gpu_indices)
        gpus = (n, inv.node_gpus, eligible, inv.cap_t, inv.cap_v, inv.used_t, inv.used_v)
        w_t, w_v = float(weights[0]), float(weights[1])
        if mode.fragmentation_aware and mix is not None:
            # The node's free CPU and memory, which the kernel takes the pod's own off (it is not bound yet).
            pod = (*request_units(request), *cpu_mem)
            picked = frag_pick_numba(*gpus, *inv.free_cpu_mem(), *pod, *mix.args(), w_t, w_v)
        else:
            picked = pick_gpus_numba(*gpus, *request_units(request), w_t, w_v, bool(mode.gpu_compact))
        if picked.size < request.gpu_count:
            if previous is not None:
                self._put(previous)
            raise NoFit(f"node {node} no longer has {request.gpu_count} GPU(s) with room for the request")
        alloc = Allocation(
            uid=uid,
            pod=pod,
            node=node,
            gpu_names=tuple(inv.gpu_names[g] for g in picked),  # type: ignore[misc]
            tflops=tflops_units(request.tflops_request),
            percent=request.percent_request,
            vram=vram_units(request.vram_request),
            reserved=True,
        )
        self._put(alloc)
        return alloc

    def commit(self, uid: str) -> None:
        alloc = self.allocations.get(uid)
        if alloc is not None:
            alloc.reserved = False

    def resize(self, uid: str, request: GPURequest) -> Allocation:
        """Reserve a pod's new per-GPU request on the GPUs it already holds.

        Returns the previous allocation, for :meth:`restore` if the pod cannot
        be patched.  Raises :class:`NoFit`, changing nothing, when the GPUs
        lack the room.
        """
        alloc = self.allocations.get(uid)
        if alloc is None:
            raise NoFit(f"pod {uid} holds no GPUs")
        tflops = tflops_units(request.tflops_request)
        vram = vram_units(request.vram_request)
        why = _resize_shortfall(self.inventory, alloc, tflops, request.percent_request, vram)
        if why:
            raise NoFit(why)
        self._put(
            Allocation(
                uid=uid,
                pod=alloc.pod,
                node=alloc.node,
                gpu_names=alloc.gpu_names,
                tflops=tflops,
                percent=request.percent_request,
                vram=vram,
                reserved=True,
            )
        )
        return alloc

    def restore(self, previous: Allocation) -> None:
        """Undo a :meth:`resize` whose patch failed."""
        self._put(previous)


def _resize_shortfall(inv: Inventory, alloc: Allocation, tflops: float, percent: float, vram: float) -> str:
    """Why new per-GPU amounts do not fit on the GPUs the pod holds ('' if they do)."""
    for name in alloc.gpu_names:
        g = inv.gpu_index.get(name)
        if g is None:
            return f"GPU {name} is unknown"
        cap_t = inv.cap_t[g]
        need_t = tflops + float(np.ceil(percent / 100.0 * cap_t - 1e-9))
        room_t = cap_t - inv.used_t[g] + alloc.tflops_on(cap_t)
        room_v = inv.cap_v[g] - inv.used_v[g] + alloc.vram
        if need_t > room_t:
            room, need = room_t / MILLI_PER_TFLOPS, need_t / MILLI_PER_TFLOPS
            return f"GPU {name} has room for {room:g} TFLOPS, the pod needs {need:g}"
        if vram > room_v:
            # Rounded up to Mi for reading, unless that would show the two as equal.
            exact = format_bytes(room_v, exact=False) == format_bytes(vram, exact=False)
            return (
                f"GPU {name} has room for {format_bytes(room_v, exact=exact)} of VRAM, "
                f"the pod needs {format_bytes(vram, exact=exact)}"
            )
    return ""
