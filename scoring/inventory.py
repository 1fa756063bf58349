"""The GPU inventory as arrays, updated incrementally.

One slot per GPU (capacity, usage, eligibility codes) and one row per node
listing its GPU slots, so the kernels index plain arrays.  Names map to
indices through dicts kept beside the arrays; slots of deleted GPUs are
reused.  Units: TFLOPS in milli-TFLOPS, VRAM in bytes, both whole numbers
held in float64 (see :mod:`tfsched.scoring.kernels`).

The inventory holds *capacity and usage numbers only*.  Who holds which share
is the ledger's business (``tfsched.allocation.ledger``), which is the one writer of
``used_t``/``used_v``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from tfsched.clustermodel.gpurequest import GPURequest
from tfsched.clustermodel.quantity import milli_tflops, whole_bytes
from tfsched.scoring.kernels import node_free_share_numba, request_share_numba


@functools.lru_cache(maxsize=1024)  # a cluster's GPUs and pods carry a few values; round() is slow
def tflops_units(tflops: float) -> float:
    """A TFLOPS value in the inventory's unit: whole milli-TFLOPS as float64."""
    return float(milli_tflops(tflops))


def vram_units(vram: float) -> float:
    """A VRAM value in the inventory's unit: whole bytes as float64."""
    return float(whole_bytes(vram))


def request_units(request: GPURequest) -> tuple[float, float, float, int]:
    """The kernels' per-GPU request: TFLOPS units, share of a GPU's TFLOPS, VRAM units, GPU count."""
    return (
        tflops_units(request.tflops_request),
        float(request.percent_request / 100.0),
        vram_units(request.vram_request),
        int(request.gpu_count),
    )


class GPUSpec(NamedTuple):
    """What the inventory needs to know about one GPU object.  A NamedTuple, not a frozen
    dataclass: one is made per GPU event, and the frozen __init__ costs a call per field."""

    name: str
    node: str
    tflops: float  # capacity, TFLOPS
    vram: float  # capacity, bytes
    model: str = ""
    vendor: str = ""
    pool: str = ""
    device_index: int = -1
    usable: bool = True
    used_by: str = ""  # status.usedBy when another system hands the GPU out (then not usable)


def capable_gpu_share(
    node_gpus: np.ndarray,
    usable: np.ndarray,
    cap_t: np.ndarray,
    cap_v: np.ndarray,
    alloc_cpu: np.ndarray,
    alloc_mem: np.ndarray,
    types: Sequence[tuple[float, float, float, int, float, float]],
) -> np.ndarray:
    """Per request type (per-GPU TFLOPS units, share, VRAM units, GPU count, milli-CPU,
    memory bytes): the share of all usable GPUs that are on nodes which, empty, hold the
    type (enough allocatable CPU and memory, ``count`` usable GPUs each big enough);
    0 when nothing does. Capacity only: usage does not enter."""
    rows = min(node_gpus.shape[0], alloc_cpu.shape[0])
    slots = node_gpus[:rows]
    linked = slots >= 0
    g = np.where(linked, slots, 0)
    use = usable[g] & linked
    ct, cv = cap_t[g], cap_v[g]
    gpus_per_node = use.sum(axis=1)
    total = int(gpus_per_node.sum())
    out = np.zeros(len(types), np.float64)
    if total == 0:
        return out
    for i, (t, pct, v, count, cpu, mem) in enumerate(types):
        big_enough = use & (ct >= t + np.ceil(pct * ct - 1e-9)) & (cv >= v)
        holds = (big_enough.sum(axis=1) >= count) & (alloc_cpu[:rows] >= cpu) & (alloc_mem[:rows] >= mem)
        out[i] = gpus_per_node[holds].sum() / total
    return out


