"""Who may write: leader election on a coordination.k8s.io/v1 Lease.

Two ways to lead, one per topology:

- :class:`LeaderElector` takes a Lease of its own, as client-go's
  leaderelection does (standalone tfsched).  The holder renews it every
  ``renew_every``; another candidate takes it over once ``renewTime +
  leaseDurationSeconds`` has passed.  Updates carry the lease's
  resourceVersion, so two candidates cannot both win one round.
- :class:`LeaseFollower` holds nothing: it leads exactly while the kube-scheduler
  beside it (same pod, same hostname) holds *its* leader Lease, whose
  ``holderIdentity`` is ``<hostname>_<uuid>``.  Then the tfsched that binds is
  always the one whose kube-scheduler is active.

Either sets an ``asyncio.Event`` while leading and tells who led before, so
the writer gate (``tfsched/server.py``) can fence: wait out the previous
holder's lease and re-list before its first write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from tfsched.clustermodel.times import PositiveDuration, format_micro_time, parse_time_or_none
from tfsched.kubeapi.client import KubeApi, KubeApiError, KubeClient, namespaced_path

log = logging.getLogger(__name__)


class FollowSchedulerSettings(BaseModel):
    """The kube-scheduler Lease to follow (its ``leaderElection`` settings)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    namespace: str = "kube-system"
    lease_name: str = Field("kube-scheduler", alias="leaseName")
    # The scheduler's identity before "_<uuid>": its hostname, which in one pod is ours.
    identity: str = Field(default_factory=socket.gethostname)
    poll_every: PositiveDuration = Field(timedelta(seconds=1), alias="pollEvery")


