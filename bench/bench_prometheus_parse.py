"""Parse + merge time of one incremental usage query: 20,000 series × 2 points, both queries.

That is one loop interval for 10,000 workloads × 2 workers.  The two
``query_range`` answers are built in memory in Prometheus' exact JSON shape
(no network); the figure covers orjson parsing, validation, merging by
(namespace, pod, timestamp), sorting and building the :class:`UsageSample` rows.

Run: ``.venv/bin/python bench/bench_prometheus_parse.py [--series N] [--points K] [--repeat R]``.
Not a test: it prints its figures (goal ≤ 0.3 s).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import orjson
from tfsched.autoscale.prometheus import NAMESPACE_LABEL, POD_LABEL, SampleMerger

START = 1_760_000_000.0


def query_range_body(series: int, points: int, scale: float, seed: int) -> bytes:
    """A ``status: success`` matrix answer as Prometheus writes it (values are strings)."""
    rng = random.Random(seed)
    result = []
    for i in range(series):
        values = [[START + 60.0 * k, repr(round(rng.random() * scale, 6))] for k in range(points)]
        result.append({"metric": {NAMESPACE_LABEL: f"team-{i % 50}", POD_LABEL: f"worker-{i}"}, "values": values})
    return orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--points", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    tflops = query_range_body(args.series, args.points, 100.0, 1)
    vram = query_range_body(args.series, args.points, 80 * 2**30, 2)
    timings = []
    rows = 0
    for _ in range(args.repeat):
        began = time.perf_counter()
        merger = SampleMerger()
        merger.add_body(tflops, SampleMerger.TFLOPS, "TFLOPS")
        merger.add_body(vram, SampleMerger.VRAM, "VRAM")
        rows = len(merger.samples())
        timings.append(time.perf_counter() - began)
    size_mb = (len(tflops) + len(vram)) / 1e6
    print(f"{args.series} series × {args.points} points × 2 queries ({size_mb:.1f} MB of JSON) → {rows} samples")
    print(f"parse + merge: median {statistics.median(timings) * 1000:.0f} ms, best {min(timings) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
