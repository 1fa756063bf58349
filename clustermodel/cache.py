"""The informer-style cache: raw objects (dicts parsed with orjson) by kind.

Watchers (``clustermodel.informer``) or a snapshot file feed it; handlers
subscribed per kind see every change in order.  Objects are kept as the API
server sent them: decoding thousands of Nodes into typed models costs
seconds, dicts cost milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import yaml

from tfsched.clustermodel import annotations as ann

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds


class Kind(StrEnum):
    NODE = "Node"
    POD = "Pod"
    GPU = ann.GPU_KIND
    WORKLOAD = ann.WORKLOAD_KIND
    WORKLOAD_PROFILE = ann.WORKLOAD_PROFILE_KIND


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


Handler = Callable[[EventType, Obj, "Obj | None"], None]  # (event, new or deleted object, old object)
ErrorHandler = Callable[[Kind, Any, Exception], None]  # (kind, the object that failed, why)


class ObjectError(ValueError):
    """An object whose identity cannot be read; it is skipped, never stored."""


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {} if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        raise ObjectError("metadata is not an object")
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise ObjectError("metadata.name and metadata.namespace must be strings")
    return (namespace, name)


def _slim_meta(meta: Mapping[str, Any], *fields: str) -> Obj:
    keep = ("name", "namespace", "uid", "resourceVersion", "labels", "generation", *fields)
    return {k: meta[k] for k in keep if k in meta}


def slim_node(node: Obj) -> Obj:
    """What tfsched needs of a Node: its identity.  Real Node objects carry
    images, managedFields and conditions worth kilobytes each."""
    return {"kind": "Node", "metadata": _slim_meta(node.get("metadata") or {})}


def slim_gpu(gpu: Obj) -> Obj:
    """The inventory arrays hold capacity, model, pool and node; keep identity,
    the phase and what tfsched writes."""
    status = gpu.get("status") or {}
    return {
        "kind": ann.GPU_KIND,
        "metadata": _slim_meta(gpu.get("metadata") or {}),
        # What the status writer last wrote, so it writes only what changed.
        "status": {k: status[k] for k in ("phase", "available", "runningApps") if k in status},
    }


def _slim_containers(containers: Any) -> list[Obj]:
    """Of each container, only its CPU and memory requests (what NodeResourcesFit counts)."""
    out: list[Obj] = []
    for c in containers if isinstance(containers, list) else []:
        resources = c.get("resources") if isinstance(c, dict) else None
        requests = resources.get("requests") if isinstance(resources, dict) else None
        kept = {k: requests[k] for k in ("cpu", "memory") if k in requests} if isinstance(requests, dict) else {}
        out.append({"resources": {"requests": kept}} if kept else {})
    return out


def slim_pod(pod: Obj) -> Obj:
    """Pods keep annotations, owners, where they run and their CPU and memory
    requests; not the rest of their containers."""
    meta = _slim_meta(pod.get("metadata") or {}, "annotations", "ownerReferences", "deletionTimestamp")
    spec = {k: v for k, v in (pod.get("spec") or {}).items() if k in ("nodeName", "schedulerName", "nodeSelector")}
    for key in ("containers", "initContainers"):
        containers = _slim_containers((pod.get("spec") or {}).get(key))
        if any(containers):
            spec[key] = containers
    # Bind checks the pod's required node affinity as kube-scheduler would.
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    status = {k: v for k, v in (pod.get("status") or {}).items() if k in ("phase", "startTime")}
    return {"kind": "Pod", "metadata": meta, "spec": spec, "status": status}


SLIM: dict[Kind, Callable[[Obj], Obj]] = {Kind.NODE: slim_node, Kind.GPU: slim_gpu, Kind.POD: slim_pod}


class ClusterCache:
    """Handlers see each object whole; the store keeps the slim form
    (see :data:`SLIM`) to bound memory on large clusters."""

    def __init__(self, on_error: ErrorHandler | None = None) -> None:
        self.objects: dict[Kind, dict[Key, Obj]] = {kind: {} for kind in Kind}
        # Told about every object that could not be taken in; the rest go on.
        self.on_error: ErrorHandler = on_error or _log_error
        self._handlers: dict[Kind, list[Handler]] = {kind: [] for kind in Kind}
        # Which kinds have finished their first list; readiness waits for all watched kinds.
        self.synced: set[Kind] = set()

    def subscribe(self, kind: Kind, handler: Handler) -> None:
        self._handlers[kind].append(handler)

    def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        return self.objects[kind].get((namespace, name))

    def list(self, kind: Kind) -> Iterator[Obj]:
        return iter(list(self.objects[kind].values()))

    def apply(self, kind: Kind, event: EventType, obj: Obj) -> bool:
        """Record one watch event and tell the handlers.

        Never raises: an object that cannot be taken in (hostile shapes are
        possible in any annotation or custom resource) is skipped and handed
        to :attr:`on_error`, so one bad object cannot stop a list or a watch.
        Returns whether it was taken in whole."""
        try:
            store = self.objects[kind]
            key = key_of(obj)
            if event is EventType.DELETED:
                old = store.pop(key, None)
                return self._notify(kind, EventType.DELETED, obj, old)
            slim = SLIM.get(kind)
            stored = slim(obj) if slim is not None else obj
        except Exception as exc:
            self.on_error(kind, obj, exc)
            return False
        old = store.get(key)
        store[key] = stored
        return self._notify(kind, EventType.MODIFIED if old is not None else EventType.ADDED, obj, old)

    def replace(self, kind: Kind, objs: list[Obj]) -> None:
        """A fresh list of ``kind``: adds and updates what it holds, deletes what it lacks."""
        relist = self.relist(kind)
        for obj in objs:
            relist.add(obj)
        relist.finish()

    def relist(self, kind: Kind) -> Relist:
        """Replace ``kind`` page by page, so a large list is never held whole."""
        return Relist(self, kind)

    def _notify(self, kind: Kind, event: EventType, obj: Obj, old: Obj | None) -> bool:
        whole = True
        for handler in self._handlers[kind]:
            try:
                handler(event, obj, old)
            except Exception as exc:  # a bug in a handler: isolate the object, keep the rest
                self.on_error(kind, obj, exc)
                whole = False
        return whole


def _log_error(kind: Kind, obj: Any, exc: Exception) -> None:
    log.warning("%s: could not take in an object: %s: %s", kind, type(exc).__name__, exc)


class Relist:
    def __init__(self, cache: ClusterCache, kind: Kind) -> None:
        self.cache = cache
        self.kind = kind
        self.seen: set[Key] = set()

    def add(self, obj: Obj) -> None:
        try:
            self.seen.add(key_of(obj))
        except ObjectError as exc:
            self.cache.on_error(self.kind, obj, exc)
            return
        self.cache.apply(self.kind, EventType.MODIFIED, obj)

    def finish(self) -> None:
        """Delete what the new list lacked; the kind now counts as synced."""
        store = self.cache.objects[self.kind]
        for key in [k for k in store if k not in self.seen]:
            self.cache.apply(self.kind, EventType.DELETED, store[key])
        self.cache.synced.add(self.kind)


class SnapshotError(ValueError):
    """A snapshot file that cannot be read; the message says where."""


_KIND_BY_NAME = {k.value.lower(): k for k in Kind}


def kind_of(obj: Any) -> Kind | None:
    """The cached kind an object's ``kind`` names (any case), None for others."""
    return _KIND_BY_NAME.get(str(obj.get("kind", "")).lower()) if isinstance(obj, dict) else None


