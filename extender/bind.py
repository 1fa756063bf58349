"""Bind: pick the exact GPUs, record them on the pod, create the Binding.

The fit check and the reservation happen in one synchronous step of the
ledger, so two binds can never take the same share of a GPU whatever order
kube-scheduler's calls arrive in.  Any failure after the reservation puts the
ledger and the pod's record back as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from tfsched.allocation.config import DEFAULT_SCHEDULER
from tfsched.allocation.ledger import NoFit
from tfsched.allocation.noderesources import pod_cpu_mem
from tfsched.allocation.state import ClusterState
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind, Obj
from tfsched.clustermodel.gpurequest import GPURequest, RequestError, is_gpu_pod, parse_gpu_request
from tfsched.clustermodel.nodeaffinity import node_refusal
from tfsched.clustermodel.quantity import format_bytes, format_tflops
from tfsched.kubeapi.client import KubeApiError, KubeClient, pod_path
from tfsched.kubeapi.leader import GateClosed, WriterGate

log = logging.getLogger(__name__)


BIND_TIMEOUT_S = 5.0


class BindError(Exception):
    """Bind failed; the message goes back to kube-scheduler in the result's Error."""


class PodWriter(Protocol):
    """Where bind's writes go: the API server, or memory in snapshot mode."""

    async def fetch_pod(self, namespace: str, name: str) -> Obj | None: ...
    async def bind(self, namespace: str, name: str, uid: str, node: str, annotations: dict[str, str]) -> None: ...


class ApiPodWriter:
    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def fetch_pod(self, namespace: str, name: str) -> Obj | None:
        try:
            return await self.client.get(pod_path(namespace, name))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def bind(self, namespace: str, name: str, uid: str, node: str, annotations: dict[str, str]) -> None:
        # The API server copies a Binding's annotations onto the pod in the same
        # write that sets its node: the GPUs are recorded if and only if it binds.
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": annotations},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        # Bounded well below a lease duration, so a leader that lost its lease
        # cannot still be writing when the next one has fenced.
        await self.client.request("POST", pod_path(namespace, name, "binding"), body=body, timeout=BIND_TIMEOUT_S)


