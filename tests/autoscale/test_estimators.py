"""Estimators: VPA's estimator_test.go as numbers, and TensorFusion's chains."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tfsched.autoscale.estimators import (
    MAX_RESOURCE_AMOUNT,
    Amounts,
    ConfidenceMultiplier,
    ConstEstimator,
    MarginEstimator,
    MinResourcesEstimator,
    PercentileEstimator,
    amount_from_float,
    build_estimators,
    confidence,
    estimate,
    go_minutes,
)
from tfsched.autoscale.histogram import Histogram, HistogramOptions
from tfsched.autoscale.usage import WorkloadUsage
from tfsched.clustermodel.autoscaling_config import AutoSetResources

# VPA's CPU (cores) and memory options stand in for TFLOPS and VRAM: same code path.
CPU_OPTIONS = HistogramOptions.exponential(1000.0, 0.01, 1.05, 1e-4)
MEMORY_OPTIONS = HistogramOptions.exponential(1e12, 1e7, 1.05, 1e-4)
ANY_TIME = datetime(1970, 1, 1, tzinfo=UTC)
# 3.14 cores in millicores and 3.14e9 bytes (VPA's CPUAmountFromCores / MemoryAmountFromBytes).
BASE = Amounts(amount_from_float(3.14 * 1000.0), amount_from_float(3.14e9))


@dataclass
class Usage:
    tflops: Histogram
    vram: Histogram
    first_sample_ns: int | None = None
    last_sample_ns: int | None = None
    total_samples_count: int = 0


def empty_usage() -> Usage:
    return Usage(Histogram(CPU_OPTIONS), Histogram(MEMORY_OPTIONS))


def test_percentile_estimator() -> None:
    usage = empty_usage()
    for v in (1.0, 2.0, 3.0):
        usage.tflops.add_sample(v, 1.0, ANY_TIME)
    for v in (1e9, 2e9, 3e9):
        usage.vram.add_sample(v, 1.0, ANY_TIME)
    result = PercentileEstimator(0.2, 0.5).estimate(usage)
    # 5% relative error for histogram rounding, as VPA's test allows.
    assert result.tflops / 1000.0 == pytest.approx(1.0, rel=0.05)
    assert result.vram == pytest.approx(2e9, rel=0.05)
    # Exactly: the end of the bucket holding the sample, truncated to milli-units / bytes.
    assert result.tflops == int(CPU_OPTIONS.get_bucket_start(CPU_OPTIONS.find_bucket(1.0) + 1) * 1000.0)
    assert result.vram == int(MEMORY_OPTIONS.get_bucket_start(MEMORY_OPTIONS.find_bucket(2e9) + 1))


def test_confidence_multiplier() -> None:
    usage = WorkloadUsage()
    start = datetime(1970, 1, 1, tzinfo=UTC)
    for i in range(9):
        usage.add_sample("c", start + timedelta(minutes=2 * i), 1.0, None)
    # 9 samples over 16 minutes: confidence = min(16/1440, 9/1440) = 0.00625.
    assert confidence(usage.first_sample_ns, usage.last_sample_ns, usage.total_samples_count, 86400 * 10**9) == 0.00625
    result = ConfidenceMultiplier(0.1, 2.0, ConstEstimator(BASE)).estimate(usage)
    # 3.14 · (1 + 0.1/0.00625)**2 = 907.46
    assert result.tflops / 1000.0 == 907.46
    assert result.vram == 907460000000


def test_confidence_multiplier_no_history() -> None:
    usage = empty_usage()
    upper = ConfidenceMultiplier(1.0, 1.0, ConstEstimator(BASE)).estimate(usage)
    lower = ConfidenceMultiplier(1.0, -1.0, ConstEstimator(BASE)).estimate(usage)
    assert upper.tflops == MAX_RESOURCE_AMOUNT
    assert lower.tflops == 0


def test_zero_times_infinity_is_zero() -> None:
    # Empty history: the percentile is 0 and the upper multiplier infinite; 0 × ∞ must not be NaN.
    usage = empty_usage()
    result = ConfidenceMultiplier(1.0, 1.0, ConstEstimator(Amounts(0, 0))).estimate(usage)
    assert result == Amounts(0, 0)
    assert amount_from_float(math.nan) == 0
    assert amount_from_float(-1.0) == 0
    assert amount_from_float(1e300) == MAX_RESOURCE_AMOUNT


def test_margin_estimator() -> None:
    result = MarginEstimator(0.1, ConstEstimator(BASE)).estimate(empty_usage())
    assert result.tflops / 1000.0 == 3.454
    assert result.vram == 3.454e9


def test_min_resources_estimator() -> None:
    minimum = Amounts(amount_from_float(0.2 * 1000.0), amount_from_float(4e8))
    base = Amounts(amount_from_float(3.14 * 1000.0), amount_from_float(2e7))
    result = MinResourcesEstimator(minimum, ConstEstimator(base)).estimate(empty_usage())
    assert result.tflops / 1000.0 == 3.14
    assert result.vram == 4e8


def test_margin_is_truncated_on_its_own() -> None:
    # 999 · 0.15 = 149.85 → 149, so 999 + 149 = 1148 (not trunc(1148.85) = 1148 by luck: check 7).
    assert MarginEstimator(0.15, ConstEstimator(Amounts(7, 7))).estimate(empty_usage()) == Amounts(8, 8)


def test_go_minutes() -> None:
    assert go_minutes(86400 * 10**9) == 1440.0
    assert go_minutes(90 * 10**9) == 1.5


def test_confidence_uses_the_configured_interval() -> None:
    hour = 3600 * 10**9
    # 120 samples over 2 h with a 1 h interval: min(2/1, 120/60) = 2.
    assert confidence(0, 2 * hour, 120, hour) == 2.0
    assert confidence(None, None, 0, hour) == 0.0


def test_tensorfusion_chains_on_constant_usage() -> None:
    usage = WorkloadUsage()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for minute in range(2 * 1440):
        usage.add_sample("w", start + timedelta(minutes=minute), 10.0, 8 * 2**30)
    config = AutoSetResources()
    result = estimate(config, usage)
    # Every percentile is the end of the bucket holding 10 TFLOPS.
    bucket_end = usage.tflops.options.get_bucket_start(usage.tflops.options.find_bucket(10.0) + 1)
    target = amount_from_float(bucket_end * 1000.0)
    target += int(target * 0.15)
    assert result.target.tflops == target
    conf = min((2 * 1440 - 1) / 1440, 2 * 1440 / 1440)
    assert result.upper_bound.tflops == int(target * (1 + 1 / conf))
    assert result.lower_bound.tflops == int(target * (1 + 0.001 / conf) ** -2)
    assert result.has_tflops_history and result.has_vram_history
    chains = build_estimators(config)
    assert chains.target.estimate(usage) == result.target


def test_no_history_estimates_are_zero() -> None:
    result = estimate(AutoSetResources(), WorkloadUsage())
    assert result.target == Amounts(0, 0)
    assert result.upper_bound == Amounts(0, 0)
    assert not result.has_tflops_history and not result.has_vram_history
