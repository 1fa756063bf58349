"""Batch banks: identical numbers to the scalar histograms, usage model, estimators and decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfsched.autoscale.bank import NONE_NS, HistogramBank, UsageBank, decide_all, estimate_all
from tfsched.autoscale.estimators import Amounts, ResourceAmounts, estimate
from tfsched.autoscale.histogram import DecayingHistogram
from tfsched.autoscale.usage import TFLOPS_OPTIONS, VRAM_OPTIONS, WorkloadUsage
from tfsched.autoscale.vertical import decide_vertical
from tfsched.clustermodel.autoscaling_config import AutoSetResources
from tfsched.clustermodel.times import to_unix_ns

T0 = to_unix_ns(datetime(2025, 6, 1, 7, 13, tzinfo=UTC))
HOUR_NS = 3600 * 10**9
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_row_equals(bank: HistogramBank, row: int, hist: DecayingHistogram) -> None:
    assert bank.weights[row].tolist() == hist.bucket_weight
    assert float(bank.total[row]) == hist.total_weight
    assert (int(bank.min_bucket[row]), int(bank.max_bucket[row])) == (hist.min_bucket, hist.max_bucket)
    reference = int(bank.reference[row])
    assert (None if reference == NONE_NS else reference) == hist.reference_ns


def test_golden_scenarios_through_the_bank(vpa_golden: dict) -> None:
    for scenario in vpa_golden["scenarios"]:
        options = VRAM_OPTIONS if scenario["vram"] else TFLOPS_OPTIONS
        bank = HistogramBank(options, timedelta(microseconds=scenario["halfLifeNs"] // 1000))
        bank.add_rows(1)
        for s in scenario["samples"]:
            apply = bank.add_samples if s["op"] == "add" else bank.subtract_samples
            apply([0], [s["value"]], [s["weight"]], [s["t"]])
        assert bank.percentiles(scenario["percentiles"], [0])[0].tolist() == [float(v) for v in scenario["values"]]
        assert float(bank.total[0]) == float(scenario["total"])
        assert bank.to_histogram(0).save_to_checkpoint()["bucketWeights"] == scenario["checkpoint"]["bucketWeights"]


values = st.one_of(
    st.floats(min_value=0.0, max_value=2e4, allow_nan=False),
    st.sampled_from(TFLOPS_OPTIONS.bucket_starts()),
    st.just(-1.0),
)
ops = st.lists(
    st.tuples(
        st.integers(0, 2),  # row
        st.booleans(),  # subtract?
        values,
        st.sampled_from([0.0, 0.1, 1.0, 1e-5, 3.7]),
        st.integers(-30 * HOUR_NS, 600 * HOUR_NS),  # time offset: back and forth, past 100 half-lives
    ),
    max_size=80,
)


@SETTINGS
@given(ops=ops, half_life_hours=st.sampled_from([1, 7, 24]))
def test_histogram_bank_equals_decaying_histogram(ops: list, half_life_hours: int) -> None:
    half_life = timedelta(hours=half_life_hours)
    bank = HistogramBank(TFLOPS_OPTIONS, half_life, capacity=1)
    bank.add_rows(3)
    scalars = [DecayingHistogram(TFLOPS_OPTIONS, half_life) for _ in range(3)]
    for row, subtract, value, weight, offset in ops:
        t = T0 + offset
        if subtract:
            bank.subtract_samples([row], [value], [weight], [t])
            scalars[row].subtract_sample_ns(value, weight, t)
        else:
            bank.add_samples([row], [value], [weight], [t])
            scalars[row].add_sample_ns(value, weight, t)
    ps = [0.0, 0.5, 0.9, 0.95, 1.0]
    got = bank.percentiles(ps)
    for row, hist in enumerate(scalars):
        assert_row_equals(bank, row, hist)
        assert got[row].tolist() == [hist.percentile(p) for p in ps]
        assert bool(bank.is_empty([row])[0]) == hist.is_empty()


def test_batch_ingestion_in_one_call_equals_one_by_one() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    rows = rng.integers(0, 50, n)
    values = rng.uniform(0, 300, n)
    times = T0 + np.sort(rng.integers(0, 400 * HOUR_NS, n))
    batch = HistogramBank(TFLOPS_OPTIONS)
    batch.add_rows(50)
    batch.add_samples(rows, values, 0.1, times)
    single = HistogramBank(TFLOPS_OPTIONS)
    single.add_rows(50)
    for i in range(n):
        single.add_samples([rows[i]], [values[i]], [0.1], [times[i]])
    assert np.array_equal(batch.weights, single.weights)
    assert np.array_equal(batch.reference, single.reference)


def test_bank_accepts_datetimes_and_checks_rows() -> None:
    bank = HistogramBank(VRAM_OPTIONS)
    bank.add_rows(1)
    bank.add_samples([0], [2e9], [1.0], [datetime(2025, 1, 1, tzinfo=UTC)])
    assert bank.percentile(0, 0.5) == VRAM_OPTIONS.get_bucket_start(VRAM_OPTIONS.find_bucket(2e9) + 1)
    with pytest.raises(IndexError):
        bank.add_samples([1], [1.0], [1.0], [T0])
    with pytest.raises(ValueError):
        bank.add_samples([0], [1.0], [-1.0], [T0])


def test_load_and_export_rows_round_trip() -> None:
    hist = DecayingHistogram(TFLOPS_OPTIONS, timedelta(hours=24))
    for i in range(20):
        hist.add_sample_ns(float(i), 0.1, T0 + i * HOUR_NS)
    bank = HistogramBank(TFLOPS_OPTIONS)
    bank.add_rows(2)
    bank.load_histogram(1, hist)
    assert_row_equals(bank, 1, hist)
    assert bank.to_histogram(1).save_to_checkpoint() == hist.save_to_checkpoint()
    bank.reset_row(1)
    assert bool(bank.is_empty([1])[0])
    with pytest.raises(ValueError):
        bank.load_histogram(0, DecayingHistogram(VRAM_OPTIONS, timedelta(hours=24)))


def test_rows_grow_and_keep_data() -> None:
    bank = HistogramBank(TFLOPS_OPTIONS, capacity=1)
    bank.add_rows(1)
    bank.add_samples([0], [5.0], [1.0], [T0])
    before = bank.weights[0].copy()
    bank.add_rows(100)
    assert bank.size == 101 and bank.capacity >= 101
    assert np.array_equal(bank.weights[0], before)


def test_memory_per_workload_is_within_four_kilobytes() -> None:
    bank = UsageBank(10_000, 40_000)
    rows = bank.add_workloads(10_000)
    bank.add_workers(np.repeat(rows, 4))
    assert bank.bytes_per_workload() <= 4096
    # Two float64 histograms of 176 buckets dominate.
    assert bank.bytes_per_workload() >= 2 * 176 * 8


usage_ops = st.lists(
    st.tuples(
        st.integers(0, 2),  # workload
        st.integers(0, 2),  # worker
        # Step in time: often none (equal timestamps), whole days (window ends), past 100 half-lives
        # (reference shifts), or back in time.
        st.one_of(
            st.just(0),
            st.sampled_from([-HOUR_NS, 24 * HOUR_NS, 2500 * HOUR_NS]),
            st.integers(-2 * HOUR_NS, 30 * HOUR_NS),
        ),
        st.one_of(st.none(), st.just(-1.0), st.floats(0.0, 500.0)),
        st.one_of(st.none(), st.just(-5.0), st.just(0.0), st.floats(0.0, 8e10)),
    ),
    max_size=120,
)


def replay_both(ops: list) -> tuple[UsageBank, list[WorkloadUsage]]:
    bank = UsageBank(1, 1)
    bank.add_workloads(3)
    scalars = [WorkloadUsage() for _ in range(3)]
    t = T0
    slots, times, tflops, vram = [], [], [], []
    for workload, worker, step, tf, vr in ops:
        t += step
        slots.append(bank.worker_slot(workload, f"w{worker}"))
        times.append(t)
        tflops.append(np.nan if tf is None else tf)
        vram.append(np.nan if vr is None else vr)
        scalars[workload].add_tflops_sample_ns(f"w{worker}", t, tf)
        scalars[workload].add_vram_sample_ns(f"w{worker}", t, vr)
    bank.add_samples(slots, times, tflops, vram)
    return bank, scalars


@SETTINGS
@given(ops=usage_ops)
def test_usage_bank_equals_workload_usage(ops: list) -> None:
    bank, scalars = replay_both(ops)
    for row, usage in enumerate(scalars):
        assert_row_equals(bank.tflops, row, usage.tflops)
        assert_row_equals(bank.vram, row, usage.vram)
        summary = bank.summary(row)
        assert summary.first_sample_ns == usage.first_sample_ns
        assert summary.last_sample_ns == usage.last_sample_ns
        assert summary.total_samples_count == usage.total_samples_count


configs = st.builds(
    AutoSetResources,
    target_resource=st.sampled_from(["", "all", "tflops", "vram"]),
    request_margin_fraction=st.sampled_from([0.0, 0.15, 0.5]),
    confidence_interval=st.sampled_from([timedelta(hours=1), timedelta(hours=24)]),
    max_step_fraction=st.sampled_from([None, 0.1, 0.5, 2.0]),
)
currents = st.lists(
    st.tuples(st.integers(0, 400_000), st.integers(0, 800_000), st.integers(0, 10**11), st.integers(0, 2 * 10**11)),
    min_size=3,
    max_size=3,
)


@SETTINGS
@given(ops=usage_ops, config=configs, current=currents)
def test_batch_estimates_and_decisions_equal_scalar(ops: list, config: AutoSetResources, current: list) -> None:
    bank, scalars = replay_both(ops)
    batch = estimate_all(bank, config)
    decisions = decide_all(batch, np.array(current, dtype=np.int64), config)
    for row, usage in enumerate(scalars):
        expected = estimate(config, usage)
        assert batch.estimates(row) == expected
        assert estimate(config, bank.summary(row)) == expected
        tf_req, tf_lim, v_req, v_lim = current[row]
        amounts = ResourceAmounts(Amounts(tf_req, v_req), Amounts(tf_lim, v_lim))
        result = decide_vertical(config, expected, amounts)
        for col, decision in enumerate(result.decisions):
            assert int(decisions.action[row, col]) == int(decision.action)
            if decision.changes:
                assert int(decisions.new_request[row, col]) == decision.new_request
                assert int(decisions.new_limit[row, col]) == decision.new_limit
        assert bool(decisions.changed()[row]) == bool(result.proposals)


def test_usage_bank_edge_cases_equal_workload_usage() -> None:
    # Hand-picked sequence for one worker: equal timestamps, a sample exactly at the window end,
    # below the current peak, a zero peak replaced, lower and higher samples, a jump past 100 half-lives.
    day = 24 * HOUR_NS
    steps = [0, 0, HOUR_NS, day - HOUR_NS, 0, HOUR_NS, HOUR_NS, day, 2500 * HOUR_NS, 0, -HOUR_NS, day]
    vrams = [0.0, 5e9, 3e9, 2e9, 1e9, 1e9, 1.5e9, 6e9, 4e9, 4e9, 8e9, 1e9]
    ops = [(0, 0, step, 1.0 + i, vram) for i, (step, vram) in enumerate(zip(steps, vrams, strict=True))]
    bank, scalars = replay_both(ops)
    assert_row_equals(bank.tflops, 0, scalars[0].tflops)
    assert_row_equals(bank.vram, 0, scalars[0].vram)
    assert bank.summary(0).total_samples_count == scalars[0].total_samples_count == 11


def test_reset_workload_starts_afresh() -> None:
    ops = [(0, 0, HOUR_NS, 5.0, 2e9), (1, 0, HOUR_NS, 7.0, 3e9), (0, 1, HOUR_NS, 6.0, 1e9)]
    bank, scalars = replay_both(ops)
    bank.reset_workload(0)
    assert bool(bank.tflops.is_empty([0])[0]) and bool(bank.vram.is_empty([0])[0])
    assert bank.summary(0).total_samples_count == 0 and bank.summary(0).first_sample_ns is None
    # The other workload is untouched.
    assert_row_equals(bank.tflops, 1, scalars[1].tflops)
    # A reset worker accepts samples older than its previous ones again.
    slot = bank.worker_slot(0, "w0")
    assert bank.add_samples([slot], [T0], [1.0], [1e9]) == (1, 1)
