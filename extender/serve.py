"""Run the extender: wire state, cache feed (informers or a snapshot), kernels
and the HTTP app together.  This is the edge where I/O happens."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from clustermodel.cache import Kind, read_snapshot
from clustermodel.informer import RESOURCES, Informer
from clustermodel.kube import KubeClient
from extender.app import create_app
from extender.bind import ApiPodWriter, Binder, MemoryPodWriter
from extender.config import SchedulingConfig
from extender.state import ClusterState, keep_pod
from scoring.kernels import warm_up

log = logging.getLogger(__name__)

WATCHED_KINDS = (Kind.NODE, Kind.GPU, Kind.WORKLOAD, Kind.WORKLOAD_PROFILE, Kind.POD)


@dataclass
class Server:
    """One running extender, usable from the CLI and from tests."""

    state: ClusterState
    binder: Binder
    client: KubeClient | None = None
    kernels_ready: bool = False
    tasks: list[asyncio.Task] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def ready(self) -> bool:
        return self.kernels_ready and set(WATCHED_KINDS) <= self.state.cache.synced

    async def start(self, host: str, port: int) -> int:
        app = create_app(self.state, self.binder, ready=self.ready)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server else []  # the port actually bound (port 0 in tests)
        bound = sockets[0].getsockname()[1] if sockets else port
        if self.client is not None:
            for kind in WATCHED_KINDS:
                informer = Informer(
                    self.client, self.state.cache, RESOURCES[kind], keep_pod if kind is Kind.POD else None
                )
                self.tasks.append(asyncio.create_task(informer.run(), name=f"informer-{kind}"))
        # Compile (or load cached) kernels off the event loop; /readyz waits for it.
        await asyncio.to_thread(warm_up)
        self.kernels_ready = True
        return bound

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.client is not None:
            await self.client.close()


async def build_server(
    config: SchedulingConfig, *, snapshot: Path | None = None, kubeconfig: str | None = None
) -> Server:
    state = ClusterState(config)
    if snapshot is not None:
        state.load(read_snapshot(snapshot))
        return Server(state, Binder(state, MemoryPodWriter(state)))
    client = await KubeClient.from_config(kubeconfig)
    return Server(state, Binder(state, ApiPodWriter(client)), client=client)


async def serve_forever(server: Server, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = await server.start(host, port)
    log.info("tfsched extender listening on %s:%d", host, bound)
    try:
        await stop.wait()
    finally:
        await server.stop()
