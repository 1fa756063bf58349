"""Lease-based leader election against an in-memory Lease store with resourceVersion checks."""

from __future__ import annotations

import copy
from datetime import timedelta

from tfsched.kubeapi.client import KubeApiError
from tfsched.kubeapi.leader import LeaderElector


class LeaseStore:
    """Get / create / optimistic-concurrency PUT, as the API server does for one Lease."""

    def __init__(self) -> None:
        self.lease: dict | None = None
        self.version = 0

    async def get(self, path: str, **params):
        if self.lease is None:
            raise KubeApiError(404, "NotFound", path)
        return copy.deepcopy(self.lease)

    async def create(self, path: str, body):
        if self.lease is not None:
            raise KubeApiError(409, "AlreadyExists", path)
        self.version += 1
        self.lease = {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return copy.deepcopy(self.lease)

    async def request(self, method: str, path: str, *, body=None, **kwargs):
        assert method == "PUT" and self.lease is not None
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise KubeApiError(409, "Conflict", "the object has been modified")
        self.version += 1
        self.lease = {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return copy.deepcopy(self.lease)


def elector(store: LeaseStore, identity: str, seconds: int = 15) -> LeaderElector:
    return LeaderElector(store, "kube-system", "tfsched", identity=identity, lease_duration=timedelta(seconds=seconds))  # type: ignore[arg-type]


async def test_one_leader_at_a_time_and_renewal():
    store = LeaseStore()
    a, b = elector(store, "a"), elector(store, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert await a.try_acquire_or_renew()  # renews
    assert store.lease["spec"]["holderIdentity"] == "a"


async def test_expired_lease_is_taken_over():
    store = LeaseStore()
    a, b = elector(store, "a", seconds=1), elector(store, "b", seconds=1)
    assert await a.try_acquire_or_renew()
    store.lease["spec"]["renewTime"] = "2000-01-01T00:00:00.000000Z"
    assert await b.try_acquire_or_renew()
    assert store.lease["spec"]["holderIdentity"] == "b"
    assert store.lease["spec"]["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew()


async def test_release_hands_over_at_once():
    store = LeaseStore()
    a, b = elector(store, "a"), elector(store, "b")
    assert await a.try_acquire_or_renew()
    a.is_leader = True
    await a.release()
    assert await b.try_acquire_or_renew()


async def test_a_lost_race_is_not_leadership():
    store = LeaseStore()
    a, b = elector(store, "a", seconds=1), elector(store, "b", seconds=1)
    assert await a.try_acquire_or_renew()
    store.lease["spec"]["renewTime"] = "2000-01-01T00:00:00.000000Z"
    stale = await store.get("")
    assert await b.try_acquire_or_renew()

    async def stale_get(path, **params):
        return copy.deepcopy(stale)

    store_get = store.get
    store.get = stale_get  # type: ignore[method-assign]
    try:
        assert not await a.try_acquire_or_renew()  # its PUT carries an old resourceVersion
    finally:
        store.get = store_get  # type: ignore[method-assign]
    assert store.lease["spec"]["holderIdentity"] == "b"
