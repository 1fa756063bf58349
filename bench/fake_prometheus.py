"""Serve Prometheus' ``/api/v1/query_range`` on loopback from recorded synthetic usage.

Benchmarks start it as its own process so the autoscale loop reads usage over
real HTTP, the way it reads a real Prometheus, while the server's own cost
stays out of the measured process.  It answers the two default queries of
``autoscale/prometheus.py`` (told apart by the metric name in ``query``): a
``matrix`` result with one series per pod (labels ``namespace`` and ``pod``)
and one value per step in ``[start, end]``, values as strings, as Prometheus
writes them.  Any other query gets Prometheus' ``bad_data`` error.

The data is deterministic: the value of series *i* at time *t* is its level
from the fleet file times a factor drawn from a generator seeded with
``(seed, query, t)``, so any window gives the same values at the same
timestamps.  Answers are generated with numpy and kept as serialised bytes
per (query, start, end, step); ``POST /-/prepare`` (same ``start``, ``end``,
``step`` form fields as ``query_range``) builds both answers of a window ahead
of time and replies with their sizes, so a timed query only sends bytes.
``GET /-/stats`` counts queries and cache misses.

Run: ``python bench/fake_prometheus.py --fleet fleet.json --port P``
(``fleet.json``: ``{"seed": 1, "series": [[namespace, pod, tflops_level, vram_level_bytes], ...]}``).
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict

import numpy as np
import orjson
from aiohttp import web

from tfsched.autoscale.matrix import NAMESPACE_LABEL, POD_LABEL
from tfsched.autoscale.prometheus import QUERY_RANGE_PATH, TFLOPS_METRIC, VRAM_METRIC

TFLOPS = "tflops"
VRAM = "vram"
MAX_CACHED = 8  # answers kept (bytes), oldest dropped first


class Fleet:
    """The series and their usage levels; builds ``query_range`` answers for any window."""

    def __init__(self, seed: int, series: list[list]) -> None:
        self.seed = seed
        self.labels = [{NAMESPACE_LABEL: s[0], POD_LABEL: s[1]} for s in series]
        self.levels = {
            TFLOPS: np.array([float(s[2]) for s in series]),
            VRAM: np.array([float(s[3]) for s in series]),
        }

    def values(self, which: str, stamps_ms: np.ndarray) -> np.ndarray:
        """``(series, len(stamps))`` usage values."""
        level = self.levels[which]
        out = np.empty((level.shape[0], stamps_ms.shape[0]))
        for j, stamp in enumerate(stamps_ms):
            noise = np.random.default_rng([self.seed, 0 if which == TFLOPS else 1, int(stamp)]).random(level.shape[0])
            if which == TFLOPS:
                out[:, j] = np.round(level * (0.55 + 0.6 * noise), 3)  # busy and idle minutes
            else:
                out[:, j] = np.floor(level * (0.92 + 0.08 * noise))  # VRAM moves little
        return out

    def body(self, which: str, start_ms: int, end_ms: int, step_ms: int) -> bytes:
        stamps_ms = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        values = self.values(which, stamps_ms)
        text = values.astype(np.int64).astype(str) if which == VRAM else values.astype(str)
        # Prometheus writes timestamps as numbers with at most millisecond decimals.
        stamps = [int(ms // 1000) if ms % 1000 == 0 else ms / 1000 for ms in stamps_ms.tolist()]
        result = [
            {"metric": labels, "values": [[t, v] for t, v in zip(stamps, row, strict=True)]}
            for labels, row in zip(self.labels, text.tolist(), strict=True)
        ]
        return orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}})


def _ms(text: str | None, name: str) -> int:
    if text is None:
        raise ValueError(f"missing {name}")
    return round(float(text) * 1000)


def _step_ms(text: str | None) -> int:
    if text is None:
        raise ValueError("missing step")
    text = text.strip()
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return round(float(text[: -len(unit)]) * units[unit])
    return round(float(text) * 1000)


def _bad_data(message: str) -> web.Response:
    body = {"status": "error", "errorType": "bad_data", "error": message}
    return web.Response(status=400, body=orjson.dumps(body), content_type="application/json")


def make_app(fleet: Fleet) -> web.Application:
    cache: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
    stats = {"queries": 0, "misses": 0, "bytes_sent": 0}

    def answer(which: str, start_ms: int, end_ms: int, step_ms: int) -> tuple[bytes, bool]:
        key = (which, start_ms, end_ms, step_ms)
        body = cache.get(key)
        if body is not None:
            cache.move_to_end(key)
            return body, True
        body = cache[key] = fleet.body(which, start_ms, end_ms, step_ms)
        while len(cache) > MAX_CACHED:
            cache.popitem(last=False)
        return body, False

    async def params(request: web.Request) -> dict[str, str]:
        form = dict(request.query)
        if request.method == "POST":
            form.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        return form

    def window(form: dict[str, str]) -> tuple[int, int, int]:
        start_ms, end_ms, step_ms = (
            _ms(form.get("start"), "start"),
            _ms(form.get("end"), "end"),
            _step_ms(form.get("step")),
        )
        if step_ms <= 0 or end_ms < start_ms:
            raise ValueError("end must not be before start and step must be positive")
        return start_ms, end_ms, step_ms

    async def query_range(request: web.Request) -> web.Response:
        form = await params(request)
        query = form.get("query", "")
        if TFLOPS_METRIC in query:
            which = TFLOPS
        elif VRAM_METRIC in query:
            which = VRAM
        else:
            return _bad_data(f"fake Prometheus knows only {TFLOPS_METRIC} and {VRAM_METRIC}: {query!r}")
        try:
            start_ms, end_ms, step_ms = window(form)
        except ValueError as exc:
            return _bad_data(str(exc))
        body, hit = answer(which, start_ms, end_ms, step_ms)
        stats["queries"] += 1
        stats["misses"] += 0 if hit else 1
        stats["bytes_sent"] += len(body)
        return web.Response(body=body, content_type="application/json")

    async def prepare(request: web.Request) -> web.Response:
        try:
            start_ms, end_ms, step_ms = window(await params(request))
        except ValueError as exc:
            return _bad_data(str(exc))
        began = time.perf_counter()
        sizes = {which: len(answer(which, start_ms, end_ms, step_ms)[0]) for which in (TFLOPS, VRAM)}
        reply = {
            "series": len(fleet.labels),
            "points": len(range(start_ms, end_ms + 1, step_ms)),
            "bytes": sizes,
            "seconds": round(time.perf_counter() - began, 3),
        }
        return web.Response(body=orjson.dumps(reply), content_type="application/json")

    async def get_stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(stats), content_type="application/json")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", QUERY_RANGE_PATH, query_range)
    app.router.add_post("/-/prepare", prepare)
    app.router.add_get("/-/stats", get_stats)
    app.router.add_get("/-/ready", get_stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", required=True)
    parser.add_argument("--port", type=int, required=True)
    opts = parser.parse_args()
    with open(opts.fleet, "rb") as fh:
        doc = orjson.loads(fh.read())
    fleet = Fleet(int(doc.get("seed", 1)), doc["series"])
    web.run_app(make_app(fleet), host="127.0.0.1", port=opts.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
