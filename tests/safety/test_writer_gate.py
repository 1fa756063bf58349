"""One writer across replicas: the gate opens only on the leader, after fencing."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from tests.autoscale_edges.test_leader import LeaseStore
from tfsched.kubeapi.leader import FollowSchedulerSettings, GateClosed, LeaderElector, LeaseFollower, WriterGate


class Relists:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


def elector(store: LeaseStore, identity: str, seconds: float = 1) -> LeaderElector:
    return LeaderElector(
        store,  # type: ignore[arg-type]
        "kube-system",
        "tfsched",
        identity=identity,
        lease_duration=timedelta(seconds=seconds),
        renew_every=timedelta(seconds=0.1),
    )


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_fresh_lease_opens_after_a_fresh_list_and_writes_need_it():
    store = LeaseStore()
    relists = Relists()
    gate = WriterGate(elector(store, "a"), relists)
    try:
        async with gate.writing():
            raise AssertionError("a standby gate let a write through")
    except GateClosed as exc:
        assert "standby" in str(exc)
    task = asyncio.create_task(gate.run())
    await wait_for(gate.active.is_set)
    assert relists.calls == 1
    async with gate.writing():
        assert gate.writes_in_flight == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not gate.active.is_set()


async def test_taking_over_waits_out_the_previous_lease_then_relists():
    store = LeaseStore()
    first = elector(store, "a", seconds=1)
    assert await first.try_acquire_or_renew()  # "a" held it, then died without releasing
    relists = Relists()
    second = elector(store, "b", seconds=1)
    gate = WriterGate(second, relists)
    started = time.monotonic()
    task = asyncio.create_task(gate.run())
    await wait_for(lambda: gate.state == "fencing", timeout=5)
    assert not gate.active.is_set()  # while fencing, no writes
    await wait_for(gate.active.is_set, timeout=10)
    # ~1 s until a's lease expired, then 1 s waited out before the first write.
    assert time.monotonic() - started >= 1.9
    assert second.previous_holder == "a" and relists.calls == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_stop_drains_writes_then_releases():
    store = LeaseStore()
    gate = WriterGate(elector(store, "a", seconds=5), Relists())
    task = asyncio.create_task(gate.run())
    await wait_for(gate.active.is_set)
    finished = []

    async def slow_write() -> None:
        async with gate.writing():
            await asyncio.sleep(0.3)
            finished.append(True)

    write = asyncio.create_task(slow_write())
    await asyncio.sleep(0.05)
    await gate.stop()
    assert finished == [True] and store.lease["spec"]["holderIdentity"] == ""
    task.cancel()
    await asyncio.gather(task, write, return_exceptions=True)


class SchedulerLease:
    """kube-scheduler's Lease as another process renews it."""

    def __init__(self) -> None:
        self.store = LeaseStore()
        self.n = 0

    def hold(self, identity: str, seconds: int = 1) -> None:
        self.n += 1
        self.store.lease = {
            "metadata": {"name": "kube-scheduler", "resourceVersion": str(self.n)},
            "spec": {
                "holderIdentity": identity,
                "leaseDurationSeconds": seconds,
                "renewTime": f"2026-12-01T00:00:{self.n % 60:02d}.000000Z",
            },
        }


async def test_follower_leads_exactly_while_its_scheduler_renews():
    lease = SchedulerLease()
    follower = LeaseFollower(lease.store, FollowSchedulerSettings(identity="pod-a", pollEvery="0.05s"))  # type: ignore[arg-type]
    lease.hold("pod-b_1234")
    assert not await follower.observe()
    lease.hold("pod-a_5678")
    assert await follower.observe()
    assert follower.previous_holder == "pod-b_1234"
    await asyncio.sleep(1.1)  # not renewed for a lease duration: no longer ours to act on
    assert not await follower.observe()
    lease.hold("pod-a_5678")
    assert await follower.observe()
    lease.hold("pod-ab_1")  # a prefix of another pod's name is not ours
    assert not await follower.observe()
