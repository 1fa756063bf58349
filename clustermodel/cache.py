"""The informer-style cache: raw objects (dicts parsed with orjson) by kind.

Watchers (``clustermodel.informer``) or a snapshot file feed it; handlers
subscribed per kind see every change in order.  Objects are kept as the API
server sent them: decoding thousands of Nodes into typed models costs
seconds, dicts cost milliseconds.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Hashable, Iterator, Mapping
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
Change = tuple[EventType, Obj, "Obj | None"]
PageHandler = Callable[[list[Change]], None]  # a list page's changes at once, in order
ErrorHandler = Callable[[Kind, Any, Exception], None]  # (kind, the object that failed, why)


class ObjectError(ValueError):
    """An object whose identity cannot be read; it is skipped, never stored."""


def key_of(obj: Mapping[str, Any]) -> Key:
    # dict first: decoded JSON is always one, and the Mapping check costs an ABC lookup per object.
    meta = obj.get("metadata") or {} if type(obj) is dict or isinstance(obj, Mapping) else None
    if not (type(meta) is dict or isinstance(meta, Mapping)):
        raise ObjectError("metadata is not an object")
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise ObjectError("metadata.name and metadata.namespace must be strings")
    return (namespace, name)


MAX_INTERNED = 256  # longer strings are names or free text: seldom shared


def shared_text(value: Any) -> Any:
    """One string object for equal short strings (namespaces, node names, label and
    annotation values, phases), shared by every cached object that holds them; anything
    else as it is."""
    return sys.intern(value) if type(value) is str and len(value) <= MAX_INTERNED else value


class _Shared:
    """One object for equal read-only parts of cached objects (a GPU's status, a pod's
    status): 160,000 GPUs mostly hold the same few.  Bounded: a full table starts over."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._parts: dict[Hashable, Any] = {}

    def __call__(self, value: Any) -> Any:
        try:
            key = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # not plain JSON: kept unshared
            return value
        return self.keyed(key, value)

    def keyed(self, key: Hashable, value: Any) -> Any:
        """``value``, or the part already kept under ``key`` (which the caller vouches for)."""
        found = self._parts.get(key)
        if found is None:
            if len(self._parts) >= self.limit:
                self._parts.clear()
            found = self._parts[key] = value
        return found


_shared = _Shared()


_IDENTITY = ("name", "namespace", "uid", "resourceVersion")
NODE_META_KEPT = (*_IDENTITY, "generation")
POD_META_KEPT = (*_IDENTITY, "ownerReferences", "deletionTimestamp")


def _slim_meta(meta: Mapping[str, Any], keep: tuple[str, ...]) -> Obj:
    out = {k: meta[k] for k in keep if k in meta}
    if "namespace" in out:
        out["namespace"] = shared_text(out["namespace"])
    return out


def _texts(mapping: Any, prefix: str = "") -> Any:
    """A string map (labels, annotations) with its values shared (:func:`shared_text`) and, with
    ``prefix``, only its keys under it; anything but a dict as it is (readers judge it)."""
    if not isinstance(mapping, dict):
        return mapping
    return {
        k: v if k == ann.GPU_IDS else shared_text(v)  # gpu-ids differ per pod: sharing them would only cost
        for k, v in mapping.items()
        if not prefix or str(k).startswith(prefix)
    }


def slim_node(node: Obj) -> Obj:
    """What tfsched needs of a Node: its identity and labels (bind checks the pod's node
    affinity).  Real Node objects carry images, managedFields and conditions worth
    kilobytes each."""
    meta = node.get("metadata") or {}
    slim = _slim_meta(meta, NODE_META_KEPT)
    if "name" in slim:
        slim["name"] = shared_text(slim["name"])  # the same string as its GPUs' and pods' node names
    if "labels" in meta:
        slim["labels"] = _texts(meta["labels"])
    return {"kind": "Node", "metadata": slim}


# What of a GPU's status the cache keeps: what the status writer last wrote, so it writes
# only what changed (extender/upkeep.py); the inventory arrays hold the rest.
GPU_STATUS_KEPT = ("available", "runningApps")


