"""The one writer of TensorFusionWorkload status.

Fragments rendered by the recommender are merged with what the status says
now (a recommendation stands until a new one replaces it, and so does the
condition saying why) and written through the status subresource only when
something changed.

"What the status says now" must include our own last write: the informer may
deliver it after the next interval starts, and a merge patch replaces the whole
``conditions`` list, so merging into the older version would erase a condition
we wrote (MetricsAvailable, on an interval that read no usage).  The writer
keeps each response until the informer has caught up, as client-go's
MutationCache does, comparing resourceVersions as etcd revisions as it does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tfsched.autoscale.feed import Workload, workload_path
from tfsched.autoscale.recommend import transition_time
from tfsched.clustermodel.annotations import CONDITION_METRICS_AVAILABLE
from tfsched.clustermodel.workload import Condition, read_workload
from tfsched.kubeapi.client import KubeApi, KubeApiError, PatchType

log = logging.getLogger(__name__)

REASON_METRICS_UNAVAILABLE = "MetricsUnavailable"
REASON_METRICS_OK = "MetricsQueried"


def metrics_available_condition(old: Mapping[str, Any], now: datetime, ok: bool, message: str) -> dict[str, Any]:
    """The MetricsAvailable condition, keeping its transition time while the status holds."""
    status = "True" if ok else "False"
    return Condition(
        type=CONDITION_METRICS_AVAILABLE,
        status=status,
        reason=REASON_METRICS_OK if ok else REASON_METRICS_UNAVAILABLE,
        message=message if ok else f"usage metrics unavailable, nothing changed: {message}",
        last_transition_time=transition_time(old.get("conditions") or (), CONDITION_METRICS_AVAILABLE, status, now),
    ).to_dict()


def merge_conditions(old: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with each fresh condition in the place of the one of its type, new
    types last: the order stays put, so a status that did not change compares
    equal and is not written again."""
    by_type = {c.get("type"): c for c in fresh}
    out, placed = [], set()
    for condition in old:
        kind = condition.get("type")
        if kind not in by_type:
            out.append(condition)
        elif kind not in placed:
            out.append(by_type[kind])
            placed.add(kind)
    out.extend(c for kind, c in by_type.items() if kind not in placed)
    return out


def _revision(obj: Mapping[str, Any]) -> int:
    """The object's resourceVersion as an etcd revision (-1 when it is not one:
    then the informer's version is used)."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return int(version) if isinstance(version, str) and version.isdigit() else -1


def _uid(obj: Mapping[str, Any]) -> object:
    return (obj.get("metadata") or {}).get("uid")


class StatusWriter:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self._written: dict[tuple[str, str], dict[str, Any]] = {}  # our responses the informer has not shown yet

    def freshest(self, workloads: list[Workload]) -> list[Workload]:
        """``workloads`` (from the informer) with our own later writes in place
        of the versions they replaced; forgets writes the informer has caught up
        with and workloads that are gone."""
        out = []
        written, self._written = self._written, {}
        for workload in workloads:
            mine = written.get(workload.key)
            if mine is not None and _uid(mine) == _uid(workload.obj) and _revision(mine) > _revision(workload.obj):
                self._written[workload.key] = mine
                workload = Workload(read_workload(mine, workload.view), mine, workload.pods)
            out.append(workload)
        return out

    async def write(
        self,
        workload: Workload,
        fragment: Mapping[str, Any],
        now: datetime,
        metrics_ok: bool | None,
    ) -> None:
        """Merge ``fragment`` into the workload's status; ``metrics_ok`` (None: say
        nothing) sets MetricsAvailable."""
        old = workload.obj.get("status") or {}
        status = dict(fragment)
        fresh = list(fragment.get("conditions") or [])
        if metrics_ok is not None:
            fresh.append(metrics_available_condition(old, now, metrics_ok, "usage history read from Prometheus"))
        status["conditions"] = merge_conditions(old.get("conditions") or [], fresh)
        if all(old.get(k) == v for k, v in status.items()):
            return
        await self.patch(workload, status)

    async def report_metrics(self, workload: Workload, now: datetime, ok: bool, message: str) -> None:
        """Only the MetricsAvailable condition (an outage changes nothing else)."""
        old = workload.obj.get("status") or {}
        conditions = merge_conditions(old.get("conditions") or [], [metrics_available_condition(old, now, ok, message)])
        if conditions != (old.get("conditions") or []):
            await self.patch(workload, {"conditions": conditions})

    async def patch(self, workload: Workload, status: Mapping[str, Any]) -> None:
        try:
            workload.obj = await self.kube.patch(
                workload_path(workload.namespace, workload.name, "status"), {"status": status}, PatchType.MERGE
            )
            self._written[workload.key] = workload.obj
        except KubeApiError as exc:
            log.warning("workload %s/%s: status update failed: %s", *workload.key, exc)
