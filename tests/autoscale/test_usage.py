"""The usage model: TFLOPS samples, VRAM peaks per worker per window, sample statistics."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from tfsched.autoscale.usage import TFLOPS_SAMPLE_WEIGHT, WorkloadUsage, next_window_end
from tfsched.clustermodel.times import to_unix_ns

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(hours=24)


def test_tflops_samples_weigh_point_one() -> None:
    usage = WorkloadUsage()
    usage.add_sample("w", T0, 5.0, None)
    # The reference moves to the sample time rounded to the half-life (midnight): factor 1.
    assert usage.tflops.total_weight == TFLOPS_SAMPLE_WEIGHT
    assert usage.total_samples_count == 1


def test_equal_timestamps_accepted_older_dropped_per_worker() -> None:
    usage = WorkloadUsage()
    assert usage.add_sample("a", T0 + timedelta(minutes=5), 1.0, None) == (True, False)
    assert usage.add_sample("a", T0 + timedelta(minutes=5), 2.0, None) == (True, False)
    assert usage.add_sample("a", T0 + timedelta(minutes=4), 3.0, None) == (False, False)
    # Another worker has its own clock.
    assert usage.add_sample("b", T0 + timedelta(minutes=1), 3.0, None) == (True, False)
    assert usage.total_samples_count == 3
    assert usage.first_sample_time == T0 + timedelta(minutes=1)
    assert usage.last_sample_time == T0 + timedelta(minutes=5)


@pytest.mark.parametrize("bad", [-1.0, math.nan, None])
def test_negative_nan_and_missing_values_are_dropped(bad: float | None) -> None:
    usage = WorkloadUsage()
    assert usage.add_sample("a", T0, bad, bad) == (False, False)
    assert usage.total_samples_count == 0
    assert usage.is_empty()
    # A bad TFLOPS value does not drop the VRAM part.
    assert usage.add_sample("a", T0, bad, 1e9) == (False, True)


def test_vram_one_peak_per_window_recorded_at_window_end() -> None:
    usage = WorkloadUsage()
    usage.add_sample("a", T0, None, 2e9)
    state = usage.workers["a"]
    assert state.window_end_ns == to_unix_ns(T0 + DAY)
    # Recorded at the window end, which also becomes the decay reference: weight 1.
    assert usage.vram.reference_timestamp == T0 + DAY
    assert usage.vram.total_weight == 1.0
    # Lower sample in the same window: ignored.
    usage.add_sample("a", T0 + timedelta(hours=1), None, 1e9)
    assert usage.vram.total_weight == 1.0
    assert usage.vram.percentile(1.0) == usage.vram.options.get_bucket_start(usage.vram.options.find_bucket(2e9) + 1)
    # Higher sample in the same window replaces the peak: still one peak's weight.
    usage.add_sample("a", T0 + timedelta(hours=2), None, 5e9)
    assert usage.vram.total_weight == pytest.approx(1.0, abs=1e-12)
    assert usage.vram.percentile(0.0) == usage.vram.options.get_bucket_start(usage.vram.options.find_bucket(5e9) + 1)
    # A sample at the window end opens the next window: a second peak.
    usage.add_sample("a", T0 + DAY, None, 1e9)
    assert state.window_end_ns == to_unix_ns(T0 + 2 * DAY)
    # Its end is one half-life after the reference: weight 2.
    assert usage.vram.total_weight == pytest.approx(1.0 + 2.0)


def test_windows_are_per_worker() -> None:
    usage = WorkloadUsage()
    usage.add_sample("a", T0, None, 2e9)
    usage.add_sample("b", T0 + timedelta(hours=1), None, 1e9)
    assert usage.workers["b"].window_end_ns == to_unix_ns(T0 + DAY + timedelta(hours=1))
    # b's peak is in, a's peak untouched.
    assert usage.vram.percentile(0.0) < usage.vram.percentile(1.0)


def test_window_end_moves_by_whole_intervals() -> None:
    interval = 24 * 3600 * 10**9
    end = to_unix_ns(T0)
    assert next_window_end(end, end, interval) == end + interval
    assert next_window_end(end, end + interval + 5, interval) == end + 2 * interval
    assert next_window_end(end, end + 3 * interval, interval) == end + 4 * interval


def test_zero_peak_is_replaced() -> None:
    # VPA keeps a window's first peak when it is exactly 0; we replace it with the real peak.
    usage = WorkloadUsage()
    usage.add_sample("a", T0, None, 0.0)
    usage.add_sample("a", T0 + timedelta(hours=1), None, 3e9)
    assert usage.vram.percentile(0.0) == usage.vram.options.get_bucket_start(usage.vram.options.find_bucket(3e9) + 1)
    assert usage.vram.total_weight == pytest.approx(1.0)


def test_vram_is_truncated_to_whole_bytes() -> None:
    usage = WorkloadUsage()
    usage.add_sample("a", T0, None, 1e7 - 0.5)
    # 9999999.5 → 9999999 bytes: still below the first bucket's end.
    assert usage.vram.min_bucket == 0
    assert usage.workers["a"].vram_peak == 9999999.0


def test_remove_worker_keeps_history() -> None:
    usage = WorkloadUsage()
    usage.add_sample("a", T0, 1.0, 1e9)
    usage.remove_worker("a")
    assert "a" not in usage.workers
    assert not usage.is_empty()
