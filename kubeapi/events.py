"""Kubernetes Events (core/v1), so ``kubectl describe`` shows what tfsched did."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tfsched.clustermodel.problems import ProblemLog
from tfsched.clustermodel.times import format_time
from tfsched.kubeapi.client import KubeApi, path_segment

log = logging.getLogger(__name__)

COMPONENT = "tfsched"


async def record_event(
    client: KubeApi, obj: Mapping[str, Any], reason: str, message: str, *, event_type: str = "Normal"
) -> None:
    """Create an Event about ``obj``; failures are logged, never raised (events are best effort)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    now = format_time(datetime.now(UTC))
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name', 'object')}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", ""),
            "name": meta.get("name", ""),
            "namespace": namespace,
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await client.create(f"/api/v1/namespaces/{path_segment(namespace)}/events", body)
    except Exception as exc:
        log.warning("could not record event %s on %s/%s: %s", reason, namespace, meta.get("name"), exc)


async def report_problems(client: KubeApi, problems: ProblemLog, *, every: float = 1.0, burst: int = 50) -> None:
    """Raise the problems the cache and the ledger found as Warning events on
    their objects, at most ``burst`` per ``every`` seconds (the log drops the
    oldest past its bound, so a flood costs neither memory nor API calls)."""
    while True:
        for problem in problems.take()[-burst:]:
            await record_event(client, problem.ref, problem.reason, problem.message, event_type="Warning")
        await asyncio.sleep(every)
