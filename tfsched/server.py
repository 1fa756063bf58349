"""Run tfsched: wire state, cache feed (informers or a snapshot), kernels, the
HTTP app and, against a cluster, the autoscale loop on the leader.  This is
the edge where I/O happens."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.cache import EventType, Kind, kind_of, read_snapshot
from tfsched.extender.app import ExtenderApp
from tfsched.extender.bind import ApiPodWriter, Binder, MemoryPodWriter
from tfsched.extender.httpserver import BodyError, HttpServer, Reply, Request, Route, Routes
from tfsched.extender.metrics import ExtenderMetrics
from tfsched.extender.tls import TLSFiles, reload_on_change, server_context
from tfsched.extender.upkeep import GPU_STATUS_BURST, GPU_STATUS_QPS, GpuStatusWriter, LedgerAuditor
from tfsched.extender.webhook import DEFAULT_WEBHOOK_SCHEDULER, webhook_routes
from tfsched.kubeapi.client import KubeClient
from tfsched.kubeapi.events import report_problems
from tfsched.kubeapi.informer import RESOURCES, Informer
from tfsched.kubeapi.leader import LeaderElector, Leadership, LeaseFollower, WriterGate
from tfsched.scoring.kernels import warm_up

if TYPE_CHECKING:
    from tfsched.autoscale.loop import Autoscaler
    from tfsched.config import ServeConfig

log = logging.getLogger(__name__)

WATCHED_KINDS = (Kind.NODE, Kind.GPU, Kind.WORKLOAD, Kind.WORKLOAD_PROFILE, Kind.POD)
HEAP_FREEZE_INTERVAL_S = 600.0  # see Server._freeze_heap

# The cyclic garbage collector is off while the first lists are taken in, for at most this
# long: each of its full passes walks the whole growing cache (a quarter of the time to ready
# at 20,000 nodes), and the cached objects are plain dicts that refcounting frees.
INITIAL_LOAD_GC_PAUSE_S = 120.0


def _settle_heap(frozen: bool, *, collect: bool = True) -> None:
    """Collect what cycles are left (``collect``), then (``frozen``) move every survivor — the
    cache, the ledger, the modules — out of the collector's sight, so its later full passes
    walk only what changes, not millions of cached objects."""
    if collect:
        gc.collect()
    if frozen:
        gc.freeze()
    gc.enable()


def _settle_initial_load(frozen: bool) -> None:
    """After the initial load: frozen without a full pass first.  That pass walks the whole
    cache (0.3–0.5 s on the loop at 20,000 nodes, just as the server turns ready), and the
    load leaves next to no cycles (none found at 20,000 nodes); what it leaves is collected
    by the first periodic pass (``Server._freeze_heap``), which unfreezes first."""
    _settle_heap(frozen, collect=not frozen)


@contextlib.contextmanager
def _initial_load() -> Iterator[None]:
    """The collector paused around a synchronous bulk load (a snapshot), then the heap settled."""
    if not gc.isenabled():  # someone else manages the collector
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        _settle_initial_load(frozen=True)


@dataclass(frozen=True)
class Listener:
    """Where one of the side listeners (health, webhook) accepts connections; port 0 picks one."""

    host: str
    port: int


@dataclass
class Server:
    """One running tfsched, usable from the CLI and from tests."""

    state: ClusterState
    binder: Binder
    gate: WriterGate
    client: KubeClient | None = None
    autoscaler: Autoscaler | None = None
    test_hooks: bool = False
    # One registry for the process: the extender's, the allocation's and the autoscaler's series.
    metrics: ExtenderMetrics = field(default_factory=ExtenderMetrics)
    metrics_per_gpu: bool = True  # config metrics.perGPU
    gpu_status_pace: tuple[float, int] = (GPU_STATUS_QPS, GPU_STATUS_BURST)  # config gpuStatus: qps, burst
    kernels_ready: bool = False
    tasks: list[asyncio.Task] = field(default_factory=list)
    listeners: list[HttpServer] = field(default_factory=list)
    health_port: int | None = None
    webhook_port: int | None = None
    webhook_scheduler: str = DEFAULT_WEBHOOK_SCHEDULER
    informers: dict[Kind, Informer] = field(default_factory=dict)
    heap_frozen: bool = False  # by the initial load's end (see _settle_initial_load)

    def distrust(self) -> str:
        """Why the ledger may not be answered from now ('' when it may)."""
        if not self.kernels_ready:
            return "kernels are still compiling"
        synced = self.state.cache.synced
        if synced.issuperset(WATCHED_KINDS):  # asked on every extender call
            return ""
        missing = [str(kind) for kind in WATCHED_KINDS if kind not in synced]
        return f"the cache is not current for {', '.join(missing)} (listing, or the API server unreachable)"

    async def fresh_pod_list(self) -> None:
        """The fence's quorum read: every bind the previous leader made is in the ledger after it."""
        informer = self.informers.get(Kind.POD)
        if informer is not None:
            await informer.relisted()

    async def start(
        self,
        host: str,
        port: int,
        *,
        tls: TLSFiles | None = None,
        health: Listener | None = None,
        webhook: Listener | None = None,
    ) -> int:
        """Listen (HTTPS with ``tls``; the health and metrics endpoints on
        ``health``, plain HTTP, when given; the admission webhook on
        ``webhook``, HTTPS with the same certificate but no client
        certificate, as the API server calls it) and start the background work.
        Returns the verbs' port (the one bound, for port 0)."""
        separate = health is not None
        app = ExtenderApp(self.state, self.binder, self.metrics, self.distrust, self.metrics_per_gpu)
        routes = app.routes(health=not separate)
        if self.test_hooks:
            routes.update(self._test_hooks())
        context = None
        if tls is not None:
            context = server_context(tls)
            self.tasks.append(asyncio.create_task(reload_on_change(context, tls), name="tls-reload"))
        bound = await self._listen(routes, host, port, context)
        if health is not None:
            self.health_port = await self._listen(app.routes(verbs=False), health.host, health.port, None)
        if webhook is not None:
            if tls is None:
                raise ValueError("the admission webhook needs TLS (--tls-cert-file, --tls-private-key-file)")
            mutate = webhook_routes(self.webhook_scheduler, self.state.config.max_request_bytes)
            plain_tls = TLSFiles(tls.cert, tls.key)
            webhook_context = server_context(plain_tls)
            self.tasks.append(
                asyncio.create_task(reload_on_change(webhook_context, plain_tls), name="tls-reload-webhook")
            )
            self.webhook_port = await self._listen(mutate, webhook.host, webhook.port, webhook_context)
        if self.client is not None:
            if gc.isenabled():
                gc.disable()
                self.tasks.append(asyncio.create_task(self._settle_heap_when_synced(), name="initial-load-gc"))
            for kind in WATCHED_KINDS:
                informer = Informer(
                    self.client, self.state.cache, RESOURCES[kind], self.state.keeps_pod if kind is Kind.POD else None
                )
                self.informers[kind] = informer
                self.tasks.append(asyncio.create_task(informer.run(), name=f"informer-{kind}"))
            self.tasks.append(asyncio.create_task(report_problems(self.client, self.state.problems), name="problems"))
            auditor = LedgerAuditor(
                self.client, self.state, self.distrust, self.state.config.audit_interval.total_seconds()
            )
            self.tasks.append(asyncio.create_task(auditor.run(), name="ledger-auditor"))
            qps, burst = self.gpu_status_pace
            gpu_status = GpuStatusWriter(
                self.client, self.state, self.gate, self.distrust, self.metrics, qps=qps, burst=burst
            )
            self.tasks.append(asyncio.create_task(gpu_status.run(), name="gpu-status"))
        # Compile (or load cached) kernels off the event loop; /readyz waits for it.
        await asyncio.to_thread(warm_up)
        if self.autoscaler is not None:
            from tfsched.autoscale.loop import warm_up as warm_up_autoscaler

            await asyncio.to_thread(warm_up_autoscaler)
        self.kernels_ready = True
        self.tasks.append(asyncio.create_task(self.gate.run(), name="writer-gate"))
        self.tasks.append(asyncio.create_task(self._freeze_heap(), name="heap-freeze"))
        if self.autoscaler is not None:
            self.tasks.append(asyncio.create_task(self._run_autoscaler(), name="autoscaler"))
        return bound

    async def _settle_heap_when_synced(self, bound: float = INITIAL_LOAD_GC_PAUSE_S) -> None:
        """Turn the collector back on once every kind is synced (or after ``bound`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        synced = False
        try:
            while not (synced := all(kind in self.state.cache.synced for kind in WATCHED_KINDS)):
                if loop.time() >= deadline:
                    log.warning("caches not synced after %gs; garbage collection resumed", bound)
                    break
                await asyncio.sleep(0.05)
        finally:
            _settle_initial_load(frozen=synced)
            self.heap_frozen = synced

    async def _listen(self, routes: Routes, host: str, port: int, context: ssl.SSLContext | None) -> int:
        listener = HttpServer(routes)
        self.listeners.append(listener)
        return await listener.start(host, port, context)  # the port bound (port 0 in tests)

    async def _freeze_heap(self) -> None:
        """After the initial load's settle (``_settle_heap``), objects created since keep
        entering the collector's oldest generation, and its full passes (20 of ~140 ms in
        bench_scheduling before any freeze) walk them all.  Every interval what is alive
        is collected once and frozen again; unfreezing before that collection keeps a
        garbage cycle among frozen objects for at most one interval."""
        while True:
            await asyncio.sleep(HEAP_FREEZE_INTERVAL_S)
            if not gc.isenabled():
                continue  # the initial load's pause (see INITIAL_LOAD_GC_PAUSE_S)
            gc.unfreeze()
            _settle_heap(frozen=True)
            self.heap_frozen = True

    async def _run_autoscaler(self) -> None:
        assert self.autoscaler is not None
        while self.distrust():  # decide nothing before the cache has the cluster
            await asyncio.sleep(0.1)
        await self.autoscaler.run(self.gate.active)

    def _test_hooks(self) -> Routes:
        async def clock(request: Request) -> Reply:
            if self.autoscaler is None:
                return Reply.error("no autoscaler")
            try:
                body = orjson.loads(await request.read())
                self.autoscaler.clock.offset = timedelta(seconds=float(body["offsetSeconds"]))
            except (BodyError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                return Reply.error(f"expected {{'offsetSeconds': number}}: {exc}")
            return Reply.json({"now": self.autoscaler.clock.now().isoformat()})

        async def tick(request: Request) -> Reply:
            if self.autoscaler is None or not self.gate.active.is_set():
                return Reply.error("no autoscaler leading here", 409)
            await self.autoscaler.tick()
            return Reply.json({"ticks": self.autoscaler.ticks})

        async def objects(request: Request) -> Reply:
            """Snapshot mode: objects arriving as a watch would deliver them (a replay's pods)."""
            if self.client is not None:
                return Reply.error("only in snapshot mode: the cluster feeds the cache", 409)
            try:
                body = orjson.loads(await request.read())
                items = body["items"]
                if not isinstance(items, list):
                    raise TypeError("items is not a list")
            except (BodyError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
                return Reply.error(f"expected {{'items': [objects]}}: {exc}")
            taken = 0
            for obj in items:
                kind = kind_of(obj)
                if kind is not None:
                    taken += self.state.cache.apply(kind, EventType.ADDED, obj)
            return Reply.json({"applied": taken})

        limit = self.state.config.max_request_bytes
        return {
            ("POST", "/debug/clock"): Route(clock, limit),
            ("POST", "/debug/autoscale/tick"): Route(tick, limit),
            ("POST", "/debug/objects"): Route(objects, limit),
        }

    async def stop(self) -> None:
        if self.autoscaler is not None and self.gate.active.is_set():
            await self.autoscaler.shutdown()
        await self.gate.stop()  # no new writes; those in flight finish; then the lease is given up
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.autoscaler is not None:
            await self.autoscaler.source.close()
        for listener in self.listeners:
            await listener.close()
        if self.client is not None:
            await self.client.close()
        if self.heap_frozen:  # what this server froze is the collector's again (tests run many)
            gc.unfreeze()
            self.heap_frozen = False


async def build_server(
    config: ServeConfig,
    *,
    snapshot: Path | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    test_hooks: bool = False,
) -> Server:
    state = ClusterState(config.scheduling)
    if snapshot is not None:
        with _initial_load():
            state.load(read_snapshot(snapshot))
        gate = WriterGate()
        binder = Binder(state, MemoryPodWriter(state), gate)
        return Server(state, binder, gate, test_hooks=test_hooks, metrics_per_gpu=config.metrics.per_gpu)
    client = await KubeClient.from_config(kubeconfig, context)
    election = config.leader_election
    leadership: Leadership | None = None
    if election.enabled and election.follow_scheduler is not None:
        leadership = LeaseFollower(client, election.follow_scheduler)
    elif election.enabled:
        leadership = LeaderElector(
            client,
            election.namespace,
            election.lease_name,
            lease_duration=election.lease_duration,
            renew_every=election.renew_every,
        )
    server: Server
    gate = WriterGate(leadership, lambda: server.fresh_pod_list())
    server = Server(
        state,
        Binder(state, ApiPodWriter(client), gate),
        gate,
        client=client,
        test_hooks=test_hooks,
        metrics_per_gpu=config.metrics.per_gpu,
        gpu_status_pace=(config.gpu_status.qps, config.gpu_status.burst),
    )
    server.webhook_scheduler = config.webhook.scheduler_name
    settings = config.autoscaling
    if settings.enabled:
        from tfsched.autoscale.loop import Autoscaler
        from tfsched.autoscale.metrics import AutoscaleMetrics
        from tfsched.autoscale.prometheus import PrometheusSource

        autoscale_metrics = AutoscaleMetrics(server.metrics.registry)
        autoscale_metrics.leading.set_function(lambda: 1.0 if gate.active.is_set() else 0.0)
        server.autoscaler = Autoscaler(
            state, client, PrometheusSource(settings.metrics), settings, metrics=autoscale_metrics
        )
    return server


async def serve_forever(
    server: Server,
    host: str,
    port: int,
    *,
    tls: TLSFiles | None = None,
    health: Listener | None = None,
    webhook: Listener | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = await server.start(host, port, tls=tls, health=health, webhook=webhook)
    scheme = "https" if tls else "http"
    log.info(
        "tfsched listening on %s://%s:%d%s",
        scheme,
        host,
        bound,
        " (client certificates required)" if tls and tls.client_ca else "",
    )
    if health is not None:
        log.info("health and metrics on http://%s:%d", health.host, server.health_port)
    if webhook is not None:
        log.info("admission webhook on https://%s:%d/mutate", webhook.host, server.webhook_port)
    try:
        await stop.wait()
    finally:
        await server.stop()