class LeaderElectionSettings(BaseModel):
    """The ``leaderElection`` section of ``tfsched serve --config``: which
    instance binds, resizes and evicts (only one at a time)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    enabled: bool = True
    namespace: str = "kube-system"
    lease_name: str = Field("tfsched", alias="leaseName")
    lease_duration: PositiveDuration = Field(timedelta(seconds=15), alias="leaseDuration")
    renew_every: PositiveDuration = Field(timedelta(seconds=5), alias="renewEvery")
    follow_scheduler: FollowSchedulerSettings | None = Field(None, alias="followScheduler")


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


class Leadership(Protocol):
    """What the writer gate needs of either way to lead."""

    lease_duration: timedelta
    previous_holder: str  # who held the lease before we led ('' if nobody, or it was released)

    async def run(self, leading: asyncio.Event) -> None: ...
    async def release(self) -> None: ...


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
        self.previous_holder = ""

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
        # Only another holder's writes need waiting out: retaking our own lapsed lease needs none.
        if holder == self.identity and not self.is_leader:
            self.previous_holder = ""
        if holder != self.identity:
            self.previous_holder = holder or ""
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
        """Keep ``leading`` set exactly while this process holds the lease.

        A renewal that fails (the API server restarting) does not end the
        lead at once: nobody can take the lease before it expires, so the
        holder keeps it until two thirds of a lease duration have passed
        since its last successful renewal (client-go's renew deadline)."""
        renewed_at = 0.0
        while True:
            try:
                won = await self.try_acquire_or_renew()
                if won:
                    renewed_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("leader election: %s", exc)
                deadline = renewed_at + self.lease_duration.total_seconds() * 2 / 3
                won = self.is_leader and time.monotonic() < deadline
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


class LeaseFollower:
    """Leads while the kube-scheduler of this pod holds its leader Lease.

    A lease counts as held while it keeps being renewed: ``renewTime`` seen
    to change within the last ``leaseDurationSeconds`` of *our* clock (as
    client-go measures it), so a scheduler that died stops counting one lease
    duration after its last renewal, whatever the clocks say.
    """

    def __init__(self, client: KubeApi, settings: FollowSchedulerSettings) -> None:
        self.client = client
        self.settings = settings
        self.path = namespaced_path("coordination.k8s.io/v1", settings.namespace, "leases", settings.lease_name)
        self.prefix = f"{settings.identity}_"
        self.lease_duration = timedelta(seconds=15)
        self.previous_holder = ""
        self.is_leader = False
        self._record: tuple[str, str] = ("", "")  # (holder, renewTime) last seen
        self._observed_at = 0.0  # monotonic time the record last changed

    async def observe(self) -> bool:
        """Read the lease once; whether our scheduler holds it now."""
        try:
            lease = await self.client.get(self.path)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            lease = {}
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._record:
            if holder != self._record[0] and holder.startswith(self.prefix):
                self.previous_holder = self._record[0]
            self._record = record
            self._observed_at = time.monotonic()
        with contextlib.suppress(TypeError, ValueError):
            self.lease_duration = timedelta(seconds=max(1, int(spec.get("leaseDurationSeconds") or 15)))
        fresh = time.monotonic() < self._observed_at + self.lease_duration.total_seconds()
        return bool(holder) and holder.startswith(self.prefix) and fresh

    async def run(self, leading: asyncio.Event) -> None:
        while True:
            try:
                held = await self.observe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("following the scheduler's lease %s: %s", self.settings.lease_name, exc)
                held = self.is_leader and time.monotonic() < self._observed_at + self.lease_duration.total_seconds()
            if held != self.is_leader:
                log.info("the scheduler of this pod %s the lease %s", "holds" if held else "lost", self.path)
            self.is_leader = held
            if held:
                leading.set()
            else:
                leading.clear()
            await asyncio.sleep(self.settings.poll_every.total_seconds())

    async def release(self) -> None:
        """Nothing to give up: the scheduler owns the lease."""
        self.is_leader = False


class WriterGate:
    """Open only on the one instance that may write (bind, resize, evict, GPU status).

    On becoming leader it fences before opening: it waits out the previous
    holder's lease (so an instance that lost the lease without knowing it has
    stopped writing: its own view of the lease expires within that time, and
    a bind's API call is bounded well below it) and then re-lists pods with a
    quorum read (``fresh_list``), so the ledger has every bind the previous
    leader made.  Without leader election (one instance by configuration) it
    opens at once.
    """

    def __init__(
        self, leadership: Leadership | None = None, fresh_list: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        if leadership is not None and fresh_list is None:
            raise ValueError("a gate that can change hands needs the fresh list to fence with")
        self.leadership = leadership
        self.fresh_list = fresh_list
        self.active = asyncio.Event()
        self.state = "standby" if leadership is not None else "active"
        self.writes_in_flight = 0
        if leadership is None:
            self.active.set()

    def why_closed(self) -> str:
        """'' when this instance may write, else why not (for bind's Error and /readyz)."""
        if self.active.is_set():
            return ""
        if self.state == "fencing":
            return (
                "this tfsched instance has just become the leader and is fencing"
                " (waiting out the previous lease, re-listing pods)"
            )
        return "this tfsched instance is on standby: another instance is the leader and binds"

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Hold the gate open around one write; raises :class:`GateClosed` when shut."""
        why = self.why_closed()
        if why:
            raise GateClosed(why)
        self.writes_in_flight += 1
        try:
            yield
        finally:
            self.writes_in_flight -= 1

    async def run(self) -> None:
        if self.leadership is None:
            return
        leading = asyncio.Event()
        election = asyncio.create_task(self.leadership.run(leading), name="leader-election")
        try:
            while True:
                await leading.wait()
                self.state = "fencing"
                if await self._fence(leading):
                    self.state = "active"
                    self.active.set()
                    log.info("leading: this instance binds and writes")
                    while leading.is_set():
                        await asyncio.sleep(0.05)
                    log.info("lost the lease: standing by")
                self.active.clear()
                self.state = "standby"
        finally:
            self.active.clear()
            election.cancel()
            await asyncio.gather(election, return_exceptions=True)

    async def _fence(self, leading: asyncio.Event) -> bool:
        """Whether still leading after the wait and the fresh list."""
        assert self.leadership is not None
        if self.leadership.previous_holder:
            log.info(
                "took over from %s: waiting out its lease (%ss) before writing",
                self.leadership.previous_holder,
                self.leadership.lease_duration.total_seconds(),
            )
            deadline = time.monotonic() + self.leadership.lease_duration.total_seconds()
            while time.monotonic() < deadline:
                if not leading.is_set():
                    return False
                await asyncio.sleep(0.05)
        assert self.fresh_list is not None
        await self.fresh_list()
        return leading.is_set()

    async def stop(self, drain: float = 5.0) -> None:
        """Close the gate, let writes in flight finish, then give the lease up."""
        self.active.clear()
        self.state = "stopping"
        deadline = time.monotonic() + drain
        while self.writes_in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.leadership is not None:
            await self.leadership.release()


class GateClosed(Exception):
    """This instance may not write now; the message says why."""
