"""Histogram: VPA's histogram_test.go as numbers, and Go's float routines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tfsched.autoscale.gomath import go_exp2, go_log, go_pow, go_round
from tfsched.autoscale.histogram import MAX_CHECKPOINT_WEIGHT, CheckpointError, Histogram, HistogramOptions

VALUE_EPSILON = 1e-15
WEIGHT_EPSILON = 1e-15
ANY_TIME = datetime(1, 1, 1, tzinfo=UTC)
OPTIONS = HistogramOptions.linear(10.0, 1.0, WEIGHT_EPSILON)


def close(expected: float, actual: float) -> bool:
    """testify's InEpsilon: relative error within VALUE_EPSILON."""
    return abs(expected - actual) <= VALUE_EPSILON * abs(expected)


def test_percentiles_empty_histogram() -> None:
    h = Histogram(OPTIONS)
    for p in (-0.5, 0.0, 0.5, 1.0, 1.5):
        assert h.percentile(p) == 0.0


def test_percentiles() -> None:
    h = Histogram(OPTIONS)
    for i in range(1, 5):
        h.add_sample(float(i), float(i), ANY_TIME)
    expected = {0.0: 2, 0.1: 2, 0.2: 3, 0.3: 3, 0.4: 4, 0.5: 4, 0.6: 4, 0.7: 5, 0.8: 5, 0.9: 5, 1.0: 5}
    for p, value in expected.items():
        assert close(value, h.percentile(p)), p


def test_percentile_out_of_bounds() -> None:
    h = Histogram(HistogramOptions.linear(1.0, 0.1, WEIGHT_EPSILON))
    h.add_sample(0.1, 0.1, ANY_TIME)
    h.add_sample(0.2, 0.2, ANY_TIME)
    assert close(0.2, h.percentile(-0.1))
    assert close(0.3, h.percentile(1.1))
    # Fill the boundary buckets.
    h.add_sample(0.0, 0.1, ANY_TIME)
    h.add_sample(1.0, 0.2, ANY_TIME)
    assert close(0.1, h.percentile(-0.1))
    assert close(1.0, h.percentile(1.1))


def test_empty_histogram() -> None:
    h = Histogram(HistogramOptions.linear(1.0, 0.1, WEIGHT_EPSILON))
    assert h.is_empty()
    h.add_sample(0.1, WEIGHT_EPSILON * 2.5, ANY_TIME)
    assert not h.is_empty()
    h.subtract_sample(0.1, WEIGHT_EPSILON, ANY_TIME)
    assert not h.is_empty()
    h.subtract_sample(0.1, WEIGHT_EPSILON, ANY_TIME)
    assert h.is_empty()


def test_non_empty_on_epsilon_addition() -> None:
    h = Histogram(HistogramOptions.linear(1.0, 0.1, WEIGHT_EPSILON))
    assert h.is_empty()
    h.add_sample(9.9, WEIGHT_EPSILON * 3, ANY_TIME)
    assert not h.is_empty()
    h.add_sample(0.1, WEIGHT_EPSILON * 0.3, ANY_TIME)
    assert not h.is_empty()
    h.add_sample(999.9, WEIGHT_EPSILON * 0.3, ANY_TIME)
    assert not h.is_empty()


def test_sub_epsilon_sample_does_not_widen_range() -> None:
    h = Histogram(HistogramOptions.linear(1.0, 0.1, 1e-3))
    h.add_sample(0.5, 1.0, ANY_TIME)
    h.add_sample(0.1, 1e-4, ANY_TIME)
    assert (h.min_bucket, h.max_bucket) == (5, 5)
    assert h.total_weight == 1.0001


def test_histogram_merge() -> None:
    h1 = Histogram(OPTIONS)
    h1.add_sample(1, 1, ANY_TIME)
    h1.add_sample(2, 1, ANY_TIME)
    h2 = Histogram(OPTIONS)
    h2.add_sample(2, 1, ANY_TIME)
    h2.add_sample(3, 1, ANY_TIME)
    expected = Histogram(OPTIONS)
    for v in (1, 2, 2, 3):
        expected.add_sample(v, 1, ANY_TIME)
    h1.merge(h2)
    assert h1.equals(expected)
    other = Histogram(HistogramOptions.linear(10.0, 2.0, WEIGHT_EPSILON))
    with pytest.raises(ValueError):
        h1.merge(other)


def test_negative_weight_is_an_error() -> None:
    with pytest.raises(ValueError):
        Histogram(OPTIONS).add_sample(1.0, -1.0, ANY_TIME)
    with pytest.raises(ValueError):
        Histogram(OPTIONS).subtract_sample(1.0, -1.0, ANY_TIME)


def test_subtract_clamps_at_zero() -> None:
    h = Histogram(OPTIONS)
    h.add_sample(3.0, 1.0, ANY_TIME)
    h.subtract_sample(3.0, 5.0, ANY_TIME)
    assert h.bucket_weight[3] == 0.0
    assert h.total_weight == 0.0
    assert h.is_empty()


