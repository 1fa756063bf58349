"""Autoscaler core benchmark: ingestion rate, full recompute time, memory per workload.

Goals (issue 5): ≥ 5 M samples/s ingested into the histograms of 10,000
workloads, ≤ 100 ms to recompute all 10,000 recommendations, ≤ 4 KB per
workload.  A *sample* is one worker's (time, TFLOPS, VRAM) reading: it updates
the TFLOPS histogram and the worker's VRAM peak window.

Run: ``.venv/bin/python bench/bench_autoscale_core.py [--workloads N] [--samples-per-worker K]``.
Not a test: it prints its figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from tfsched.autoscale.bank import HistogramBank, UsageBank, decide_all, estimate_all
from tfsched.autoscale.recommend import recommend
from tfsched.autoscale.usage import TFLOPS_OPTIONS
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, Resources
from tfsched.clustermodel.times import to_unix_ns

GI = 2**30
START = datetime(2025, 10, 1, tzinfo=UTC)


def synthetic_samples(
    workloads: int, workers_per_workload: int, samples_per_worker: int, seed: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every worker reports once a minute, in time order: (slot, time, tflops, vram) arrays."""
    rng = np.random.default_rng(seed)
    slots_n = workloads * workers_per_workload
    minutes = np.repeat(np.arange(samples_per_worker, dtype=np.int64), slots_n)
    slots = np.tile(np.arange(slots_n, dtype=np.int64), samples_per_worker)
    times = to_unix_ns(START) + minutes * 60 * 10**9 + rng.integers(0, 59 * 10**9, minutes.shape[0])
    # Per-workload scale so the histograms spread over many buckets.
    scale = rng.uniform(1.0, 200.0, workloads)[slots // workers_per_workload]
    tflops = scale * rng.uniform(0.2, 1.0, slots.shape[0])
    vram = scale * 1e8 * rng.uniform(0.5, 1.0, slots.shape[0])
    return slots, times, tflops, vram


def new_bank(workloads: int, workers_per_workload: int) -> UsageBank:
    bank = UsageBank(workloads, workloads * workers_per_workload)
    rows = bank.add_workloads(workloads)
    bank.add_workers(np.repeat(rows, workers_per_workload))
    return bank


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="workers per workload")
    parser.add_argument("--samples-per-worker", type=int, default=150)
    parser.add_argument("--python-recommend", type=int, default=1000, help="workloads timed through recommend()")
    args = parser.parse_args()
    n_workloads, n_workers = args.workloads, args.workers

    # Compile (or load cached) kernels outside the timings.
    warm = new_bank(4, n_workers)
    warm.add_samples(*synthetic_samples(4, n_workers, 3))
    config = AutoScalingConfig.model_validate({"autoSetResources": {"enable": True, "targetResource": "all"}})
    decide_all(
        estimate_all(warm, config.auto_set_resources), np.ones((4, 4), dtype=np.int64), config.auto_set_resources
    )

    slots, times, tflops, vram = synthetic_samples(n_workloads, n_workers, args.samples_per_worker)
    samples = slots.shape[0]

    def ingest() -> None:
        bank = new_bank(n_workloads, n_workers)
        start = time.perf_counter()
        bank.add_samples(slots, times, tflops, vram)
        ingest.elapsed = time.perf_counter() - start  # type: ignore[attr-defined]
        ingest.bank = bank  # type: ignore[attr-defined]

    ingest_times = []
    for _ in range(3):
        ingest()
        ingest_times.append(ingest.elapsed)  # type: ignore[attr-defined]
    bank: UsageBank = ingest.bank  # type: ignore[attr-defined]
    ingest_s = min(ingest_times)

    # Raw histogram updates (one value per sample into one bank), for comparison.
    rows = slots // n_workers
    raw = HistogramBank(TFLOPS_OPTIONS, capacity=n_workloads)
    raw.add_rows(n_workloads)
    raw_s = best_of(3, lambda: raw.add_samples(rows, tflops, 0.1, times))

    # Recompute every workload's estimates and vertical decision.
    current = np.tile(np.array([[50_000, 100_000, 8 * GI, 16 * GI]], dtype=np.int64), (n_workloads, 1))
    asr = config.auto_set_resources

    def recompute() -> None:
        decide_all(estimate_all(bank, asr), current, asr)

    recompute_runs = []
    for _ in range(7):
        start = time.perf_counter()
        recompute()
        recompute_runs.append(time.perf_counter() - start)
    decisions = decide_all(estimate_all(bank, asr), current, asr)

    # The full per-workload path (status dict, messages) through recommend().
    current_model = Resources.model_validate(
        {"requests": {"tflops": "50", "vram": "8Gi"}, "limits": {"tflops": "100", "vram": "16Gi"}}
    )
    now = START + timedelta(minutes=args.samples_per_worker)
    k = min(args.python_recommend, n_workloads)
    start = time.perf_counter()
    for row in range(k):
        recommend(config, bank.summary(row), current_model, now).to_status()
    per_recommend = (time.perf_counter() - start) / k

    per_workload = bank.bytes_per_workload()
    rate = samples / ingest_s
    recompute_ms = statistics.median(recompute_runs) * 1000
    print(f"workloads: {n_workloads}, workers/workload: {n_workers}, samples: {samples:,}")
    print(
        f"ingestion (UsageBank.add_samples, TFLOPS + VRAM peak per sample): {rate / 1e6:.2f} M samples/s "
        f"({ingest_s * 1000:.0f} ms best of 3)  goal >= 5 M/s: {'PASS' if rate >= 5e6 else 'FAIL'}"
    )
    print(f"raw histogram updates (HistogramBank.add_samples): {samples / raw_s / 1e6:.2f} M/s")
    print(
        f"recompute all {n_workloads} recommendations (estimate_all + decide_all): {recompute_ms:.1f} ms median "
        f"(min {min(recompute_runs) * 1000:.1f} ms)  goal <= 100 ms: {'PASS' if recompute_ms <= 100 else 'FAIL'}"
    )
    print(f"  workloads changing: {int(decisions.changed().sum())}")
    print(
        f"full recommend() + to_status() per workload (Python path, {k} timed): {per_recommend * 1e6:.0f} us "
        f"(x{n_workloads} = {per_recommend * n_workloads:.2f} s)"
    )
    print(
        f"memory per workload ({n_workers} workers): {per_workload:.0f} bytes  "
        f"goal <= 4096: {'PASS' if per_workload <= 4096 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