def read_snapshot(path: str | Path) -> dict[Kind, list[Obj]]:
    """Objects from a file as ``kubectl get nodes,pods,gpus,tensorfusionworkloads -A -o yaml``
    (or ``-o json``) writes: a ``List``, a single object, or several YAML documents.
    Kinds tfsched does not use are ignored."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror or exc}") from None
    try:
        docs = [orjson.loads(text)] if text.lstrip()[:1] in (b"{", b"[") else list(yaml.safe_load_all(text))
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise SnapshotError(f"snapshot {path} is neither JSON nor YAML: {exc}") from None
    out: dict[Kind, list[Obj]] = {kind: [] for kind in Kind}

    def take(doc: Any, where: str) -> None:
        if doc is None:
            return
        if isinstance(doc, list):
            for i, item in enumerate(doc):
                take(item, f"{where}[{i}]")
            return
        if not isinstance(doc, dict):
            raise SnapshotError(f"snapshot {path}: {where} is not an object")
        kind = str(doc.get("kind", ""))
        if kind == "List" or (kind.endswith("List") and "items" in doc):
            take(doc.get("items") or [], f"{where}.items")
            return
        known = kind_of(doc)
        if known is None:
            return
        if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
            raise SnapshotError(f"snapshot {path}: {where} ({kind}) has no metadata.name")
        out[known].append(doc)

    for i, doc in enumerate(docs):
        take(doc, f"document {i}")
    return out
