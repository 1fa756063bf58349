"""Parse + merge time and peak allocation of the Prometheus usage merger, new (columns) against old (objects).

Default: 10,000 series × 60 points for each of the two queries (TFLOPS and
VRAM), i.e. an hour of history at 1m for 10,000 pods, 1.2 M points.  The two
``query_range`` answers are built in memory in Prometheus' exact JSON shape
(no network); the figures cover orjson parsing, validation, merging by
(namespace, pod, timestamp) and building the result: :class:`UsageColumns`
for :class:`SampleMerger`, one :class:`UsageSample` per row for
:class:`OldSampleMerger`, the pre-change implementation kept below verbatim
for comparison.  Peak allocation is measured with tracemalloc in separate
runs (it slows allocation down); the answers' bytes are outside it.

Run: ``.venv/bin/python bench/bench_prometheus_parse.py [--series N] [--points K] [--repeat R]``.
Not a test: it prints its figures.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tfsched.autoscale.columns import UsageColumns
from tfsched.autoscale.matrix import NAMESPACE_LABEL, POD_LABEL, SampleMerger, parse_matrix

START = 1_760_000_000.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# ---------------------------------------------------------------------------
# Pre-change reference: UsageSample, _gc_paused and SampleMerger as of
# `git show HEAD:autoscale/prometheus.py` before the columnar rewrite, renamed
# OldSampleMerger.  Kept only so this benchmark can print both side by side.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageSample:
    """One pod's usage at one timestamp; ``None`` where that query had no value."""

    namespace: str
    pod: str
    time: datetime
    tflops: float | None
    vram: float | None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building hundreds of thousands of acyclic objects.

    A parsed answer is ~10 objects per point; with the collector on, its
    generation-2 passes over them triple the parse time.  Nothing here makes
    cycles, and the parse never yields to the event loop.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class OldSampleMerger:
    """Merges TFLOPS and VRAM matrix results into :class:`UsageSample` rows (pre-change reference).

    Pure (no I/O) so benchmarks and recorded-data replays can drive it.
    Timestamps are keyed as whole milliseconds, Prometheus' resolution.  Rows
    are grouped by timestamp as they arrive, so the output needs a sort of the
    few distinct timestamps only; within one timestamp rows keep the order of
    the answers (Prometheus sorts series by labels, so it is deterministic).
    """

    TFLOPS = 0
    VRAM = 1

    def __init__(self) -> None:
        self._by_time: dict[int, dict[tuple[str, str], list[float | None]]] = {}
        self.skipped_series = 0
        self.skipped_points = 0

    def add_body(self, body: bytes, slot: int, what: str = "query") -> None:
        """Parse one query_range answer into ``slot`` (:attr:`TFLOPS` or :attr:`VRAM`)."""
        with _gc_paused():
            self.add_result(parse_matrix(body, what), slot)

    def add_result(self, result: list[Any], slot: int) -> None:
        by_time = self._by_time
        inf = math.inf
        skipped_points = 0
        for series in result:
            try:
                metric = series["metric"]
                namespace = metric[NAMESPACE_LABEL]
                pod = metric[POD_LABEL]
                values = series["values"]
            except (KeyError, TypeError, IndexError):
                self.skipped_series += 1
                continue
            if type(namespace) is not str or type(pod) is not str or type(values) is not list:
                self.skipped_series += 1
                continue
            key = (namespace, pod)
            for point in values:
                try:
                    stamp, text = point
                    value = float(text)
                    ms = round(float(stamp) * 1000.0)
                except (TypeError, ValueError, OverflowError):
                    skipped_points += 1
                    continue
                # Drops NaN (every comparison is false), negatives and infinities.
                if not 0.0 <= value < inf:
                    skipped_points += 1
                    continue
                rows = by_time.get(ms)
                if rows is None:
                    rows = by_time[ms] = {}
                row = rows.get(key)
                if row is None:
                    row = rows[key] = [None, None]
                    row[slot] = value
                else:
                    old = row[slot]
                    if old is None or value > old:
                        row[slot] = value
        self.skipped_points += skipped_points

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._by_time.values())

    def samples(self) -> list[UsageSample]:
        """All merged rows, sorted by time."""
        out: list[UsageSample] = []
        with _gc_paused():
            for ms in sorted(self._by_time):
                rows = self._by_time[ms]
                try:
                    moment = _EPOCH + timedelta(milliseconds=ms)
                except OverflowError:  # a timestamp beyond year 9999: not a real sample
                    self.skipped_points += len(rows)
                    continue
                out.extend(
                    UsageSample(namespace, pod, moment, tflops, vram)
                    for (namespace, pod), (tflops, vram) in rows.items()
                )
        return out


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------


def query_range_body(series: int, points: int, scale: float, seed: int) -> bytes:
    """A ``status: success`` matrix answer as Prometheus writes it (values are strings)."""
    rng = random.Random(seed)
    result = []
    for i in range(series):
        values = [[START + 60.0 * k, repr(round(rng.random() * scale, 6))] for k in range(points)]
        result.append({"metric": {NAMESPACE_LABEL: f"team-{i % 50}", POD_LABEL: f"worker-{i}"}, "values": values})
    return orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}})