def slim_gpu(gpu: Obj) -> Obj:
    """A GPU's name and what tfsched writes on it: capacity, model, pool and node live in
    the inventory arrays, and nothing reads them back from the cache."""
    status = gpu.get("status") or {}
    name = (gpu.get("metadata") or {}).get("name")
    return {
        "kind": ann.GPU_KIND,
        "metadata": {"name": name},
        "status": _shared({k: status[k] for k in GPU_STATUS_KEPT if k in status}),
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


POD_SPEC_KEPT = ("nodeName", "schedulerName", "nodeSelector")


def slim_pod(pod: Obj) -> Obj:
    """Pods keep their tensor-fusion.ai annotations, owners, where they run, their phase
    and their CPU and memory requests: what placement, bind, the ledger and the autoscaler
    read; not their labels, other annotations or the rest of their containers."""
    source = pod.get("metadata") or {}
    meta = _slim_meta(source, POD_META_KEPT)
    if "annotations" in source:
        meta["annotations"] = _texts(source["annotations"], ann.PREFIX)
    source_spec = pod.get("spec") or {}
    # The few kept fields looked up, not every field of the spec walked.
    spec = {k: shared_text(source_spec[k]) for k in POD_SPEC_KEPT if k in source_spec}
    for key in ("containers", "initContainers"):
        containers = _slim_containers(source_spec.get(key))
        if any(containers):
            spec[key] = containers
    # Bind checks the pod's required node affinity as kube-scheduler would.
    affinity = (source_spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    return {"kind": "Pod", "metadata": meta, "spec": spec, "status": _pod_status(pod.get("status") or {})}


def _pod_status(status: Any) -> Obj:
    """``{"phase": ...}``, one dict per phase (a pod's status is its phase to every reader)."""
    if "phase" not in status:
        return _shared.keyed(("pod-status",), {})
    phase = status["phase"]
    if type(phase) is str and len(phase) <= MAX_INTERNED:  # keyed by the phase: no JSON dump per pod
        return _shared.keyed(("pod-phase", phase), {"phase": phase})
    return _shared({"phase": phase})


SLIM: dict[Kind, Callable[[Obj], Obj]] = {Kind.NODE: slim_node, Kind.GPU: slim_gpu, Kind.POD: slim_pod}


class ClusterCache:
    """Handlers see each object whole; the store keeps the slim form
    (see :data:`SLIM`) to bound memory on large clusters.  Stored objects are
    read-only: equal parts of them may be one shared object (``_Shared``,
    :func:`shared_text`), so a writer copies what it changes (as
    ``MemoryPodWriter`` does) and applies the copy."""

    def __init__(self, on_error: ErrorHandler | None = None) -> None:
        self.objects: dict[Kind, dict[Key, Obj]] = {kind: {} for kind in Kind}
        # Told about every object that could not be taken in; the rest go on.
        self.on_error: ErrorHandler = on_error or _log_error
        self._handlers: dict[Kind, list[Handler]] = {kind: [] for kind in Kind}
        self._page_handlers: dict[Kind, list[PageHandler | None]] = {kind: [] for kind in Kind}
        # Which kinds have finished their first list; readiness waits for all watched kinds.
        self.synced: set[Kind] = set()

    def subscribe(self, kind: Kind, handler: Handler, page_handler: PageHandler | None = None) -> None:
        """``handler`` sees each change; ``page_handler``, when given, takes a list page's
        changes in one call instead (the same outcome as ``handler`` on each, in order: a
        page of 500 GPUs is written to the inventory's arrays at once).  Should it raise,
        the page's changes go to ``handler`` one by one, so the bad object is found and
        the rest are taken in; both must therefore be safe to repeat."""
        self._handlers[kind].append(handler)
        self._page_handlers[kind].append(page_handler)

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
            key = key_of(obj)
        except Exception as exc:
            self.on_error(kind, obj, exc)
            return False
        return self._apply(kind, event, obj, key)

    def _apply(self, kind: Kind, event: EventType, obj: Obj, key: Key) -> bool:
        if event is EventType.DELETED:
            return self._notify(kind, EventType.DELETED, obj, self.objects[kind].pop(key, None))
        change = self._store(kind, obj, key)
        return change is not None and self._notify(kind, *change)

    def _store(self, kind: Kind, obj: Obj, key: Key) -> Change | None:
        """Keep ``obj``'s slim form: the change it makes, or None (told to :attr:`on_error`)
        when it cannot be slimmed."""
        try:
            slim = SLIM.get(kind)
            stored = slim(obj) if slim is not None else obj
        except Exception as exc:
            self.on_error(kind, obj, exc)
            return None
        store = self.objects[kind]
        old = store.get(key)
        store[key] = stored
        return (EventType.MODIFIED if old is not None else EventType.ADDED, obj, old)

    def replace(self, kind: Kind, objs: list[Obj]) -> None:
        """A fresh list of ``kind``: adds and updates what it holds, deletes what it lacks."""
        relist = self.relist(kind)
        relist.add_page(objs)
        relist.finish()

    def relist(self, kind: Kind) -> Relist:
        """Replace ``kind`` page by page, so a large list is never held whole."""
        return Relist(self, kind)

    def _notify(self, kind: Kind, event: EventType, obj: Obj, old: Obj | None) -> bool:
        whole = True
        for handler in self._handlers[kind]:
            whole = self._tell(kind, handler, event, obj, old) and whole
        return whole

    def _tell(self, kind: Kind, handler: Handler, event: EventType, obj: Obj, old: Obj | None) -> bool:
        try:
            handler(event, obj, old)
            return True
        except Exception as exc:  # a bug in a handler: isolate the object, keep the rest
            self.on_error(kind, obj, exc)
            return False


def _log_error(kind: Kind, obj: Any, exc: Exception) -> None:
    log.warning("%s: could not take in an object: %s: %s", kind, type(exc).__name__, exc)


class Relist:
    def __init__(self, cache: ClusterCache, kind: Kind) -> None:
        self.cache = cache
        self.kind = kind
        self.seen: set[Key] = set()

    def _seen(self, obj: Obj) -> Key | None:
        """The listed object's key, now seen (so not deleted at :meth:`finish`, even should it
        not be taken in); None, reported, when it has no readable identity."""
        try:
            key = key_of(obj)
        except ObjectError as exc:
            self.cache.on_error(self.kind, obj, exc)
            return None
        self.seen.add(key)
        return key

    def add(self, obj: Obj) -> None:
        key = self._seen(obj)
        if key is not None:
            self.cache._apply(self.kind, EventType.MODIFIED, obj, key)  # one key object for both

    def add_page(self, objs: list[Obj]) -> None:
        """:meth:`add` for each object of a list page, the handlers told once per page."""
        cache, kind = self.cache, self.kind
        if not any(cache._page_handlers[kind]):
            for obj in objs:
                self.add(obj)
            return
        changes: list[Change] = []
        for obj in objs:
            key = self._seen(obj)
            change = cache._store(kind, obj, key) if key is not None else None
            if change is not None:
                changes.append(change)
        for handler, page_handler in zip(cache._handlers[kind], cache._page_handlers[kind], strict=True):
            if page_handler is not None:
                try:
                    page_handler(changes)
                    continue
                except Exception:  # find the object at fault: the page again, one by one
                    log.debug("%s: a page handler failed; taking the page in object by object", kind, exc_info=True)
            for change in changes:
                cache._tell(kind, handler, *change)

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
