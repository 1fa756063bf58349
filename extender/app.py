"""The aiohttp application: /filter, /prioritize, /bind, health and metrics.

Handlers parse once, call the placement functions, and serialise once.  Bad
input is answered with HTTP 400 and a JSON ``{"error": ...}`` naming the
problem; a pod whose annotations cannot be read gets a filter result that
marks every node unresolvable with that reason (kube-scheduler shows it in
the pod's events), never a 500 and never a change to allocation state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import numpy as np
import orjson
from aiohttp import web
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
from tfsched.extender.metrics import DENIAL_BAD_REQUEST, ExtenderMetrics
from tfsched.extender.nodelist import NodeListCache
from tfsched.extender.placement import best_nodes, filter_nodes, score_nodes

log = logging.getLogger(__name__)

JSON = "application/json"
STATE_KEY = web.AppKey("state", ClusterState)
BINDER_KEY = web.AppKey("binder", Binder)
METRICS_KEY = web.AppKey("metrics", ExtenderMetrics)
# Why the ledger cannot be answered from now ('' when it can): caches not
# listed, a re-list under way, the API server unreachable too long.
DISTRUST_KEY = web.AppKey("distrust", Callable[[], str])
NODE_LISTS_KEY = web.AppKey("node_lists", NodeListCache)
# Two lanes, so kube-scheduler's usual small calls never queue behind large bodies.
BUDGET_KEY = web.AppKey("budget", ByteBudget)
SMALL_BUDGET_KEY = web.AppKey("small_budget", ByteBudget)
RAW_BUDGET_KEY = web.AppKey("raw_budget", ByteBudget)
METRICS_PER_GPU_KEY = web.AppKey("metrics_per_gpu", bool)


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON)


def _bad_request(message: str) -> web.Response:
    return _json(orjson.dumps({"error": message}), status=400)


def _body_length(request: web.Request) -> int:
    """A body's length before it is read; chunked: as large as the limit allows."""
    length = request.content_length
    return request.app[STATE_KEY].config.max_request_bytes if length is None else length


async def _read(request: web.Request) -> bytes:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[STATE_KEY].config.max_request_bytes
        raise wire.WireError(f"request body too large (limit {limit} bytes)") from None
    return body


def _parse_cost(body: bytes) -> int:
    """What parsing ``body`` will take; a body too dense to parse is refused (400)."""
    estimate = parse_estimate(body)
    if estimate > MAX_PARSE_ESTIMATE_BYTES:
        raise wire.WireError(
            f"request body too dense: parsing it would take ~{estimate >> 20} MiB"
            f" (limit {MAX_PARSE_ESTIMATE_BYTES >> 20} MiB; the largest real request takes ~490 MiB)"
        )
    return estimate


async def _admitted(request: web.Request, handler: Callable[[web.Request, bytes], Awaitable[web.Response]]):
    """Read the body and run ``handler`` on it within the budgets (see budget.py).

    A small body (kube-scheduler's usual calls) holds its lane at the worst
    expansion before it is read. A large one holds its raw length in a lane of
    its own to be read, then what its parse will take, known once it is read:
    a body too dense to parse is refused at once, never queued for the parse."""
    length = _body_length(request)
    if length <= SMALL_BODY_BYTES:  # too short to be too dense
        async with request.app[SMALL_BUDGET_KEY].hold(length * WORST_EXPANSION_FACTOR):
            return await handler(request, await _read(request))
    async with request.app[RAW_BUDGET_KEY].hold(length):
        body = await _read(request)
        async with request.app[BUDGET_KEY].hold(_parse_cost(body)):
            return await handler(request, body)