def parse_new(tflops: bytes, vram: bytes) -> UsageColumns:
    merger = SampleMerger()
    merger.add_body(tflops, SampleMerger.TFLOPS, "TFLOPS")
    merger.add_body(vram, SampleMerger.VRAM, "VRAM")
    return merger.columns()


def parse_new_gc_paused(tflops: bytes, vram: bytes) -> UsageColumns:
    # Diagnostic only: what the collector costs while orjson builds the answers' lists.
    with _gc_paused():
        return parse_new(tflops, vram)


def parse_old(tflops: bytes, vram: bytes) -> list[UsageSample]:
    merger = OldSampleMerger()
    merger.add_body(tflops, OldSampleMerger.TFLOPS, "TFLOPS")
    merger.add_body(vram, OldSampleMerger.VRAM, "VRAM")
    return merger.samples()


def merge_new(tflops: list[Any], vram: list[Any]) -> UsageColumns:
    merger = SampleMerger()
    merger.add_result(tflops, SampleMerger.TFLOPS)
    merger.add_result(vram, SampleMerger.VRAM)
    return merger.columns()


def merge_old(tflops: list[Any], vram: list[Any]) -> list[UsageSample]:
    merger = OldSampleMerger()
    with _gc_paused():  # as its add_body did
        merger.add_result(tflops, OldSampleMerger.TFLOPS)
        merger.add_result(vram, OldSampleMerger.VRAM)
    return merger.samples()


Run = Callable[[Any, Any], object]  # (TFLOPS answer, VRAM answer) -> result


def measure(run: Run, tflops: Any, vram: Any, repeat: int) -> tuple[float, float, int, int]:
    """(median s, best s, peak bytes, bytes retained by the result) of ``run``; tracemalloc in a run of its own."""
    timings = []
    for _ in range(repeat):
        gc.collect()
        began = time.perf_counter()
        result = run(tflops, vram)
        timings.append(time.perf_counter() - began)
        del result
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = run(tflops, vram)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return statistics.median(timings), min(timings), peak - base, current - base


def same_rows(columns: UsageColumns, samples: list[UsageSample]) -> bool:
    def ns(moment: datetime) -> int:
        return (moment - _EPOCH) // timedelta(microseconds=1) * 1000

    old = [(s.namespace, s.pod, ns(s.time), s.tflops, s.vram) for s in samples]
    return columns.rows() == old


def table(title: str, figures: dict[str, tuple[float, float, int, int]]) -> None:
    mb = 2**20
    print(f"\n{title}")
    print(f"  {'':34} {'median':>8} {'best':>8} {'peak alloc':>11} {'result':>9}")
    for name, (median, best, peak, kept) in figures.items():
        print(f"  {name:34} {median * 1e3:6.0f}ms {best * 1e3:6.0f}ms {peak / mb:9.1f}MB {kept / mb:7.1f}MB")
    new, old = figures["new (UsageColumns)"], figures["old (UsageSample, pre-change)"]
    ratios = old[0] / new[0], old[1] / new[1], old[2] / new[2], old[3] / new[3]
    print(f"  {'old / new':34} {ratios[0]:7.1f}× {ratios[1]:7.1f}× {ratios[2]:10.1f}× {ratios[3]:8.1f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    tflops = query_range_body(args.series, args.points, 100.0, 1)
    vram = query_range_body(args.series, args.points, 80 * 2**30, 2)
    size_mb = (len(tflops) + len(vram)) / 1e6
    columns, samples = parse_new(tflops, vram), parse_old(tflops, vram)
    rows = len(columns)
    assert same_rows(columns, samples), "new and old merger disagree"
    del columns, samples
    print(
        f"{args.series:,} series × {args.points} points × 2 queries ({size_mb:.1f} MB of JSON) → {rows:,} rows,"
        f" identical from both; median and best of {args.repeat} runs"
    )

    table(
        "bytes → result (orjson parse included; GC on, the old merger pauses it itself):",
        {
            "new (UsageColumns)": measure(parse_new, tflops, vram, args.repeat),
            "old (UsageSample, pre-change)": measure(parse_old, tflops, vram, args.repeat),
        },
    )
    parsed = parse_matrix(tflops), parse_matrix(vram)
    table(
        "parsed answers → result (the merger alone; the parsed answers exist before and are not counted):",
        {
            "new (UsageColumns)": measure(merge_new, *parsed, args.repeat),
            "old (UsageSample, pre-change)": measure(merge_old, *parsed, args.repeat),
        },
    )
    del parsed
    median, best, _, _ = measure(parse_new_gc_paused, tflops, vram, args.repeat)
    print("\ndiagnostic, not what the code does: new, bytes → result with the GC paused throughout:", end=" ")
    print(f"median {median * 1e3:.0f}ms, best {best * 1e3:.0f}ms")


if __name__ == "__main__":
    main()
