"""Serve list and watch for recorded objects on loopback, as kube-apiserver would.

Benchmarks start tfsched against it so that the server loads its cache the way
it does in production (paginated lists, then idle watches) instead of from a
snapshot file.  Lists honour ``limit`` and ``continue``; watches send one
bookmark and stay open until ``timeoutSeconds``.

Run: ``python bench/fake_apiserver.py --objects objects.json --port P``
(``objects.json``: ``{"/api/v1/nodes": [...], "/api/v1/pods": [...], ...}``).
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
from aiohttp import web


def make_app(collections: dict[str, list[dict]]) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        items = collections.get(request.path)
        if items is None:
            return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
        if request.query.get("watch") == "true":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "1"}}}
            await resp.write(orjson.dumps(bookmark) + b"\n")
            await asyncio.sleep(float(request.query.get("timeoutSeconds", "300")))
            return resp
        limit = int(request.query.get("limit", "0") or 0) or len(items)
        start = int(request.query.get("continue", "0") or 0)
        page = items[start : start + limit]
        cont = str(start + limit) if start + limit < len(items) else ""
        body = {"apiVersion": "v1", "metadata": {"resourceVersion": "1", "continue": cont}, "items": page}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def write(request: web.Request) -> web.Response:
        # Binds (POST .../binding) and status patches succeed and change nothing: no watch
        # event follows, as if the API server's answers were all that was measured.
        await request.read()
        status = 201 if request.method == "POST" else 200
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