def _timed(verb: str, handler: Callable[[web.Request, bytes], Awaitable[web.Response]]):
    async def wrapper(request: web.Request) -> web.Response:
        metrics = request.app[METRICS_KEY]
        started = time.perf_counter()
        try:
            return await _admitted(request, handler)
        except BudgetTimeout as exc:
            metrics.errors.labels(verb, "busy").inc()
            return _json(orjson.dumps({"error": str(exc)}), status=503)
        except wire.WireError as exc:
            metrics.errors.labels(verb, "bad_request").inc()
            return _bad_request(str(exc))
        except Exception as exc:  # a bug: answer, log, keep serving
            log.exception("%s failed", verb)
            metrics.errors.labels(verb, "internal").inc()
            return _json(orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"}), status=500)
        finally:
            metrics.latency.labels(verb).observe(time.perf_counter() - started)

    return wrapper


def _untrusted(request: web.Request, verb: str) -> str:
    why = request.app[DISTRUST_KEY]()
    if why:
        request.app[METRICS_KEY].errors.labels(verb, "untrusted").inc()
    return why


def _gpu_pod_cpu_mem(state: ClusterState, pod: dict) -> tuple[float, float]:
    """A GPU pod's CPU and memory as scoring weighs them: only fragmentation-aware modes do."""
    return pod_cpu_mem(pod) if state.config.needs_all_pods else (0.0, 0.0)


async def handle_filter(request: web.Request, body: bytes) -> web.Response:
    args = wire.parse_scheduling_args(body)
    meta = args.pod.get("metadata") or {}
    if not is_gpu_pod(meta.get("annotations")):
        return _json(wire.passthrough_result(args))
    why = _untrusted(request, "filter")
    if why:
        # The result's Error fails this scheduling cycle; kube-scheduler retries the pod.
        return _json(wire.filter_error(f"tfsched cannot place GPU pods yet: {why}"))
    state = request.app[STATE_KEY]
    metrics = request.app[METRICS_KEY]
    try:
        gpu_request = state.effective_request(args.pod)
    except RequestError as exc:
        metrics.errors.labels("filter", "bad_annotation").inc()
        metrics.count_filter(0, 0, len(args.names), Counter({DENIAL_BAD_REQUEST: len(args.names)}))
        reason = f"pod cannot be placed: {exc}"
        return _json(
            wire.filter_result(args, np.zeros(len(args.names), np.bool_), {}, dict.fromkeys(args.names, reason))
        )
    node_lists = request.app[NODE_LISTS_KEY]
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


async def handle_prioritize(request: web.Request, body: bytes) -> web.Response:
    args = wire.parse_scheduling_args(body)
    meta = args.pod.get("metadata") or {}
    state = request.app[STATE_KEY]
    if not is_gpu_pod(meta.get("annotations")):
        if not state.config.needs_all_pods or _untrusted(request, "prioritize"):
            return _json(wire.priority_result(args.names, np.zeros(len(args.names), np.int64)))
        # The fragmentation-aware mode scores pods without GPUs too: by what their CPU would strand.
        node_list = request.app[NODE_LISTS_KEY].lookup(body, args.names) if args.nodes is None else None
        indices = node_list.indices if node_list else None
        scores = score_nodes(state, None, args.names, indices, pod_cpu_mem(args.pod))
        return _json(wire.priority_result(args.names, scores, node_list))
    why = _untrusted(request, "prioritize")
    if why:
        return _json(orjson.dumps({"error": f"tfsched cannot score GPU pods yet: {why}"}), status=503)
    try:
        gpu_request = state.effective_request(args.pod)
    except RequestError as exc:
        raise wire.WireError(f"pod cannot be scored: {exc}") from None
    node_list = request.app[NODE_LISTS_KEY].lookup(body, args.names) if args.nodes is None else None
    if node_list is None:
        unknown = [n for n in args.names if n not in state.inventory.node_index]
        if unknown:
            more = " ..." if len(unknown) > 5 else ""
            raise wire.WireError(f"unknown node(s): {', '.join(unknown[:5])}{more}")
    indices = node_list.indices if node_list else None
    scores = score_nodes(state, gpu_request, args.names, indices, _gpu_pod_cpu_mem(state, args.pod))
    return _json(wire.priority_result(args.names, scores, node_list))


async def handle_bind(request: web.Request, body: bytes) -> web.Response:
    args = wire.parse_binding_args(body)
    metrics = request.app[METRICS_KEY]
    why = _untrusted(request, "bind")
    if why:
        return _json(wire.binding_result(f"tfsched cannot bind GPU pods yet: {why}"))
    try:
        result = await request.app[BINDER_KEY].bind(args.pod_namespace, args.pod_name, args.pod_uid, args.node)
    except BindError as exc:
        metrics.binds.labels("failed").inc()
        log.info(
            "bind %s/%s to %s failed: %s",
            args.pod_namespace,
            args.pod_name,
            args.node,
            exc,
            extra={"action": "bind_failed", "pod": f"{args.pod_namespace}/{args.pod_name}", "node": args.node},
        )
        return _json(wire.binding_result(str(exc)))
    metrics.binds.labels("bound").inc()
    log.info(
        "bound %s/%s to %s on %s",
        args.pod_namespace,
        args.pod_name,
        result.node,
        ",".join(result.gpu_names),
        extra={"action": "bind", "pod": f"{args.pod_namespace}/{args.pod_name}", "node": result.node},
    )
    return _json(wire.binding_result())


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def handle_readyz(request: web.Request) -> web.Response:
    why = request.app[DISTRUST_KEY]()
    if not why:
        return web.Response(text="ok")
    return web.Response(text=f"not ready: {why}", status=503)


async def handle_metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    # Read the state here, on the loop; write the text (one line per GPU series) in a thread.
    snapshot = metrics.refresh(request.app[STATE_KEY], writing=not request.app[BINDER_KEY].gate.why_closed())
    body = await asyncio.to_thread(metrics.exposition, snapshot, request.app[METRICS_PER_GPU_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    state: ClusterState,
    binder: Binder,
    *,
    distrust: Callable[[], str] = lambda: "",
    metrics: ExtenderMetrics | None = None,
    verbs: bool = True,
    health: bool = True,
    metrics_per_gpu: bool = True,
) -> web.Application:
    """The extender verbs and/or the health and metrics endpoints (two apps on
    two listeners when the verbs require client certificates and probes cannot
    present them); apps built with the same ``metrics`` share them."""
    app = web.Application(client_max_size=state.config.max_request_bytes)
    app[STATE_KEY] = state
    app[BINDER_KEY] = binder
    app[METRICS_KEY] = metrics or ExtenderMetrics()
    app[DISTRUST_KEY] = distrust
    app[METRICS_PER_GPU_KEY] = metrics_per_gpu
    app[NODE_LISTS_KEY] = NodeListCache(state.inventory)
    app[BUDGET_KEY] = ByteBudget()
    app[SMALL_BUDGET_KEY] = ByteBudget(SMALL_LANE_BYTES)
    app[RAW_BUDGET_KEY] = ByteBudget(RAW_LANE_BYTES)
    if verbs:
        app.router.add_post("/filter", _timed("filter", handle_filter))
        app.router.add_post("/prioritize", _timed("prioritize", handle_prioritize))
        app.router.add_post("/bind", _timed("bind", handle_bind))
    if health:
        app.router.add_get("/healthz", handle_healthz)
        app.router.add_get("/readyz", handle_readyz)
        app.router.add_get("/metrics", handle_metrics)
    return app
