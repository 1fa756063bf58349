"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

The holder renews the lease every ``renew_every``; another candidate takes it
over once ``renewTime + leaseDurationSeconds`` has passed.  Updates carry the
lease's resourceVersion, so two candidates cannot both win one round.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import UTC, datetime, timedelta

from tfsched.clustermodel.times import format_micro_time, parse_time_or_none
from tfsched.kubeapi.client import KubeApiError, KubeClient, namespaced_path

log = logging.getLogger(__name__)


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        *,
        identity: str | None = None,
        lease_duration: timedelta = timedelta(seconds=15),
        renew_every: timedelta = timedelta(seconds=5),
    ) -> None:
        self.client = client
        self.path = namespaced_path("coordination.k8s.io/v1", namespace, "leases", name)
        self.collection = namespaced_path("coordination.k8s.io/v1", namespace, "leases")
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_every = renew_every
        self.is_leader = False

    async def try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration.total_seconds()),
            "renewTime": format_micro_time(now),
        }
        try:
            lease = await self.client.get(self.path)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name},
                "spec": {**spec, "acquireTime": format_micro_time(now), "leaseTransitions": 0},
            }
            try:
                await self.client.create(self.collection, body)
            except KubeApiError as create_exc:
                if create_exc.status == 409:  # someone else created it first
                    return False
                raise
            return True
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        renewed = parse_time_or_none(current.get("renewTime"))
        duration = timedelta(seconds=int(current.get("leaseDurationSeconds") or 0))
        if holder and holder != self.identity and renewed is not None and renewed + duration > now:
            return False
        if holder != self.identity:
            spec["acquireTime"] = format_micro_time(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        lease["spec"] = {**current, **spec}
        try:
            await self.client.request("PUT", self.path, body=lease)
        except KubeApiError as exc:
            if exc.status == 409:  # lost a race for this round
                return False
            raise
        return True

    async def run(self, leading: asyncio.Event) -> None:
        """Keep ``leading`` set exactly while this process holds the lease."""
        while True:
            try:
                won = await self.try_acquire_or_renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("leader election: %s", exc)
                won = False
            if won != self.is_leader:
                log.info("leader election: %s the lease %s", "acquired" if won else "lost", self.name)
            self.is_leader = won
            if won:
                leading.set()
            else:
                leading.clear()
            await asyncio.sleep(self.renew_every.total_seconds())

    async def release(self) -> None:
        """Give the lease up on shutdown so a successor need not wait it out."""
        if not self.is_leader:
            return
        try:
            lease = await self.client.get(self.path)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["renewTime"] = format_micro_time(datetime(1970, 1, 1, tzinfo=UTC))
                lease["spec"]["holderIdentity"] = ""
                await self.client.request("PUT", self.path, body=lease)
        except Exception as exc:
            log.warning("leader election: could not release the lease: %s", exc)
        self.is_leader = False