def test_save_to_checkpoint_empty() -> None:
    s = Histogram(OPTIONS).save_to_checkpoint()
    assert s["totalWeight"] == 0.0
    assert s["bucketWeights"] == {}


def test_save_to_checkpoint() -> None:
    h = Histogram(OPTIONS)
    h.add_sample(1, 1, ANY_TIME)
    s = h.save_to_checkpoint()
    bucket = OPTIONS.find_bucket(1)
    assert s["totalWeight"] == 1.0
    assert s["bucketWeights"] == {str(bucket): MAX_CHECKPOINT_WEIGHT}


def test_save_to_checkpoint_drops_relatively_small_values() -> None:
    h = Histogram(OPTIONS)
    h.add_sample(1.0, 1.0, ANY_TIME)
    h.add_sample(2.0, 100000.0, ANY_TIME)
    assert OPTIONS.find_bucket(1.0) != OPTIONS.find_bucket(2.0)
    s = h.save_to_checkpoint()
    assert s["totalWeight"] == 100001.0
    assert s["bucketWeights"] == {str(OPTIONS.find_bucket(2.0)): MAX_CHECKPOINT_WEIGHT}


def test_save_to_checkpoint_for_multiple_values() -> None:
    h = Histogram(OPTIONS)
    h.add_sample(1.0, 1.0, ANY_TIME)
    h.add_sample(2.0, 10000.0, ANY_TIME)
    h.add_sample(3.0, 50.0, ANY_TIME)
    s = h.save_to_checkpoint()
    assert s["totalWeight"] == 10051.0
    assert s["bucketWeights"] == {"1": 1, "2": 10000, "3": 50}


def test_load_from_checkpoint() -> None:
    h = Histogram(OPTIONS)
    h.load_from_checkpoint({"totalWeight": 6.0, "bucketWeights": {"0": 1, "1": 2}})
    assert h.total_weight == 6.0
    assert h.bucket_weight[0] == 2.0
    assert h.bucket_weight[1] == 4.0
    assert (h.min_bucket, h.max_bucket) == (0, 1)


def test_load_from_checkpoint_accepts_integer_keys_and_adds_to_existing() -> None:
    h = Histogram(OPTIONS)
    h.add_sample(5.0, 1.0, ANY_TIME)
    h.load_from_checkpoint({"totalWeight": 2.0, "bucketWeights": {3: 10000}})
    assert h.bucket_weight[3] == 2.0
    assert h.total_weight == 3.0
    assert (h.min_bucket, h.max_bucket) == (3, 5)


@pytest.mark.parametrize(
    "checkpoint",
    [
        {"totalWeight": 1.0, "bucketWeights": {"-1": 1}},
        {"totalWeight": 1.0, "bucketWeights": {"99": 1}},
        {"totalWeight": -1.0, "bucketWeights": {}},
        {"totalWeight": 1.0, "bucketWeights": {"x": 1}},
        {"totalWeight": 1.0, "bucketWeights": {"1": -5}},
        None,
    ],
)
def test_load_from_checkpoint_errors(checkpoint: dict | None) -> None:
    h = Histogram(OPTIONS)
    with pytest.raises(CheckpointError):
        h.load_from_checkpoint(checkpoint)
    # Nothing was loaded.
    assert h.total_weight == 0.0 and h.is_empty()


def test_checkpoint_round_trip_keeps_percentiles() -> None:
    h = Histogram(OPTIONS)
    for value, weight in ((1, 3.0), (4, 1.0), (7, 0.5)):
        h.add_sample(value, weight, ANY_TIME)
    restored = Histogram(OPTIONS)
    restored.load_from_checkpoint(h.save_to_checkpoint())
    for p in (0.1, 0.5, 0.9, 0.99):
        assert restored.percentile(p) == h.percentile(p)
    assert restored.total_weight == h.total_weight


def test_go_math_equals_go(vpa_golden: dict) -> None:
    assert all(go_log(x) == float(y) for x, y in vpa_golden["log"])
    assert all(go_pow(b, n) == float(y) for b, n, y in vpa_golden["pow"])
    assert all(go_exp2(x) == float(y) for x, y in vpa_golden["exp2"])


def test_go_pow_special_cases() -> None:
    assert go_pow(2.0, 0.0) == 1.0
    assert go_pow(1.0, 5.0) == 1.0
    assert go_pow(3.0, 1.0) == 3.0
    assert go_pow(0.0, -1.0) == float("inf")
    assert go_pow(float("inf"), -2.0) == 0.0
    assert go_pow(float("inf"), 1.0) == float("inf")
    assert go_pow(2.0, -2.0) == 0.25
    with pytest.raises(ValueError):
        go_pow(2.0, 0.5)


def test_go_round_is_floor_half_up() -> None:
    assert [go_round(x) for x in (0.5, 1.5, -0.5, -1.5, 2.4999)] == [1, 2, 0, -1, 2]
