"""DecayingHistogram: VPA's decaying_histogram_test.go as numbers, and Go-produced scenarios."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tfsched.autoscale.histogram import DecayingHistogram, HistogramOptions, go_round_time_ns
from tfsched.autoscale.usage import TFLOPS_OPTIONS, VRAM_OPTIONS
from tfsched.clustermodel.times import from_unix_ns, to_unix_ns

VALUE_EPSILON = 1e-15
OPTIONS = HistogramOptions.linear(10.0, 1.0, 1e-15)
HOUR = timedelta(hours=1)
START = datetime.fromtimestamp(1234567890, UTC)


def close(expected: float, actual: float) -> bool:
    return abs(expected - actual) <= VALUE_EPSILON * abs(expected)


def test_percentiles_empty_decaying_histogram() -> None:
    h = DecayingHistogram(OPTIONS, HOUR)
    for p in (-0.5, 0.0, 0.5, 1.0, 1.5):
        assert h.percentile(p) == 0.0


def test_simple_decay() -> None:
    h = DecayingHistogram(OPTIONS, HOUR)
    h.add_sample(2, 1000, START)
    # 20 half-lives later the new sample weighs 2**20 / 1000 > 1000 times more.
    h.add_sample(1, 1, START + 20 * HOUR)
    assert close(2, h.percentile(0.999))
    assert close(3, h.percentile(1.0))


def test_longterm_decay() -> None:
    h = DecayingHistogram(OPTIONS, HOUR)
    h.add_sample(2, 1, START)
    # The relative decay factor exceeds 2**100: the reference moves and the old sample vanishes.
    h.add_sample(1, 1, START + 101 * HOUR)
    assert close(2, h.percentile(1.0))


def test_decaying_histogram_percentiles() -> None:
    h = DecayingHistogram(OPTIONS, HOUR)
    timestamp = START
    for i in range(1, 5):
        h.add_sample(float(i), float(i), timestamp)
        timestamp += HOUR
    # weights 1·2^-3, 2·2^-2, 3·2^-1, 4·2^0
    expected = {0.00: 2, 0.02: 2, 0.03: 3, 0.10: 3, 0.11: 4, 0.34: 4, 0.35: 5, 1.00: 5}
    for p, value in expected.items():
        assert close(value, h.percentile(p)), p


def test_no_decay() -> None:
    h = DecayingHistogram(OPTIONS, HOUR)
    for i in range(1, 5):
        h.add_sample(float(i), float(i), START)
    expected = {0.0: 2, 0.2: 3, 0.1: 2, 0.3: 3, 0.4: 4, 0.5: 4, 0.6: 4, 0.7: 5, 0.8: 5, 0.9: 5, 1.0: 5}
    for p, value in expected.items():
        assert close(value, h.percentile(p)), p


def test_decaying_histogram_merge() -> None:
    h1 = DecayingHistogram(OPTIONS, HOUR)
    h1.add_sample(1, 1, START)
    h1.add_sample(2, 1, START + HOUR)
    h2 = DecayingHistogram(OPTIONS, HOUR)
    h2.add_sample(2, 1, START + 2 * HOUR)
    h2.add_sample(3, 1, START + HOUR)
    expected = DecayingHistogram(OPTIONS, HOUR)
    expected.add_sample(2, 1, START + 2 * HOUR)
    expected.add_sample(2, 1, START + HOUR)
    expected.add_sample(3, 1, START + HOUR)
    expected.add_sample(1, 1, START)
    h1.merge(h2)
    assert h1.equals(expected)


def test_merge_aligns_older_reference_to_younger() -> None:
    old = DecayingHistogram(OPTIONS, HOUR)
    old.add_sample(1, 1, START)
    young = DecayingHistogram(OPTIONS, HOUR)
    young.add_sample(5, 1, START + 150 * HOUR)
    old.merge(young)
    assert old.reference_ns == young.reference_ns
    # The old sample decayed by 2**-150 relative to the new one: only the new value remains.
    assert old.percentile(0.0) == 6.0
    with pytest.raises(ValueError):
        old.merge(DecayingHistogram(OPTIONS, 2 * HOUR))


def test_decaying_histogram_save_to_checkpoint() -> None:
    d = DecayingHistogram(OPTIONS, HOUR)
    d.add_sample(2, 1, START + 100 * HOUR)
    assert d.reference_ns is not None
    checkpoint = d.save_to_checkpoint()
    # The reference is the sample time rounded to the hour: 2009-02-18T03:31:30Z → 04:00.
    assert checkpoint["referenceTimestamp"] == "2009-02-18T04:00:00Z"
    assert checkpoint["referenceTimestamp"] == d.reference_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert checkpoint["bucketWeights"] == {"2": 10000}
    # The sample is 28.5 minutes before the reference: weight 2**(-28.5/60).
    assert checkpoint["totalWeight"] == pytest.approx(2.0 ** (-28.5 / 60), rel=1e-15)


def test_decaying_histogram_load_from_checkpoint() -> None:
    timestamp = datetime(2018, 1, 2, 3, 4, 5, tzinfo=UTC)
    d = DecayingHistogram(OPTIONS, HOUR)
    d.load_from_checkpoint(
        {"totalWeight": 6.0, "bucketWeights": {"0": 1}, "referenceTimestamp": "2018-01-02T03:04:05Z"}
    )
    assert not d.is_empty()
    assert d.reference_timestamp == timestamp


def test_unset_reference_is_saved_as_null() -> None:
    d = DecayingHistogram(OPTIONS, HOUR)
    assert d.save_to_checkpoint() == {"referenceTimestamp": None, "bucketWeights": {}, "totalWeight": 0.0}
    d.load_from_checkpoint({"referenceTimestamp": None, "bucketWeights": {}, "totalWeight": 0.0})
    assert d.reference_ns is None


def test_reference_rounds_from_go_zero_time() -> None:
    # Go's Time.Round counts multiples from 0001-01-01, not from 1970: with a 7 h half-life the
    # two differ.  719162 days separate them; 719162·24 mod 7 = 2 hours of phase.
    half_life = timedelta(hours=7)
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    rounded = from_unix_ns(go_round_time_ns(to_unix_ns(moment), 7 * 3600 * 10**9))
    since_go_zero = rounded - datetime(1, 1, 1, tzinfo=UTC)
    assert since_go_zero % half_life == timedelta(0)
    assert (rounded - datetime(1970, 1, 1, tzinfo=UTC)) % half_life != timedelta(0)
    h = DecayingHistogram(OPTIONS, half_life)
    h.add_sample(3, 1, moment)
    assert h.reference_timestamp == rounded


def test_round_time_halves_round_up() -> None:
    hour = 3600 * 10**9
    base = to_unix_ns(datetime(2025, 1, 1, tzinfo=UTC))
    assert go_round_time_ns(base + hour // 2, hour) == base + hour
    assert go_round_time_ns(base + hour // 2 - 1, hour) == base


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError):
        DecayingHistogram(OPTIONS, HOUR).add_sample(1, 1, datetime(2025, 1, 1))


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DecayingHistogram(OPTIONS, timedelta(0))


def test_random_scenarios_equal_go(vpa_golden: dict) -> None:
    for scenario in vpa_golden["scenarios"]:
        options = VRAM_OPTIONS if scenario["vram"] else TFLOPS_OPTIONS
        h = DecayingHistogram(options, timedelta(microseconds=scenario["halfLifeNs"] // 1000))
        for s in scenario["samples"]:
            if s["op"] == "add":
                h.add_sample_ns(s["value"], s["weight"], s["t"])
            else:
                h.subtract_sample_ns(s["value"], s["weight"], s["t"])
        assert [h.percentile(p) for p in scenario["percentiles"]] == [float(v) for v in scenario["values"]]
        assert h.total_weight == float(scenario["total"])
        assert (h.min_bucket, h.max_bucket) == (scenario["min"], scenario["max"])
        checkpoint = h.save_to_checkpoint()
        golden = scenario["checkpoint"]
        assert checkpoint["bucketWeights"] == golden["bucketWeights"]
        assert checkpoint["totalWeight"] == float(golden["totalWeight"])
        assert checkpoint["referenceTimestamp"] == golden["referenceTimestamp"]
