"""The one writer of TensorFusionWorkload status.

Fragments rendered by the recommender are merged with what the status says
now (a recommendation stands until a new one replaces it, and so does the
condition saying why) and written through the status subresource only when
something changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tfsched.autoscale.feed import Workload, workload_path
from tfsched.autoscale.recommend import transition_time
from tfsched.clustermodel.annotations import CONDITION_METRICS_AVAILABLE
from tfsched.clustermodel.workload import Condition
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


class StatusWriter:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube

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
        fresh = fragment.get("conditions") or []
        replaced = {c.get("type") for c in fresh} | ({CONDITION_METRICS_AVAILABLE} if metrics_ok is not None else set())
        conditions = [c for c in (old.get("conditions") or []) if c.get("type") not in replaced]
        conditions.extend(fresh)
        if metrics_ok is not None:
            conditions.append(metrics_available_condition(old, now, metrics_ok, "usage history read from Prometheus"))
        status["conditions"] = conditions
        if all(old.get(k) == v for k, v in status.items()):
            return
        await self.patch(workload, status)

    async def report_metrics(self, workload: Workload, now: datetime, ok: bool, message: str) -> None:
        """Only the MetricsAvailable condition (an outage changes nothing else)."""
        old = workload.obj.get("status") or {}
        conditions = [c for c in (old.get("conditions") or []) if c.get("type") != CONDITION_METRICS_AVAILABLE]
        conditions.append(metrics_available_condition(old, now, ok, message))
        if conditions != (old.get("conditions") or []):
            await self.patch(workload, {"conditions": conditions})

    async def patch(self, workload: Workload, status: Mapping[str, Any]) -> None:
        try:
            workload.obj = await self.kube.patch(
                workload_path(workload.namespace, workload.name, "status"), {"status": status}, PatchType.MERGE
            )
        except KubeApiError as exc:
            log.warning("workload %s/%s: status update failed: %s", *workload.key, exc)