class MemoryPodWriter:
    """Snapshot mode: binds change only the cached pods."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state

    async def fetch_pod(self, namespace: str, name: str) -> Obj | None:
        return self.state.cache.get(Kind.POD, namespace, name)

    def _update(self, namespace: str, name: str, change: Any) -> None:
        pod = self.state.cache.get(Kind.POD, namespace, name)
        if pod is None:
            raise BindError(f"pod {namespace}/{name} is not in the snapshot")
        updated = {**pod, "metadata": dict(pod.get("metadata") or {}), "spec": dict(pod.get("spec") or {})}
        change(updated)
        self.state.cache.apply(Kind.POD, EventType.MODIFIED, updated)

    async def bind(self, namespace: str, name: str, uid: str, node: str, annotations: dict[str, str]) -> None:
        def change(pod: Obj) -> None:
            pod["spec"]["nodeName"] = node
            pod["metadata"]["annotations"] = {**(pod["metadata"].get("annotations") or {}), **annotations}

        self._update(namespace, name, change)


def placement_annotations(declared: GPURequest, effective: GPURequest, gpu_names: tuple[str, ...]) -> dict[str, str]:
    """What bind writes on the pod: the GPUs, and the request values it was
    placed with where they differ from the declared ones (exact quantities, so
    the ledger re-reads the same numbers after a restart)."""
    out = {ann.GPU_IDS: ",".join(gpu_names)}
    if (effective.tflops_request, effective.tflops_limit) != (declared.tflops_request, declared.tflops_limit):
        out[ann.TFLOPS_REQUEST] = format_tflops(effective.tflops_request)
        out[ann.TFLOPS_LIMIT] = format_tflops(effective.tflops_limit)
    if (effective.vram_request, effective.vram_limit) != (declared.vram_request, declared.vram_limit):
        out[ann.VRAM_REQUEST] = format_bytes(effective.vram_request)
        out[ann.VRAM_LIMIT] = format_bytes(effective.vram_limit)
    return out


@dataclass
class BindResult:
    node: str
    gpu_names: tuple[str, ...]
    request: GPURequest


class Binder:
    """Binds pods, one attempt per pod at a time.

    The fit check and the reservation are one synchronous ledger step, so binds
    to the same node need no lock of their own: each reserves distinct shares
    the moment it starts, and filter sees them at once.  Holding a lock across
    the API round trips would only queue binds behind each other until
    kube-scheduler's timeout.  What must not interleave is two attempts for the
    *same* pod: kube-scheduler retries a bind it timed out on while the first
    may still finish, so a retry waits for it and then looks at what it did.
    """

    def __init__(self, state: ClusterState, writer: PodWriter, gate: WriterGate | None = None) -> None:
        self.state = state
        self.writer = writer
        self.gate = gate or WriterGate()
        self._pod_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def bind(self, namespace: str, name: str, uid: str, node: str) -> BindResult:
        state = self.state
        node_refused = self._node_refusal(node)
        if node_refused:
            raise BindError(node_refused)
        pod = state.cache.get(Kind.POD, namespace, name) or await self.writer.fetch_pod(namespace, name)
        if pod is None:
            raise BindError(f"pod {namespace}/{name} not found")
        meta = pod.get("metadata") or {}
        if uid and meta.get("uid") and meta["uid"] != uid:
            raise BindError(f"pod {namespace}/{name} has uid {meta['uid']}, not {uid}: it was re-created")
        uid = uid or meta.get("uid", "")
        refused = self._pod_refusal(pod, node)
        if refused:
            raise BindError(f"pod {namespace}/{name}: {refused}")
        try:
            async with self.gate.writing(), self._one_attempt(uid):
                return await self._bind(namespace, name, uid, node, pod)
        except GateClosed as exc:
            raise BindError(str(exc)) from None

    def _node_refusal(self, node: str) -> str:
        inv = self.state.inventory
        n = inv.node_index.get(node)
        if n is None:
            return f"node {node[:64]!r} is unknown to the extender"
        if not inv.node_present[n]:
            return f"node {node[:64]!r} does not exist (it has GPU objects but no Node)"
        return ""

    def _pod_refusal(self, pod: Obj, node: str) -> str:
        """Why kube-scheduler would never ask to bind this pod to this node ('' if it might)."""
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        if not is_gpu_pod(meta.get("annotations")):
            return "not a GPU pod of this extender (no tensor-fusion.ai annotations)"
        scheduler = spec.get("schedulerName") or DEFAULT_SCHEDULER
        if scheduler not in self.state.config.scheduler_names:
            return f"its schedulerName {str(scheduler)[:64]!r} is not a profile that uses this extender"
        bound_to = spec.get("nodeName")
        if bound_to and bound_to != node:
            return f"already bound to node {str(bound_to)[:64]}"
        node_obj = self.state.cache.get(Kind.NODE, "", node) or {}
        labels = (node_obj.get("metadata") or {}).get("labels") or {}
        return node_refusal(spec, node, labels if isinstance(labels, dict) else {})

    async def _bind(self, namespace: str, name: str, uid: str, node: str, pod: Obj) -> BindResult:
        state = self.state
        ledger = state.ledger
        previous = ledger.allocations.get(uid)
        if previous is not None and not previous.reserved:
            # An earlier attempt recorded GPUs: find out whether it also bound the pod.
            fresh = await self.writer.fetch_pod(namespace, name) or pod
            bound_to = (fresh.get("spec") or {}).get("nodeName")
            if bound_to == node:
                return BindResult(node, previous.gpu_names, parse_gpu_request(_annotations(fresh)))
            if bound_to:
                raise BindError(f"pod {namespace}/{name} is already bound to node {bound_to}")
            pod = fresh
        try:
            declared, effective = state.requests(pod)
        except RequestError as exc:
            raise BindError(str(exc)) from None
        mode = state.config.mode_for(effective.pool)
        try:
            cpu_mem, mix = (0.0, 0.0), None
            if mode.fragmentation_aware:
                cpu_mem = pod_cpu_mem(pod)
                mix = state.mix.arrays(effective, *cpu_mem)
            alloc = ledger.reserve(
                uid, f"{namespace}/{name}", node, effective, mode, state.config.weights, mix, cpu_mem
            )
        except NoFit as exc:
            raise BindError(str(exc)) from None
        try:
            record = placement_annotations(declared, effective, alloc.gpu_names)
            await self.writer.bind(namespace, name, uid, node, record)
        except Exception as exc:
            ledger.release(uid)
            if previous is not None:
                ledger.restore(previous)
            raise BindError(f"binding {namespace}/{name} to {node} failed: {exc}") from exc
        ledger.commit(uid)
        return BindResult(node, alloc.gpu_names, effective)

    @contextlib.asynccontextmanager
    async def _one_attempt(self, uid: str) -> AsyncIterator[None]:
        lock, users = self._pod_locks.get(uid) or (asyncio.Lock(), 0)
        self._pod_locks[uid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._pod_locks[uid]
            if users == 1:
                del self._pod_locks[uid]
            else:
                self._pod_locks[uid] = (lock, users - 1)


def _annotations(pod: Obj) -> dict[str, str]:
    return (pod.get("metadata") or {}).get("annotations") or {}
