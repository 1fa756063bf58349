"""Serve list and watch for recorded objects on loopback, as kube-apiserver would.

Benchmarks start tfsched against it so that the server loads its cache the way
it does in production (paginated lists, then idle watches) instead of from a
snapshot file.  Lists honour ``limit`` and ``continue``; watches send one
bookmark and stay open until ``timeoutSeconds``.  A binding of a listed pod
sends the watch events a cluster's would: the pod bound (its node and the
Binding's annotations), then running (its status, as a kubelet writes it), so
a benchmark's CPU per scheduled pod includes taking them in.  Other writes
succeed and change nothing.

Run: ``python bench/fake_apiserver.py --objects objects.json --port P``
(``objects.json``: ``{"/api/v1/nodes": [...], "/api/v1/pods": [...], ...}``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import re

import orjson
from aiohttp import web

PODS = "/api/v1/pods"
_BINDING = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/binding$")
KUBELET_DELAY_S = 0.05  # from bound to running: a kubelet's status write comes a little later


def make_app(collections: dict[str, list[dict]]) -> web.Application:
    watchers: dict[str, set[web.StreamResponse]] = {}
    pods = {(p["metadata"].get("namespace", "default"), p["metadata"]["name"]): p for p in collections.get(PODS, [])}
    versions = itertools.count(2)
    pending_events: set[asyncio.Task] = set()

    async def send(path: str, etype: str, obj: dict) -> None:
        line = orjson.dumps({"type": etype, "object": obj}) + b"\n"
        for resp in list(watchers.get(path, ())):
            try:
                await resp.write(line)
            except (ConnectionError, RuntimeError):
                watchers[path].discard(resp)

    def bound(pod: dict, binding: dict) -> dict:
        pod = copy.deepcopy(pod)
        meta = pod["metadata"]
        meta["resourceVersion"] = str(next(versions))
        meta.setdefault("annotations", {}).update((binding.get("metadata") or {}).get("annotations") or {})
        pod["spec"]["nodeName"] = binding["target"]["name"]
        status = pod.setdefault("status", {})
        status["phase"] = "Pending"
        status["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        return pod

    def running(pod: dict) -> dict:
        pod = copy.deepcopy(pod)
        pod["metadata"]["resourceVersion"] = str(next(versions))
        pod["status"].update(phase="Running", hostIP="10.0.0.1", podIP="10.1.0.1", startTime="2026-12-03T00:00:00Z")
        pod["status"]["conditions"] = [
            {"type": kind, "status": "True"} for kind in ("PodScheduled", "Initialized", "Ready", "ContainersReady")
        ]
        return pod

    async def kubelet(pod: dict) -> None:
        await asyncio.sleep(KUBELET_DELAY_S)
        await send(PODS, "MODIFIED", running(pod))

    async def handle(request: web.Request) -> web.StreamResponse:
        items = collections.get(request.path)
        if items is None:
            return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
        if request.query.get("watch") == "true":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "1"}}}
            await resp.write(orjson.dumps(bookmark) + b"\n")
            watchers.setdefault(request.path, set()).add(resp)
            try:
                await asyncio.sleep(float(request.query.get("timeoutSeconds", "300")))
            finally:
                watchers[request.path].discard(resp)
            return resp
        limit = int(request.query.get("limit", "0") or 0) or len(items)
        start = int(request.query.get("continue", "0") or 0)
        page = items[start : start + limit]
        cont = str(start + limit) if start + limit < len(items) else ""
        body = {"apiVersion": "v1", "metadata": {"resourceVersion": "1", "continue": cont}, "items": page}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def write(request: web.Request) -> web.Response:
        body = await request.read()
        status = 201 if request.method == "POST" else 200
        binding = _BINDING.match(request.path) if request.method == "POST" else None
        key = (binding.group(1), binding.group(2)) if binding else None
        if key in pods and not pods[key]["spec"].get("nodeName"):
            pods[key] = bound(pods[key], orjson.loads(body))
            await send(PODS, "MODIFIED", pods[key])
            task = asyncio.create_task(kubelet(pods[key]))
            pending_events.add(task)
            task.add_done_callback(pending_events.discard)
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": status}, status=status
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    app.router.add_route("POST", "/{tail:.*}", write)
    app.router.add_route("PATCH", "/{tail:.*}", write)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", required=True)
    parser.add_argument("--port", type=int, required=True)
    opts = parser.parse_args()
    with open(opts.objects, "rb") as fh:
        collections = orjson.loads(fh.read())
    web.run_app(make_app(collections), host="127.0.0.1", port=opts.port, print=None)


if __name__ == "__main__":
    main()
