"""The initial load's time lever: the collector paused until the first lists are in."""

from __future__ import annotations

import asyncio
import gc

from tfsched.allocation.state import ClusterState
from tfsched.extender.bind import Binder, MemoryPodWriter
from tfsched.kubeapi.leader import WriterGate
from tfsched.server import WATCHED_KINDS, Server, _initial_load


def _server() -> Server:
    state = ClusterState()
    gate = WriterGate()
    return Server(state, Binder(state, MemoryPodWriter(state), gate), gate)


async def test_collector_resumes_and_freezes_the_heap_once_every_kind_is_synced():
    server = _server()
    gc.disable()
    try:
        settle = asyncio.create_task(server._settle_heap_when_synced())
        await asyncio.sleep(0.1)
        assert not gc.isenabled()  # still listing
        server.state.cache.synced.update(WATCHED_KINDS)
        await asyncio.wait_for(settle, 5)
        assert gc.isenabled() and server.heap_frozen and gc.get_freeze_count() > 0
        await server.stop()
        assert not server.heap_frozen and gc.get_freeze_count() == 0
    finally:
        gc.enable()
        gc.unfreeze()


async def test_collector_resumes_after_its_bound_when_the_cache_never_syncs():
    server = _server()
    gc.disable()
    try:
        await asyncio.wait_for(server._settle_heap_when_synced(bound=0.1), 5)
        assert gc.isenabled() and not server.heap_frozen
    finally:
        gc.enable()


def test_a_snapshot_load_pauses_the_collector_and_leaves_it_on():
    try:
        with _initial_load():
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
