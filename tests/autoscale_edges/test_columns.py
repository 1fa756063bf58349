"""UsageColumns, and SampleMerger cross-checked against a per-point reference on random answers."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tfsched.autoscale import matrix
from tfsched.autoscale.columns import UsageColumns
from tfsched.autoscale.matrix import SampleMerger

T0 = 1_760_000_000
Row = tuple[str, str, int, float | None, float | None]


def columns(**changes: Any) -> UsageColumns:
    fields: dict[str, Any] = {
        "pods": (("ml", "a"), ("ml", "b")),
        "time_ns": np.array([1, 2, 2], np.int64),
        "pod": np.array([0, 0, 1], np.int32),
        "tflops": np.array([1.5, np.nan, 0.0]),
        "vram": np.array([np.nan, 2.0, 3.0]),
    }
    fields.update(changes)
    return UsageColumns(**fields)


# ---------------------------------------------------------------------------
# UsageColumns
# ---------------------------------------------------------------------------


def test_rows_give_none_for_nan() -> None:
    got = columns()
    assert len(got) == 3
    assert got.rows() == [("ml", "a", 1, 1.5, None), ("ml", "a", 2, None, 2.0), ("ml", "b", 2, 0.0, 3.0)]
    assert all(type(row[2]) is int for row in got.rows())


def test_empty() -> None:
    empty = UsageColumns.empty()
    assert (len(empty), empty.rows(), empty.pods) == (0, [], ())
    assert [a.dtype for a in (empty.time_ns, empty.pod, empty.tflops, empty.vram)] == [
        np.int64,
        np.int32,
        np.float64,
        np.float64,
    ]


def test_equality_compares_contents_with_nan_equal_to_nan() -> None:
    assert columns() == columns()
    assert columns() != columns(vram=np.array([np.nan, 2.0, 4.0]))
    assert columns() != columns(pods=(("ml", "a"), ("ml", "c")))
    assert UsageColumns.empty() == UsageColumns.empty()
    assert columns() != "columns"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pod": np.array([0, 0], np.int32)}, "UsageColumns.pod has shape"),
        ({"tflops": np.zeros((3, 1))}, "UsageColumns.tflops has shape"),
        ({"vram": np.array([1, 2, 3])}, "UsageColumns.vram has dtype"),
        ({"time_ns": np.array([1.0, 2.0, 2.0])}, "UsageColumns.time_ns has dtype"),
    ],
)
def test_inconsistent_columns_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        columns(**changes)


# ---------------------------------------------------------------------------
# SampleMerger against a per-point reference
# ---------------------------------------------------------------------------

MAX_ABS_MS = (2**63 - 1) // 1_000_000  # beyond: time_ns would not fit in int64


class Reference:
    """The merge, one point at a time into dicts: slow, and obviously right."""

    def __init__(self) -> None:
        self.by_time: dict[int, dict[tuple[str, str], list[float | None]]] = {}
        self.skipped_series = 0
        self.skipped_points = 0

    def add(self, result: list[Any], slot: int) -> None:
        for series in result:
            if not isinstance(series, dict) or not isinstance(series.get("metric"), dict):
                self.skipped_series += 1
                continue
            namespace = series["metric"].get("namespace")
            pod = series["metric"].get("pod")
            values = series.get("values")
            if not (isinstance(namespace, str) and isinstance(pod, str) and isinstance(values, list)):
                self.skipped_series += 1
                continue
            for point in values:
                try:
                    stamp, text = point
                    value = float(text)
                    ms = round(float(stamp) * 1000.0)
                except (TypeError, ValueError, OverflowError):
                    self.skipped_points += 1
                    continue
                if math.isnan(value) or math.isinf(value) or value < 0:
                    self.skipped_points += 1
                    continue
                row = self.by_time.setdefault(ms, {}).setdefault((namespace, pod), [None, None])
                old = row[slot]
                row[slot] = value if old is None else max(old, value)

    def result(self) -> tuple[list[Row], int, int]:
        rows: list[Row] = []
        skipped_points = self.skipped_points
        for ms in sorted(self.by_time):
            if abs(ms) > MAX_ABS_MS:
                skipped_points += len(self.by_time[ms])
                continue
            rows.extend((ns, pod, ms * 1_000_000, t, v) for (ns, pod), (t, v) in self.by_time[ms].items())
        return rows, self.skipped_series, skipped_points


# A few pods and timestamps, so series collide on both; stamps at exact binary fractions of a
# second include half milliseconds (T0 + 0.0625 s is 62.5 ms), which round half to even.
namespaces = st.sampled_from(["ml", "other"])
pod_names = st.sampled_from(["a", "b", "c", "d"])
good_stamps = st.one_of(
    st.sampled_from([T0, T0 + 60, T0 + 120, T0 - 60, T0 + 0.0625, T0 + 0.1875, T0 + 0.781, 0]),
    st.integers(-3, 3).map(lambda k: T0 + k * 60.0),
)
bad_stamps = st.sampled_from(
    [
        None,
        "NaN",
        "x",
        str(T0),  # a string stamp parses, like float() takes it
        True,
        1e300,  # past 2262: a dropped (pod, time)
        -1e300,
        1e306,  # milliseconds overflow to infinity: a dropped point
        9_300_000_000,  # just past int64 nanoseconds
        9_223_372_036.854,  # the last millisecond that fits
        float("nan"),
        float("inf"),
        10**400,  # float() overflows
        [1],
    ]
)
good_texts = st.one_of(
    st.sampled_from(["0", "1", "1.5", "2", "1e9", "1073741824", "NaN", "+Inf", "-Inf", "-0", "-0.5"]),
    st.floats(min_value=0, max_value=1e12, allow_nan=False).map(repr),
)
bad_texts = st.sampled_from(["not a number", "", "0x10", " 3 ", "1_0", None, 5, True, 2.5, [1], {"a": 1}])
well_formed_points = st.lists(st.tuples(good_stamps, good_texts).map(list), max_size=8)
points = st.one_of(
    st.tuples(good_stamps, good_texts).map(list),
    st.tuples(st.one_of(good_stamps, bad_stamps), st.one_of(good_texts, bad_texts)).map(list),
    st.sampled_from([[T0], [T0, "1", "extra"], [], "garbage", "12", None, 7, {"a": 1}, {"1": "x", "2": "y"}]),
)
labels = st.fixed_dictionaries({"namespace": namespaces, "pod": pod_names}, optional={"gpu": st.sampled_from("01")})
bad_labels = st.sampled_from([{}, {"namespace": "ml"}, {"pod": "a"}, {"namespace": "ml", "pod": 5}, "x", None])
well_formed_series = st.fixed_dictionaries({"metric": labels, "values": well_formed_points})
series = st.one_of(
    well_formed_series,
    st.fixed_dictionaries({"metric": labels, "values": st.lists(points, max_size=8)}),
    st.fixed_dictionaries(
        {"metric": st.one_of(labels, bad_labels), "values": st.one_of(well_formed_points, st.none())}
    ),
    st.sampled_from(["junk", None, [], {"metric": {"namespace": "ml", "pod": "a"}}, {"values": [[T0, "1"]]}]),
)
answers = st.lists(
    st.tuples(
        st.one_of(st.lists(well_formed_series, max_size=6), st.lists(series, max_size=6)),
        st.sampled_from([SampleMerger.TFLOPS, SampleMerger.VRAM]),
    ),
    max_size=5,
)


def merged(answers: list[tuple[list[Any], int]]) -> tuple[UsageColumns, int, int]:
    merger = SampleMerger()
    for result, slot in answers:
        merger.add_result(result, slot)
    return merger.columns(), merger.skipped_series, merger.skipped_points


def check_invariants(got: UsageColumns) -> None:
    assert got.time_ns.dtype == np.int64 and got.pod.dtype.kind == "i"
    assert got.tflops.dtype == np.float64 and got.vram.dtype == np.float64
    assert np.all(np.diff(got.time_ns) >= 0)
    pairs = set(zip(got.pod.tolist(), got.time_ns.tolist(), strict=True))
    assert len(pairs) == len(got)
    assert sorted(set(got.pod.tolist())) == list(range(len(got.pods)))  # every pod has a row
    assert not np.any(np.isnan(got.tflops) & np.isnan(got.vram))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
def test_merger_matches_the_per_point_reference(answers: list[tuple[list[Any], int]]) -> None:
    reference = Reference()
    for result, slot in answers:
        reference.add(result, slot)
    expected_rows, expected_series, expected_points = reference.result()

    got, skipped_series, skipped_points = merged(answers)
    assert got.rows() == expected_rows
    assert (skipped_series, skipped_points) == (expected_series, expected_points)
    check_invariants(got)

    # The same through the grouping used when times span too wide for one int64 key.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix, "_KEY_LIMIT", 0)
        assert merged(answers) == (got, skipped_series, skipped_points)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(well_formed_series, max_size=6), st.sampled_from([0, 1])), max_size=4))
def test_well_formed_answers_never_go_point_by_point(answers: list[tuple[list[Any], int]]) -> None:
    def refuse(points: list[Any]) -> Any:
        raise AssertionError(f"converted point by point: {points!r}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix, "_floats_point_by_point", refuse)
        merged(answers)


def _body(result: list[Any]) -> bytes:
    """As Prometheus writes it: compact JSON (json, not orjson: big integers are allowed here)."""
    doc = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    body = json.dumps(doc, separators=(",", ":")).encode()
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        assume(False)  # NaN or infinite stamps: not JSON, nothing Prometheus sends
    return body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
# Bracket and comma counts of a well-formed answer, in the wrong places (found by hypothesis).
@example([([{"metric": {"namespace": "ml", "pod": "a"}, "values": [[1_760_000_000], "12", [1760000000, "0"]]}], 0)])
@example([([{"metric": {"namespace": "ml", "pod": "a"}, "values": [[1, "2", "3"], [4]]}], 0)])
def test_reading_the_bytes_matches_the_parsed_answer(answers: list[tuple[list[Any], int]]) -> None:
    """add_body reads points straight from the bytes; it must agree with the
    general path on every answer, odd ones included (they fall back to it)."""
    expected = merged(answers)
    fast = SampleMerger()
    for result, slot in answers:
        fast.add_body(_body(result), slot)
    assert (fast.columns(), fast.skipped_series, fast.skipped_points) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(well_formed_series, max_size=6), st.sampled_from([0, 1])), max_size=4))
def test_well_formed_bytes_never_take_the_general_path(answers: list[tuple[list[Any], int]]) -> None:
    expected = merged(answers)
    fast = SampleMerger()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast, "add_result", lambda *a: pytest.fail(f"general path taken for {a!r}"))
        for result, slot in answers:
            fast.add_body(_body(result), slot)
    assert (fast.columns(), fast.skipped_series, fast.skipped_points) == expected


def test_many_pods_and_times_match_the_reference() -> None:
    # Large enough for the sorts to matter: 300 pods × 50 steps, shuffled series, a second GPU per pod.
    rng = np.random.default_rng(7)
    result = []
    for gpu in ("0", "1"):
        for i in rng.permutation(300).tolist():
            steps = rng.choice(50, size=40, replace=False)
            values = [[T0 + 60 * int(k), repr(float(v))] for k, v in zip(steps, rng.random(40) * 10, strict=True)]
            result.append({"metric": {"namespace": f"ns{i % 7}", "pod": f"p{i}", "gpu": gpu}, "values": values})
    answers = [(result[: len(result) // 2], SampleMerger.VRAM), (result, SampleMerger.TFLOPS)]
    reference = Reference()
    for part, slot in answers:
        reference.add(part, slot)
    got, *counts = merged(answers)
    assert (got.rows(), *counts) == reference.result()
    check_invariants(got)


def test_times_beyond_int64_nanoseconds_are_dropped_and_counted() -> None:
    last = MAX_ABS_MS  # 2262-04-11T23:47:16.854Z, and as far before 1970
    values = [[s / 1000, "1"] for s in (-last - 1, -last, last, last + 1)]
    merger = SampleMerger()
    merger.add_result([{"metric": {"namespace": "n", "pod": "p"}, "values": values}], SampleMerger.TFLOPS)
    assert merger.columns().rows() == [
        ("n", "p", -last * 1_000_000, 1.0, None),
        ("n", "p", last * 1_000_000, 1.0, None),
    ]
    assert merger.skipped_points == 2
