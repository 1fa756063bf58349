"""HistogramOptions: VPA's histogram_options_test.go as numbers, plus Go-produced boundaries."""

from __future__ import annotations

import math

import pytest

from tfsched.autoscale.histogram import HistogramOptions
from tfsched.autoscale.usage import TFLOPS_OPTIONS, VRAM_OPTIONS

EPSILON = 0.001


def test_linear_histogram_options() -> None:
    # VPA TestLinearHistogramOptions
    o = HistogramOptions.linear(5.0, 0.3, EPSILON)
    assert o.epsilon == EPSILON
    assert o.num_buckets == 18
    assert o.get_bucket_start(0) == 0.0
    assert o.get_bucket_start(17) == 5.1
    assert o.find_bucket(-1.0) == 0
    assert o.find_bucket(0.0) == 0
    assert o.find_bucket(1.3) == 4
    assert o.find_bucket(100.0) == 17


def test_exponential_histogram_options() -> None:
    # VPA TestExponentialHistogramOptions
    o = HistogramOptions.exponential(500.0, 40.0, 1.5, EPSILON)
    assert o.epsilon == EPSILON
    assert o.num_buckets == 6
    assert [o.get_bucket_start(b) for b in range(6)] == [0.0, 40.0, 100.0, 190.0, 325.0, 527.5]
    assert o.find_bucket(-1.0) == 0
    assert o.find_bucket(39.99) == 0
    assert o.find_bucket(40.0) == 1
    # 100 is exactly the start of bucket 2: log(2.25)/log(1.5) must come out as 2, not 1.999...
    assert o.find_bucket(100.0) == 2
    assert o.find_bucket(900.0) == 5


def test_tensorfusion_options_have_176_buckets() -> None:
    assert TFLOPS_OPTIONS.num_buckets == 176
    assert VRAM_OPTIONS.num_buckets == 176
    assert TFLOPS_OPTIONS.get_bucket_start(1) == pytest.approx(0.1)
    assert VRAM_OPTIONS.get_bucket_start(1) == pytest.approx(1e7)
    # The last bucket starts at or beyond the max value.
    assert TFLOPS_OPTIONS.get_bucket_start(175) >= 10000.0
    assert TFLOPS_OPTIONS.get_bucket_start(174) < 10000.0


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("tflopsStarts", TFLOPS_OPTIONS),
        ("vramStarts", VRAM_OPTIONS),
        ("cpuStarts", HistogramOptions.exponential(1000.0, 0.01, 1.05, 1e-4)),
    ],
)
def test_bucket_starts_equal_go_bit_for_bit(vpa_golden: dict, name: str, options: HistogramOptions) -> None:
    golden = [float(v) for v in vpa_golden[name]]
    assert options.bucket_starts() == golden
    # C's pow differs from Go's in the last bit for most of these: the port must not use it.
    libm = [
        0.0 if b == 0 else options.first_bucket_size * (math.pow(options.ratio, b) - 1) / (options.ratio - 1)
        for b in range(options.num_buckets)
    ]
    assert libm != golden


def test_find_bucket_at_and_around_every_boundary_equals_go(vpa_golden: dict) -> None:
    options = [TFLOPS_OPTIONS, VRAM_OPTIONS, HistogramOptions.exponential(1000.0, 0.01, 1.05, 1e-4)]
    for o, golden in zip(options, vpa_golden["findBucketsAtStarts"], strict=True):
        ours = []
        for b in range(o.num_buckets):
            start = o.get_bucket_start(b)
            ours += [
                o.find_bucket(start),
                o.find_bucket(math.nextafter(start, 0.0)),
                o.find_bucket(math.nextafter(start, math.inf)),
            ]
        assert ours == golden


def test_out_of_range_values_go_to_first_or_last_bucket() -> None:
    assert TFLOPS_OPTIONS.find_bucket(math.inf) == 175
    assert TFLOPS_OPTIONS.find_bucket(1e30) == 175
    assert TFLOPS_OPTIONS.find_bucket(0.05) == 0
    assert TFLOPS_OPTIONS.find_bucket(math.nan) == 0
    assert HistogramOptions.linear(1.0, 0.1, 1e-3).find_bucket(math.nan) == 0


def test_get_bucket_start_rejects_out_of_range_index() -> None:
    with pytest.raises(IndexError):
        TFLOPS_OPTIONS.get_bucket_start(176)
    with pytest.raises(IndexError):
        HistogramOptions.linear(5.0, 0.3, EPSILON).get_bucket_start(-1)


@pytest.mark.parametrize(
    "args",
    [(0.0, 1.0, 1.5, 1e-3), (10.0, 0.0, 1.5, 1e-3), (10.0, 1.0, 1.0, 1e-3), (10.0, 1.0, 1.5, 0.0)],
)
def test_invalid_exponential_options(args: tuple[float, float, float, float]) -> None:
    with pytest.raises(ValueError):
        HistogramOptions.exponential(*args)


@pytest.mark.parametrize("args", [(0.0, 1.0, 1e-3), (10.0, 0.0, 1e-3), (10.0, 1.0, 0.0)])
def test_invalid_linear_options(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        HistogramOptions.linear(*args)
