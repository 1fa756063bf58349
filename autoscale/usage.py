"""Per-workload usage history: what the vertical recommender estimates from.

One :class:`WorkloadUsage` per workload holds two VPA decaying histograms
(half-life 24 h, epsilon 1e-4, buckets growing 5 %):

* **TFLOPS** (first bucket 0.1 TFLOPS, max 10000): every sample is added with
  weight 0.1 at its own time.  Per worker, a sample older than that worker's
  previous TFLOPS sample is dropped; an equal timestamp is accepted (as
  TensorFusion does; VPA requires strictly later).  The first/last sample time
  and the sample count — the inputs of the confidence multiplier — come from
  these samples only.
* **VRAM** (first bucket 1e7 bytes, max 1e12): one peak per worker per 24 h
  window, weight 1.0, recorded at the window's *end* time.  A higher sample in
  the same window replaces the peak (subtract the old peak, add the new one);
  a sample at or past the window end opens the next window (the end moves by
  whole 24 h steps).  Older-than-previous samples are dropped.

Negative, NaN or missing values drop that resource's sample only.  VRAM
samples are truncated to whole bytes (VPA and TensorFusion store bytes as
integers); TFLOPS values are used as given.

One deliberate difference from VPA/TensorFusion: they never replace a peak of
exactly 0 (their ``oldPeak != 0`` test), so a window that starts with an idle
sample loses its real peak; we replace it like any other peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from tfsched.autoscale.histogram import DecayingHistogram, HistogramOptions
from tfsched.clustermodel.times import duration_ns, from_unix_ns, to_unix_ns

EPSILON = 1e-4
BUCKET_GROWTH_RATIO = 1.05
TFLOPS_OPTIONS = HistogramOptions.exponential(10000.0, 0.1, BUCKET_GROWTH_RATIO, EPSILON)
VRAM_OPTIONS = HistogramOptions.exponential(1e12, 1e7, BUCKET_GROWTH_RATIO, EPSILON)
HALF_LIFE = timedelta(hours=24)
VRAM_AGGREGATION_INTERVAL = timedelta(hours=24)
TFLOPS_SAMPLE_WEIGHT = 0.1
VRAM_PEAK_WEIGHT = 1.0


def valid_value(value: float | None) -> bool:
    """A usage value we accept: present, a number, not NaN, not negative."""
    return value is not None and not math.isnan(value) and value >= 0.0


def next_window_end(window_end_ns: int, sample_ns: int, interval_ns: int) -> int:
    """VPA: ``end + Truncate(sample − end, interval) + interval`` for a sample at or past ``end``."""
    return window_end_ns + ((sample_ns - window_end_ns) // interval_ns) * interval_ns + interval_ns


@dataclass
class WorkerUsageState:
    """What we remember per worker: last sample times and the current VRAM window."""

    last_tflops_ns: int | None = None
    last_vram_ns: int | None = None
    window_end_ns: int | None = None
    # The peak recorded for the current window (None before the worker's first VRAM sample).
    vram_peak: float | None = None


class WorkloadUsage:
    """Usage history of one workload, aggregated over its workers."""

    def __init__(
        self,
        *,
        half_life: timedelta = HALF_LIFE,
        vram_aggregation_interval: timedelta = VRAM_AGGREGATION_INTERVAL,
    ) -> None:
        self._tflops = DecayingHistogram(TFLOPS_OPTIONS, half_life)
        self._vram = DecayingHistogram(VRAM_OPTIONS, half_life)
        self._interval_ns = duration_ns(vram_aggregation_interval)
        self.first_sample_ns: int | None = None
        self.last_sample_ns: int | None = None
        self.total_samples_count = 0
        self.workers: dict[str, WorkerUsageState] = {}

    @property
    def tflops(self) -> DecayingHistogram:
        return self._tflops

    @property
    def vram(self) -> DecayingHistogram:
        return self._vram

    @property
    def first_sample_time(self) -> datetime | None:
        return None if self.first_sample_ns is None else from_unix_ns(self.first_sample_ns)

    @property
    def last_sample_time(self) -> datetime | None:
        return None if self.last_sample_ns is None else from_unix_ns(self.last_sample_ns)

    def is_empty(self) -> bool:
        return self._tflops.is_empty() and self._vram.is_empty()

    def add_sample(self, worker: str, time: datetime, tflops: float | None, vram: float | None) -> tuple[bool, bool]:
        """Add one worker's sample; returns whether the TFLOPS and the VRAM parts were accepted."""
        ns = to_unix_ns(time)
        return self.add_tflops_sample_ns(worker, ns, tflops), self.add_vram_sample_ns(worker, ns, vram)

    def add_tflops_sample_ns(self, worker: str, ns: int, tflops: float | None) -> bool:
        """One TFLOPS sample at Unix nanoseconds ``ns``; False when dropped."""
        if not valid_value(tflops):
            return False
        state = self.workers.setdefault(worker, WorkerUsageState())
        if state.last_tflops_ns is not None and ns < state.last_tflops_ns:
            return False
        assert tflops is not None
        self._tflops.add_sample_ns(tflops, TFLOPS_SAMPLE_WEIGHT, ns)
        state.last_tflops_ns = ns
        if self.last_sample_ns is None or ns > self.last_sample_ns:
            self.last_sample_ns = ns
        if self.first_sample_ns is None or ns < self.first_sample_ns:
            self.first_sample_ns = ns
        self.total_samples_count += 1
        return True

    def add_vram_sample_ns(self, worker: str, ns: int, vram: float | None) -> bool:
        """One VRAM sample at Unix nanoseconds ``ns``; False when dropped."""
        if not valid_value(vram):
            return False
        assert vram is not None
        state = self.workers.setdefault(worker, WorkerUsageState())
        if state.last_vram_ns is not None and ns < state.last_vram_ns:
            return False
        value = float(math.floor(vram))
        state.last_vram_ns = ns
        if state.window_end_ns is None:
            state.window_end_ns = ns
        if ns < state.window_end_ns:
            if state.vram_peak is not None and value > state.vram_peak:
                self._vram.subtract_sample_ns(state.vram_peak, VRAM_PEAK_WEIGHT, state.window_end_ns)
                self._vram.add_sample_ns(value, VRAM_PEAK_WEIGHT, state.window_end_ns)
                state.vram_peak = value
        else:
            state.window_end_ns = next_window_end(state.window_end_ns, ns, self._interval_ns)
            self._vram.add_sample_ns(value, VRAM_PEAK_WEIGHT, state.window_end_ns)
            state.vram_peak = value
        return True

    def remove_worker(self, worker: str) -> None:
        """Forget a worker that is gone (its recorded peaks stay in the history)."""
        self.workers.pop(worker, None)
