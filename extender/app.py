"""The extender's routes: /filter, /prioritize, /bind, health and metrics.

Handlers parse once, call the placement functions, and serialise once.  Bad
input is answered with HTTP 400 and a JSON ``{"error": ...}`` naming the
problem; a pod whose annotations cannot be read gets a filter result that
marks every node unresolvable with that reason (kube-scheduler shows it in
the pod's events), never a 500 and never a change to allocation state.
The routes are served by ``httpserver.HttpServer``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST

from tfsched.allocation.noderesources import pod_cpu_mem
from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.gpurequest import RequestError, is_gpu_pod
from tfsched.extender import wire
from tfsched.extender.bind import Binder, BindError
from tfsched.extender.budget import (
    MAX_PARSE_ESTIMATE_BYTES,
    RAW_LANE_BYTES,
    SMALL_BODY_BYTES,
    SMALL_LANE_BYTES,
    WORST_EXPANSION_FACTOR,
    BudgetTimeout,
    ByteBudget,
    parse_estimate,
)
from tfsched.extender.httpserver import BodyError, ClientGone, Reply, Request, Route, Routes
from tfsched.extender.metrics import DENIAL_BAD_REQUEST, ExtenderMetrics
from tfsched.extender.nodelist import NodeListCache
from tfsched.extender.placement import best_nodes, filter_nodes, score_nodes

log = logging.getLogger(__name__)


def _json(body: bytes) -> Reply:
    return Reply(200, body)


@dataclass(eq=False)
class ExtenderApp:
    """What the handlers share: the state, the binder, the metrics, the node-list cache and
    the parse budgets (two lanes, so kube-scheduler's usual small calls never queue behind
    large bodies).  ``distrust`` says why the ledger cannot be answered from now ('' when it
    can): caches not listed, a re-list under way, the API server unreachable too long."""

    state: ClusterState
    binder: Binder
    metrics: ExtenderMetrics = field(default_factory=ExtenderMetrics)
    distrust: Callable[[], str] = lambda: ""
    metrics_per_gpu: bool = True
    node_lists: NodeListCache = field(init=False)
    budget: ByteBudget = field(default_factory=ByteBudget)
    small_budget: ByteBudget = field(default_factory=lambda: ByteBudget(SMALL_LANE_BYTES))
    raw_budget: ByteBudget = field(default_factory=lambda: ByteBudget(RAW_LANE_BYTES))

    def __post_init__(self) -> None:
        self.node_lists = NodeListCache(self.state.inventory)

    def routes(self, *, verbs: bool = True, health: bool = True) -> Routes:
        """The extender verbs and/or the health and metrics endpoints (two listeners when the
        verbs require client certificates and probes cannot present them)."""
        limit = self.state.config.max_request_bytes
        routes: Routes = {}
        if verbs:
            routes["POST", "/filter"] = self._quick_route("filter", handle_filter, limit)
            routes["POST", "/prioritize"] = self._quick_route("prioritize", handle_prioritize, limit)
            routes["POST", "/bind"] = Route(self._timed("bind", handle_bind), limit)
        if health:
            routes["GET", "/healthz"] = Route(self._untimed(handle_healthz), 0)
            routes["GET", "/readyz"] = Route(self._untimed(handle_readyz), 0)
            routes["GET", "/metrics"] = Route(self._untimed(handle_metrics), 0)
        return routes

    def _untimed(self, handler: Callable[[ExtenderApp], Awaitable[Reply]]) -> Callable[[Request], Awaitable[Reply]]:
        async def call(request: Request) -> Reply:
            return await handler(self)

        return call

    def _quick_route(self, verb: str, handler: SyncVerbHandler, limit: int) -> Route:
        """A verb that awaits nothing: answered on the spot when its small body is complete
        and its lane has room now; otherwise by the same handler through the budgets."""

        async def later(app: ExtenderApp, body: bytes) -> Reply:
            return handler(app, body)

        observe = self.metrics.latency.labels(verb).observe  # the series looked up once, not per call

        def quick(request: Request) -> Reply | None:
            size = request.content_length
            if size is None or size > SMALL_BODY_BYTES:
                return None
            cost = size * WORST_EXPANSION_FACTOR
            if not self.small_budget.try_hold(cost):
                return None
            started = time.perf_counter()
            try:
                return handler(self, request.body())
            except Exception as exc:
                return self._failure(verb, exc)
            finally:
                self.small_budget.release(cost)
                observe(time.perf_counter() - started)

        return Route(self._timed(verb, later), limit, quick)

    def _timed(self, verb: str, handler: VerbHandler) -> Callable[[Request], Awaitable[Reply]]:
        observe = self.metrics.latency.labels(verb).observe

        async def call(request: Request) -> Reply:
            started = time.perf_counter()
            try:
                return await self._admitted(request, handler)
            except ClientGone:
                raise  # nobody to answer; the server drops the connection
            except Exception as exc:
                return self._failure(verb, exc)
            finally:
                observe(time.perf_counter() - started)

        return call

    def _failure(self, verb: str, exc: Exception) -> Reply:
        """A verb's exception as its answer: busy (503), bad request (400), or a bug (500)."""
        metrics = self.metrics
        if isinstance(exc, BudgetTimeout):
            metrics.errors.labels(verb, "busy").inc()
            return Reply.error(str(exc), 503)
        if isinstance(exc, (wire.WireError, BodyError)):
            metrics.errors.labels(verb, "bad_request").inc()
            return Reply.error(str(exc))
        log.error("%s failed", verb, exc_info=exc)  # a bug: answer, log, keep serving
        metrics.errors.labels(verb, "internal").inc()
        return Reply.error(f"internal error: {type(exc).__name__}: {exc}", 500)

    async def _admitted(self, request: Request, handler: VerbHandler) -> Reply:
        """Read the body and run ``handler`` on it within the budgets (see budget.py).

        A small body (kube-scheduler's usual calls) holds its lane at the worst
        expansion before it is read. A large one holds its raw length in a lane of
        its own to be read, then what its parse will take, known once it is read:
        a body too dense to parse is refused at once, never queued for the parse."""
        length = request.content_length
        if length is None:  # chunked: as large as the limit allows
            length = self.state.config.max_request_bytes
        if length <= SMALL_BODY_BYTES:  # too short to be too dense
            async with self.small_budget.hold(length * WORST_EXPANSION_FACTOR):
                return await handler(self, await request.read())
        async with self.raw_budget.hold(length):
            body = await request.read()
            async with self.budget.hold(_parse_cost(body)):
                return await handler(self, body)


