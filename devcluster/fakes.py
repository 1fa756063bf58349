"""In-process fakes of the Kubernetes API and of a usage source, shared by the
unit tests and the benchmarks (one copy, so both exercise the same behaviour).

:class:`FakeKube` answers the :class:`tfsched.kubeapi.client.KubeApi` calls:
merge patches are applied to the cached object (with a new
``resourceVersion``, as the API server does) and delivered to the cache at
once, or queued until :meth:`FakeKube.echo` as watch events would arrive
later.  :class:`FakeUsageSource` serves rows of usage as
:class:`~tfsched.autoscale.columns.UsageColumns`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from tfsched.allocation.state import ClusterState
from tfsched.autoscale.columns import UsageColumns
from tfsched.autoscale.loop import Clock
from tfsched.autoscale.ports import MetricsUnavailable
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.times import to_unix_ns
from tfsched.kubeapi.client import KubeApiError, PatchType


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; untouched subtrees are shared, not copied."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _parts(path: str) -> list[str]:
    return [p for p in path.split("?")[0].split("/") if p]


def classify(method: str, path: str) -> str:
    """A call's kind, for counting: ``PATCH pod``, ``POST eviction``, ``GET scale`` …"""
    parts = _parts(path)
    last = parts[-1] if parts else ""
    if method == "GET":
        if last == "scale":
            return "GET scale"
        return "GET replicaset" if "replicasets" in parts else "GET other"
    if method == "POST":
        if last in ("events", "eviction"):
            return f"POST {last[:-1] if last == 'events' else last}"
        return "POST workload" if last == ann.WORKLOAD_PLURAL else "POST other"
    if method == "PATCH":
        if last == "status" and ann.WORKLOAD_PLURAL in parts:
            return "PATCH workload status"
        if "pods" in parts:
            return "PATCH pod"
        return "PATCH scale" if last == "scale" else "PATCH other"
    return f"{method} other"


class FakeKube:
    """The API calls the autoscaler makes, answered in process against the cache.

    ``echo``: deliver patched objects to the cache at once (True) or when
    :meth:`echo` is called.  ``replicas``: what a ``scale`` GET answers (None:
    404).  ``replicaset_owners``: ``(namespace, replicaset) → deployment``.
    ``record``: keep every call with its body in :attr:`calls` (tests), or
    only count them by kind in :attr:`counts` (benchmarks).
    """

    def __init__(
        self,
        state: ClusterState,
        *,
        echo: bool = True,
        replicas: int | None = None,
        replicaset_owners: Mapping[tuple[str, str], str] | None = None,
        record: bool = True,
    ) -> None:
        self.state = state
        self.immediate = echo
        self.replicas = replicas
        self.replicaset_owners = dict(replicaset_owners or {})
        self.record = record
        self.calls: list[tuple[str, str, object]] = []
        self.counts: Counter[str] = Counter()
        self.fail_pod_patches = False
        self.pending: dict[tuple[Kind, str, str], dict[str, Any]] = {}
        self.version = 1

    def _note(self, method: str, path: str, body: object) -> str:
        kind = classify(method, path)
        self.counts[kind] += 1
        if self.record:
            self.calls.append((method, path, body))
        return kind

    def paths(self, method: str, needle: str) -> list[str]:
        return [p for m, p, _ in self.calls if m == method and needle in p]

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        kind = self._note("GET", path, params)
        parts = _parts(path)
        if kind == "GET scale" and self.replicas is not None:
            return {"kind": "Scale", "metadata": {"name": parts[-2]}, "spec": {"replicas": self.replicas}}
        if kind == "GET replicaset":
            namespace, name = parts[parts.index("namespaces") + 1], parts[-1]
            deployment = self.replicaset_owners.get((namespace, name))
            if deployment is not None:
                owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
                meta = {"name": name, "namespace": namespace, "ownerReferences": [owner]}
                return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta}
        raise KubeApiError(404, "NotFound", f"{path} not found")

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._note("POST", path, body)
        return dict(body)

    async def patch(
        self, path: str, body: Any, patch_type: PatchType = PatchType.MERGE, **params: Any
    ) -> dict[str, Any]:
        kind = self._note("PATCH", path, body)
        if patch_type is not PatchType.MERGE:
            raise KubeApiError(415, "UnsupportedMediaType", f"the fake takes merge patches only, got {patch_type}")
        parts = _parts(path)
        namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""
        if kind == "PATCH workload status":
            key = (Kind.WORKLOAD, namespace, parts[-2])
        elif kind == "PATCH pod":
            if self.fail_pod_patches:
                raise KubeApiError(500, "InternalError", "the fake was told to fail pod patches")
            key = (Kind.POD, namespace, parts[-1])
        else:
            return merge_patch({}, body)
        base = self.pending.get(key) or self.state.cache.get(*key)
        if base is None:
            raise KubeApiError(404, "NotFound", f"{path} not found")
        merged = merge_patch(base, body)
        old_version = (base.get("metadata") or {}).get("resourceVersion") or "0"
        self.version = max(self.version, int(old_version) if str(old_version).isdigit() else 0) + 1
        merged["metadata"] = {**merged.get("metadata", {}), "resourceVersion": str(self.version)}
        if self.immediate:
            self.state.cache.apply(key[0], EventType.MODIFIED, merged)
        else:
            self.pending[key] = merged
        return merged

    def echo(self) -> int:
        """Deliver queued writes to the cache, as the watches would."""
        pending, self.pending = self.pending, {}
        for (kind, _, _), obj in pending.items():
            self.state.cache.apply(kind, EventType.MODIFIED, obj)
        return len(pending)

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One pod's usage at one time; ``None`` where a query had no value."""

    namespace: str
    pod: str
    time: datetime
    tflops: float | None
    vram: float | None


def columns_of(rows: Iterable[UsageRow]) -> UsageColumns:
    """Rows (any order) as :class:`UsageColumns`, time-ordered, ties in the given order."""
    ordered = sorted(rows, key=lambda r: r.time)  # stable
    if not ordered:
        return UsageColumns.empty()
    codes: dict[tuple[str, str], int] = {}
    pod = np.array([codes.setdefault((r.namespace, r.pod), len(codes)) for r in ordered], np.int32)
    return UsageColumns(
        pods=tuple(codes),
        time_ns=np.array([to_unix_ns(r.time) for r in ordered], np.int64),
        pod=pod,
        tflops=np.array([np.nan if r.tflops is None else r.tflops for r in ordered], np.float64),
        vram=np.array([np.nan if r.vram is None else r.vram for r in ordered], np.float64),
    )


class FakeUsageSource:
    """Serves :attr:`pending` rows whose time falls in the asked window; fails with :attr:`error`."""

    def __init__(self) -> None:
        self.pending: list[UsageRow] = []
        self.error: str | None = None
        self.windows: list[tuple[datetime, datetime]] = []

    async def samples(self, start: datetime, end: datetime) -> UsageColumns:
        self.windows.append((start, end))
        if self.error:
            raise MetricsUnavailable(self.error)
        return columns_of(r for r in self.pending if start <= r.time <= end)

    async def close(self) -> None:
        return None


class FixedClock(Clock):
    """The loop's clock and the wall clock, both at :attr:`moment`."""

    def __init__(self, moment: datetime) -> None:
        super().__init__()
        self.moment = moment

    def now(self) -> datetime:
        return self.moment

    def wall(self) -> datetime:
        return self.moment