class Codes:
    """Interns strings (models, vendors, pools) as small integers; 0 is ''."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {"": 0}

    def code(self, value: str) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._codes)
        return code

    def lookup(self, value: str) -> int:
        """The code of a known value, or -2 (matches nothing) for an unknown one."""
        return self._codes.get(value, -2)


class Inventory:
    def __init__(self, gpu_capacity: int = 64, node_capacity: int = 16, slots: int = 8) -> None:
        self.gpu_node = np.full(gpu_capacity, -1, np.int32)
        self.cap_t = np.zeros(gpu_capacity, np.float64)
        self.cap_v = np.zeros(gpu_capacity, np.float64)
        self.used_t = np.zeros(gpu_capacity, np.float64)
        self.used_v = np.zeros(gpu_capacity, np.float64)
        self.holders = np.zeros(gpu_capacity, np.int32)  # allocations holding a share (the ledger's)
        self.usable = np.zeros(gpu_capacity, np.bool_)
        self.model = np.zeros(gpu_capacity, np.int32)
        self.vendor = np.zeros(gpu_capacity, np.int32)
        self.pool = np.zeros(gpu_capacity, np.int32)
        self.device_index = np.full(gpu_capacity, -1, np.int32)
        self.node_gpus = np.full((node_capacity, slots), -1, np.int32)
        self.node_present = np.zeros(node_capacity, np.bool_)
        # CPU (milli) and memory (bytes) per node: allocatable (inf while unknown), and what
        # the pods bound there request (kept only for the fragmentation-aware mode).
        self.node_alloc_cpu = np.full(node_capacity, np.inf)
        self.node_alloc_mem = np.full(node_capacity, np.inf)
        self.node_used_cpu = np.zeros(node_capacity, np.float64)
        self.node_used_mem = np.zeros(node_capacity, np.float64)
        # Bumped on every change to a node's GPUs or CPU/memory: what was computed for a node
        # at one version holds while it stays (extender.placement's cache of rises).
        self.node_version = np.zeros(node_capacity, np.int64)
        # Bumped when what the cluster could ever hold changes (a GPU's capacity or usability,
        # a GPU joining or leaving a node, a node's allocatable), not when usage does.
        self.capacity_version = 0
        self._capable: dict[tuple[float, float, float, int, float, float], float] = {}
        self._capable_version = -1
        self.gpu_index: dict[str, int] = {}
        self.gpu_names: list[str | None] = []
        self.node_index: dict[str, int] = {}
        self.node_names: list[str] = []
        # GPUs linked per node: a row of node_gpus holds them first, then -1s.
        self._linked: list[int] = []
        self.models = Codes()
        self.vendors = Codes()
        self.pools = Codes()
        self._free_slots: list[int] = []
        self._node_pool: dict[str, str] = {}
        self._name_rank = np.zeros(0, np.float64)

    # -- nodes ---------------------------------------------------------------

    def node(self, name: str) -> int:
        """The index of a node, creating its row on first sight."""
        idx = self.node_index.get(name)
        if idx is None:
            idx = len(self.node_names)
            if idx >= self.node_gpus.shape[0]:
                grown = np.full((idx * 2, self.node_gpus.shape[1]), -1, np.int32)
                grown[:idx] = self.node_gpus
                self.node_gpus = grown
                self.node_present = np.concatenate([self.node_present, np.zeros(idx, np.bool_)])
                self.node_alloc_cpu = np.concatenate([self.node_alloc_cpu, np.full(idx, np.inf)])
                self.node_alloc_mem = np.concatenate([self.node_alloc_mem, np.full(idx, np.inf)])
                self.node_used_cpu = np.concatenate([self.node_used_cpu, np.zeros(idx)])
                self.node_used_mem = np.concatenate([self.node_used_mem, np.zeros(idx)])
                self.node_version = np.concatenate([self.node_version, np.zeros(idx, np.int64)])
            self.node_names.append(name)
            self._linked.append(0)
            self.node_index[name] = idx
        return idx

    def touch_node(self, node: int) -> None:
        if node >= 0:
            self.node_version[node] += 1

    def touch_gpu(self, g: int) -> None:
        self.touch_node(int(self.gpu_node[g]))

    def set_allocatable(self, node: int, cpu: float, mem: float) -> None:
        """A node's allocatable milli-CPU and memory bytes (inf: unknown)."""
        if self.node_alloc_cpu[node] != cpu or self.node_alloc_mem[node] != mem:
            self.node_alloc_cpu[node] = cpu
            self.node_alloc_mem[node] = mem
            self.capacity_version += 1
        self.touch_node(node)

    def capable_share(self, types: Sequence[tuple[float, float, float, int, float, float]]) -> np.ndarray:
        """Per request type (``request_units`` + the pod's milli-CPU and memory bytes): the
        share of the usable GPUs that sit on nodes able to hold it when empty
        (:func:`capable_gpu_share`); kept per type until the capacity changes."""
        if self._capable_version != self.capacity_version:
            self._capable.clear()
            self._capable_version = self.capacity_version
        missing = [t for t in dict.fromkeys(types) if t not in self._capable]
        if missing:
            shares = capable_gpu_share(
                self.node_gpus, self.usable, self.cap_t, self.cap_v, self.node_alloc_cpu, self.node_alloc_mem, missing
            )
            self._capable.update(zip(missing, shares.tolist(), strict=True))
        return np.fromiter((self._capable[t] for t in types), np.float64, len(types))

    def free_cpu_mem(self) -> tuple[np.ndarray, np.ndarray]:
        """Per node index: CPU (milli) and memory (bytes) not requested by its pods."""
        return self.node_alloc_cpu - self.node_used_cpu, self.node_alloc_mem - self.node_used_mem

    def name_rank(self, nodes: np.ndarray) -> np.ndarray:
        """Per node of ``nodes``: its place among all node names in sorted order (-1: unknown,
        +inf). A stable order: the same after a restart or a re-list, whatever order the
        nodes arrived in; recomputed only when nodes were added."""
        if self._name_rank.size != len(self.node_names):
            rank = np.empty(len(self.node_names), np.float64)
            rank[np.argsort(np.array(self.node_names))] = np.arange(len(self.node_names))
            self._name_rank = rank
        out = np.full(nodes.shape[0], np.inf)
        known = (nodes >= 0) & (nodes < self._name_rank.size)
        out[known] = self._name_rank[nodes[known]]
        return out

    def free_cpu_per_free_gpu(self, nodes: np.ndarray, w_t: float, w_v: float) -> np.ndarray:
        """Per node of ``nodes`` (-1: unknown, 0): free milli-CPU per free GPU share
        (TFLOPS and VRAM weighed ``w_t``/``w_v``, usable GPUs; at least 1/20 of a GPU,
        so nodes with every GPU taken rank by their free CPU)."""
        gpus = (self.node_gpus, self.usable, self.cap_t, self.cap_v, self.used_t, self.used_v)
        free_gpus = node_free_share_numba(nodes, *gpus, w_t, w_v)
        known = nodes >= 0
        free_cpu = self.free_cpu_mem()[0][np.where(known, nodes, 0)]
        return np.where(known, free_cpu / np.maximum(free_gpus, 0.05), 0.0)

    def request_share(
        self, nodes: np.ndarray, req_t: float, req_pct: float, req_v: float, count: int, w_t: float, w_v: float
    ) -> np.ndarray:
        """Per node of ``nodes``: the GPU shares a request (``request_units``) takes there
        (``kernels.request_share_numba``)."""
        gpus = (self.node_gpus, self.usable, self.cap_t, self.cap_v)
        return request_share_numba(nodes, *gpus, req_t, req_pct, req_v, count, w_t, w_v)

    def set_node_present(self, name: str, present: bool) -> None:
        """Whether a Node object exists for ``name`` (GPU objects may arrive first)."""
        idx = self.node(name)  # may grow node_present, so look the array up after
        self.node_present[idx] = present

    def node_indices(self, names: list[str]) -> np.ndarray:
        """Indices for node names; -1 for names the inventory has never seen."""
        count = len(names)
        if count > 1:
            # One C call for the usual case, every name known: 2x faster than a generator.
            with contextlib.suppress(KeyError):
                return np.fromiter(itemgetter(*names)(self.node_index), np.int32, count)
        get = self.node_index.get
        return np.fromiter((get(n, -1) for n in names), np.int32, count)

    def gpus_of_node(self, node: int) -> np.ndarray:
        row = self.node_gpus[node]
        return row[row >= 0]

    # -- GPUs ----------------------------------------------------------------

    def upsert_gpu(self, spec: GPUSpec) -> int:
        """Add or update one GPU; usage already recorded on it is kept."""
        g = self.gpu_index.get(spec.name)
        if g is None:
            return self.add_gpus([spec])[0]
        if self.node_names[self.gpu_node[g]] != spec.node:
            self._unlink(g)
        node = self.node(spec.node)
        if self.gpu_node[g] != node:
            self._link(g, node)
        cap_t, cap_v = tflops_units(spec.tflops), vram_units(spec.vram)
        if self.cap_t[g] != cap_t or self.cap_v[g] != cap_v or self.usable[g] != spec.usable:
            self.capacity_version += 1
        self.cap_t[g] = cap_t
        self.cap_v[g] = cap_v
        self.usable[g] = spec.usable
        self.model[g] = self.models.code(spec.model)
        self.vendor[g] = self.vendors.code(spec.vendor)
        self.pool[g] = self.pools.code(spec.pool)
        self.device_index[g] = spec.device_index
        self.touch_node(node)
        return g

    def add_gpus(self, specs: Sequence[GPUSpec]) -> list[int]:
        """:meth:`upsert_gpu` for GPUs not seen before, each name once (every GPU of a first
        list's page): nothing to compare, and one array write per field for them all, not
        one per GPU.  Their slots."""
        if not specs:
            return []
        if self._free_slots:  # slots to reuse first, one by one
            slots = [self._new_slot(spec.name) for spec in specs]
            where: slice | np.ndarray = np.array(slots, np.intp)
        else:  # a first list: the next slots in a row, the arrays grown once
            first = len(self.gpu_names)
            if first + len(specs) > self.cap_t.shape[0]:
                self._grow_gpus(max(2 * self.cap_t.shape[0], first + len(specs)))
            slots = list(range(first, first + len(specs)))
            names = [spec.name for spec in specs]
            self.gpu_names.extend(names)
            self.gpu_index.update(zip(names, slots, strict=True))
            where = slice(first, first + len(specs))  # indexed once, not converted per column
        self.cap_t[where] = [tflops_units(spec.tflops) for spec in specs]
        self.cap_v[where] = [vram_units(spec.vram) for spec in specs]
        self.usable[where] = [spec.usable for spec in specs]
        self.model[where] = [self.models.code(spec.model) for spec in specs]
        self.vendor[where] = [self.vendors.code(spec.vendor) for spec in specs]
        self.pool[where] = [self.pools.code(spec.pool) for spec in specs]
        self.device_index[where] = [spec.device_index for spec in specs]
        nodes = [self.node(spec.node) for spec in specs]  # may grow the node arrays: looked up after
        linked = self._linked
        rows = []  # each GPU's place in its node's row, as _link gives it
        for node in nodes:
            rows.append(linked[node])
            linked[node] += 1
        width = self.node_gpus.shape[1]
        if max(rows) >= width:
            grown = np.full((self.node_gpus.shape[0], max(2 * width, max(rows) + 1)), -1, np.int32)
            grown[:, :width] = self.node_gpus
            self.node_gpus = grown
        self.node_gpus[nodes, rows] = slots
        self.gpu_node[where] = nodes
        self.node_version[nodes] += 1
        self.capacity_version += 1
        return slots

    def remove_gpu(self, name: str) -> None:
        g = self.gpu_index.pop(name, None)
        if g is None:
            return
        self._unlink(g)
        self.gpu_names[g] = None
        self.capacity_version += 1
        self.usable[g] = False
        self.cap_t[g] = self.cap_v[g] = 0.0
        self.used_t[g] = self.used_v[g] = 0.0
        self.holders[g] = 0
        self._free_slots.append(g)

    def gpu(self, name: str) -> int:
        """The slot of a known GPU (KeyError otherwise)."""
        return self.gpu_index[name]

    def _new_slot(self, name: str) -> int:
        if self._free_slots:
            g = self._free_slots.pop()
            self.gpu_names[g] = name
        else:
            g = len(self.gpu_names)
            if g >= self.cap_t.shape[0]:
                self._grow_gpus(g * 2)
            self.gpu_names.append(name)
        self.gpu_index[name] = g
        return g

    def _grow_gpus(self, size: int) -> None:
        for attr in ("cap_t", "cap_v", "used_t", "used_v", "holders", "usable", "model", "vendor", "pool"):
            old = getattr(self, attr)
            new = np.zeros(size, old.dtype)
            new[: old.shape[0]] = old
            setattr(self, attr, new)
        for attr in ("gpu_node", "device_index"):
            old = getattr(self, attr)
            new = np.full(size, -1, old.dtype)
            new[: old.shape[0]] = old
            setattr(self, attr, new)

    def _link(self, g: int, node: int) -> None:
        free = self._linked[node]  # the first -1 of the row (counted: a numpy search per GPU cost more)
        if free == self.node_gpus.shape[1]:
            slots = self.node_gpus.shape[1]
            grown = np.full((self.node_gpus.shape[0], slots * 2), -1, np.int32)
            grown[:, :slots] = self.node_gpus
            self.node_gpus = grown
        self.node_gpus[node, free] = g
        self._linked[node] = free + 1
        self.gpu_node[g] = node
        self.capacity_version += 1
        self.touch_node(node)

    def _unlink(self, g: int) -> None:
        node = self.gpu_node[g]
        if node < 0:
            return
        self.touch_node(int(node))
        row = self.node_gpus[node]
        kept = row[(row >= 0) & (row != g)]
        row[:] = -1
        row[: kept.size] = kept  # kernels stop at the first -1
        self._linked[node] = kept.size
        self.gpu_node[g] = -1
        self.capacity_version += 1

    # -- eligibility ---------------------------------------------------------

    def eligible_mask(
        self,
        models: Sequence[str] = (),
        vendor: str = "",
        pool: str = "",
        device_indices: frozenset[int] | None = None,
    ) -> np.ndarray:
        """Usable GPUs that match a pod's model (any of ``models``), vendor, pool and
        index restrictions.

        The common case (no restriction) returns the ``usable`` array itself,
        without a copy.
        """
        mask = self.usable
        if len(models) == 1:
            mask = mask & (self.model == self.models.lookup(models[0]))
        elif models:
            mask = mask & np.isin(self.model, np.fromiter((self.models.lookup(m) for m in models), np.int32))
        if vendor:
            mask = mask & (self.vendor == self.vendors.lookup(vendor))
        if pool:
            mask = mask & (self.pool == self.pools.lookup(pool))
        if device_indices:
            mask = mask & np.isin(self.device_index, np.fromiter(device_indices, np.int32))
        return mask