VerbHandler = Callable[[ExtenderApp, bytes], Awaitable[Reply]]
SyncVerbHandler = Callable[[ExtenderApp, bytes], Reply]


def _parse_cost(body: bytes) -> int:
    """What parsing ``body`` will take; a body too dense to parse is refused (400)."""
    estimate = parse_estimate(body)
    if estimate > MAX_PARSE_ESTIMATE_BYTES:
        raise wire.WireError(
            f"request body too dense: parsing it would take ~{estimate >> 20} MiB"
            f" (limit {MAX_PARSE_ESTIMATE_BYTES >> 20} MiB; the largest real request takes ~490 MiB)"
        )
    return estimate


def _untrusted(app: ExtenderApp, verb: str) -> str:
    why = app.distrust()
    if why:
        app.metrics.errors.labels(verb, "untrusted").inc()
    return why


def _gpu_pod_cpu_mem(state: ClusterState, pod: dict) -> tuple[float, float]:
    """A GPU pod's CPU and memory as scoring weighs them: only fragmentation-aware modes do."""
    return pod_cpu_mem(pod) if state.config.needs_all_pods else (0.0, 0.0)


def handle_filter(app: ExtenderApp, body: bytes) -> Reply:
    args = wire.parse_scheduling_args(body)
    meta = args.pod.get("metadata") or {}
    if not is_gpu_pod(meta.get("annotations")):
        return _json(wire.passthrough_result(args))
    why = _untrusted(app, "filter")
    if why:
        # The result's Error fails this scheduling cycle; kube-scheduler retries the pod.
        return _json(wire.filter_error(f"tfsched cannot place GPU pods yet: {why}"))
    state = app.state
    metrics = app.metrics
    try:
        gpu_request = state.effective_request(args.pod)
    except RequestError as exc:
        metrics.errors.labels("filter", "bad_annotation").inc()
        metrics.count_filter(0, 0, len(args.names), Counter({DENIAL_BAD_REQUEST: len(args.names)}))
        reason = f"pod cannot be placed: {exc}"
        return _json(
            wire.filter_result(args, np.zeros(len(args.names), np.bool_), {}, dict.fromkeys(args.names, reason))
        )
    node_lists = app.node_lists
    node_list = node_lists.lookup(body, args.names) if args.nodes is None else None
    outcome = filter_nodes(state, gpu_request, args.names, node_list.indices if node_list else None)
    metrics.count_filter(int(outcome.passed.sum()), len(outcome.failed), len(outcome.unresolvable), outcome.denials)
    passed, names_json = outcome.passed, None
    if state.config.score_in_filter:
        indices = node_list.indices if node_list else None
        passed = best_nodes(state, gpu_request, args.names, indices, passed, _gpu_pod_cpu_mem(state, args.pod))
        names_json = node_list.names_json(passed) if node_list else None  # no prioritize call follows
    elif node_list:
        names_json = node_lists.survivors(node_list, passed)
    return _json(wire.filter_result(args, passed, outcome.failed, outcome.unresolvable, names_json))


def handle_prioritize(app: ExtenderApp, body: bytes) -> Reply:
    args = wire.parse_scheduling_args(body)
    meta = args.pod.get("metadata") or {}
    state = app.state
    if not is_gpu_pod(meta.get("annotations")):
        if not state.config.needs_all_pods or _untrusted(app, "prioritize"):
            return _json(wire.priority_result(args.names, np.zeros(len(args.names), np.int64)))
        # The fragmentation-aware mode scores pods without GPUs too: by what their CPU would strand.
        node_list = app.node_lists.lookup(body, args.names) if args.nodes is None else None
        indices = node_list.indices if node_list else None
        scores = score_nodes(state, None, args.names, indices, pod_cpu_mem(args.pod))
        return _json(wire.priority_result(args.names, scores, node_list))
    why = _untrusted(app, "prioritize")
    if why:
        return Reply.error(f"tfsched cannot score GPU pods yet: {why}", 503)
    try:
        gpu_request = state.effective_request(args.pod)
    except RequestError as exc:
        raise wire.WireError(f"pod cannot be scored: {exc}") from None
    node_list = app.node_lists.lookup(body, args.names) if args.nodes is None else None
    if node_list is None:
        unknown = [n for n in args.names if n not in state.inventory.node_index]
        if unknown:
            more = " ..." if len(unknown) > 5 else ""
            raise wire.WireError(f"unknown node(s): {', '.join(unknown[:5])}{more}")
    indices = node_list.indices if node_list else None
    scores = score_nodes(state, gpu_request, args.names, indices, _gpu_pod_cpu_mem(state, args.pod))
    return _json(wire.priority_result(args.names, scores, node_list))


async def handle_bind(app: ExtenderApp, body: bytes) -> Reply:
    args = wire.parse_binding_args(body)
    metrics = app.metrics
    why = _untrusted(app, "bind")
    if why:
        return _json(wire.binding_result(f"tfsched cannot bind GPU pods yet: {why}"))
    try:
        result = await app.binder.bind(args.pod_namespace, args.pod_name, args.pod_uid, args.node)
    except BindError as exc:
        metrics.bind_results["failed"].inc()
        log.info(
            "bind %s/%s to %s failed: %s",
            args.pod_namespace,
            args.pod_name,
            args.node,
            exc,
            extra={"action": "bind_failed", "pod": f"{args.pod_namespace}/{args.pod_name}", "node": args.node},
        )
        return _json(wire.binding_result(str(exc)))
    metrics.bind_results["bound"].inc()
    log.info(
        "bound %s/%s to %s on %s",
        args.pod_namespace,
        args.pod_name,
        result.node,
        ",".join(result.gpu_names),
        extra={"action": "bind", "pod": f"{args.pod_namespace}/{args.pod_name}", "node": result.node},
    )
    return _json(wire.binding_result())


async def handle_healthz(app: ExtenderApp) -> Reply:
    return Reply.text("ok")


async def handle_readyz(app: ExtenderApp) -> Reply:
    why = app.distrust()
    if not why:
        return Reply.text("ok")
    return Reply.text(f"not ready: {why}", 503)


async def handle_metrics(app: ExtenderApp) -> Reply:
    metrics = app.metrics
    # Read the state here, on the loop; write the text (one line per GPU series) in a thread.
    snapshot = metrics.refresh(app.state, writing=not app.binder.gate.why_closed())
    body = await asyncio.to_thread(metrics.exposition, snapshot, app.metrics_per_gpu)
    return Reply(200, body, CONTENT_TYPE_LATEST)
