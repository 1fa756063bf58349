"""PrometheusSource against canned query_range answers served on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import web

from tfsched.autoscale import matrix as matrix_module
from tfsched.autoscale.matrix import SampleMerger
from tfsched.autoscale.ports import (
    REASON_BAD_RESPONSE,
    REASON_ERROR,
    REASON_TIMEOUT,
    REASON_UNREACHABLE,
    MetricsUnavailable,
)
from tfsched.autoscale.prometheus import (
    DEFAULT_TFLOPS_QUERY,
    DEFAULT_VRAM_QUERY,
    MAX_STEPS_PER_QUERY,
    MetricsConfig,
    PrometheusSource,
    split_range,
)
from tfsched.clustermodel.times import parse_duration
from tfsched.devcluster.processes import free_port

T0 = 1_760_000_000  # 2025-10-09T08:53:20Z
GI = 2**30


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def ns(seconds: int) -> int:
    """Whole Unix seconds as the Unix nanoseconds of ``UsageColumns.time_ns``."""
    return seconds * 1_000_000_000


def matrix(*series: tuple[dict[str, str], list[list[Any]]]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": m, "values": v} for m, v in series]},
    }


def pod(namespace: str, name: str) -> dict[str, str]:
    return {"namespace": namespace, "pod": name}


Answer = Callable[[dict[str, str]], Awaitable[web.Response] | web.Response]


@dataclass
class FakePrometheus:
    """Answers query_range by query text; records every request's form."""

    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)

    def json(self, query: str, doc: Any, status: int = 200) -> None:
        body = orjson.dumps(doc)
        self.answers[query] = lambda form: web.Response(body=body, status=status, content_type="application/json")

    async def handle(self, request: web.Request) -> web.Response:
        assert request.method == "POST"
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.requests.append(form)
        answer = self.answers.get(form["query"])
        if answer is None:
            return web.json_response(matrix())
        result = answer(form)
        return await result if asyncio.iscoroutine(result) else result  # type: ignore[return-value]


@pytest.fixture
async def fake(aiohttp_server: Any) -> Any:
    prom = FakePrometheus()
    app = web.Application()
    app.router.add_post("/api/v1/query_range", prom.handle)
    server = await aiohttp_server(app)
    prom.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return prom


@pytest.fixture
async def source(fake: Any) -> Any:
    src = PrometheusSource(MetricsConfig(prometheusURL=fake.url, step="60s", timeout="2s"))
    yield src
    await src.close()


# ---------------------------------------------------------------------------
# Parsing and merging
# ---------------------------------------------------------------------------


async def test_merges_tflops_and_vram_by_pod_and_timestamp(fake: Any, source: PrometheusSource) -> None:
    fake.json(
        DEFAULT_TFLOPS_QUERY,
        matrix(
            (pod("ml", "a"), [[T0, "1.5"], [T0 + 60, "2"]]),
            (pod("ml", "b"), [[T0 + 60, "0"]]),
        ),
    )
    fake.json(
        DEFAULT_VRAM_QUERY,
        matrix(
            (pod("ml", "a"), [[T0, "1073741824"]]),
            (pod("other", "c"), [[T0 + 60, "5e8"]]),
        ),
    )
    got = await source.samples(at(T0), at(T0 + 60))
    assert got.rows() == [
        ("ml", "a", ns(T0), 1.5, float(GI)),
        ("ml", "a", ns(T0 + 60), 2.0, None),
        ("ml", "b", ns(T0 + 60), 0.0, None),
        ("other", "c", ns(T0 + 60), None, 5e8),
    ]
    assert got.pods == (("ml", "a"), ("ml", "b"), ("other", "c"))
    # Unix time, so UTC: the first row is at(T0).
    assert got.time_ns.dtype == np.int64 and at(int(got.time_ns[0]) / 1e9) == at(T0)


async def test_sends_both_queries_with_the_range_and_step(fake: Any, source: PrometheusSource) -> None:
    await source.samples(at(T0), at(T0 + 300.25))
    assert sorted(r["query"] for r in fake.requests) == sorted([DEFAULT_TFLOPS_QUERY, DEFAULT_VRAM_QUERY])
    for form in fake.requests:
        assert form["start"] == f"{T0}.000"
        assert form["end"] == f"{T0 + 300}.250"
        assert form["step"] == "60.000"
        assert form["timeout"] == "2.000"


async def test_custom_queries_and_a_path_prefix(aiohttp_server: Any) -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(str((await request.post())["query"]))
        return web.json_response(matrix((pod("n", "p"), [[T0, "3"]])))

    app = web.Application()
    app.router.add_post("/prom/api/v1/query_range", handle)
    server = await aiohttp_server(app)
    config = MetricsConfig.model_validate(
        {"prometheusURL": str(server.make_url("/prom/")), "tflopsQuery": "my_tflops", "vramQuery": "my_vram"}
    )
    async with PrometheusSource(config) as src:
        got = await src.samples(at(T0), at(T0))
    assert sorted(seen) == ["my_tflops", "my_vram"]
    assert got.rows() == [("n", "p", ns(T0), 3.0, 3.0)]


async def test_millisecond_timestamps_survive(fake: Any, source: PrometheusSource) -> None:
    fake.json(DEFAULT_TFLOPS_QUERY, matrix((pod("n", "p"), [[T0 + 0.781, "1"]])))
    fake.json(DEFAULT_VRAM_QUERY, matrix((pod("n", "p"), [[T0 + 0.781, "2"]])))
    (sample,) = (await source.samples(at(T0), at(T0 + 1))).rows()
    moment = datetime(2025, 10, 9, 8, 53, 20, 781000, tzinfo=UTC)
    assert sample[2] == 1_760_000_000_781_000_000 == (moment - at(0)) // timedelta(microseconds=1) * 1000
    assert (sample[3], sample[4]) == (1.0, 2.0)


async def test_nan_inf_negative_and_malformed_points_are_dropped(fake: Any, source: PrometheusSource) -> None:
    fake.json(
        DEFAULT_TFLOPS_QUERY,
        matrix(
            (
                pod("n", "p"),
                [
                    [T0, "NaN"],
                    [T0 + 60, "+Inf"],
                    [T0 + 120, "-Inf"],
                    [T0 + 180, "-0.5"],
                    [T0 + 240, "not a number"],
                    [T0 + 300, None],
                    [T0 + 360],
                    "garbage",
                    [T0 + 420, "4", "extra"],
                    ["NaN", "4"],
                    [1e300, "4"],
                    [T0 + 480, "7"],
                ],
            ),
        ),
    )
    fake.json(DEFAULT_VRAM_QUERY, matrix((pod("n", "p"), [[T0, "100"], [T0 + 60, "NaN"]])))
    got = await source.samples(at(T0), at(T0 + 480))
    assert got.rows() == [
        ("n", "p", ns(T0), None, 100.0),
        ("n", "p", ns(T0 + 480), 7.0, None),
    ]


async def test_series_without_pod_labels_are_skipped_not_fatal(fake: Any, source: PrometheusSource) -> None:
    doc = matrix(
        ({"namespace": "n"}, [[T0, "1"]]),
        ({"pod": "p"}, [[T0, "1"]]),
        ({"namespace": "n", "pod": 5}, [[T0, "1"]]),  # type: ignore[dict-item]
        (pod("n", "ok"), [[T0, "2"]]),
    )
    doc["data"]["result"].extend([{"metric": pod("n", "x")}, {"values": [[T0, "1"]]}, "junk", None])
    fake.json(DEFAULT_TFLOPS_QUERY, doc)
    got = await source.samples(at(T0), at(T0))
    assert got.rows() == [("n", "ok", ns(T0), 2.0, None)]
    assert got.pods == (("n", "ok"),)


async def test_missing_series_give_none_and_empty_answers_give_nothing(fake: Any, source: PrometheusSource) -> None:
    nothing = await source.samples(at(T0), at(T0 + 600))
    assert (nothing.rows(), nothing.pods, len(nothing)) == ([], (), 0)
    fake.json(DEFAULT_VRAM_QUERY, matrix((pod("n", "p"), [[T0, "9"]])))
    assert (await source.samples(at(T0), at(T0 + 600))).rows() == [("n", "p", ns(T0), None, 9.0)]


async def test_several_series_for_one_pod_keep_the_highest(fake: Any, source: PrometheusSource) -> None:
    fake.json(
        DEFAULT_TFLOPS_QUERY,
        matrix(
            ({"namespace": "n", "pod": "p", "gpu": "0"}, [[T0, "5"], [T0 + 60, "1"]]),
            ({"namespace": "n", "pod": "p", "gpu": "1"}, [[T0, "3"], [T0 + 60, "NaN"]]),
            ({"namespace": "n", "pod": "p", "gpu": "2"}, [[T0, "4"], [T0 + 60, "0.5"]]),
        ),
    )
    got = await source.samples(at(T0), at(T0 + 60))
    assert [(row[2], row[3]) for row in got.rows()] == [(ns(T0), 5.0), (ns(T0 + 60), 1.0)]


def test_merger_counts_what_it_skipped() -> None:
    merger = SampleMerger()
    merger.add_result(
        [
            {"metric": pod("n", "p"), "values": [[T0, "1"], [T0, "NaN"], "x"]},
            {"metric": {}, "values": []},
        ],
        SampleMerger.TFLOPS,
    )
    assert (merger.skipped_series, merger.skipped_points, len(merger)) == (1, 2, 1)


def test_merger_output_is_sorted_by_time() -> None:
    merger = SampleMerger()
    merger.add_result(
        [
            {"metric": pod("n", "b"), "values": [[T0 + 120, "1"], [T0, "1"]]},
            {"metric": pod("n", "a"), "values": [[T0 + 60, "1"]]},
        ],
        SampleMerger.TFLOPS,
    )
    merger.add_result([{"metric": pod("n", "c"), "values": [[T0 - 60, "1"]]}], SampleMerger.VRAM)
    assert [(row[1], row[2]) for row in merger.columns().rows()] == [
        ("c", ns(T0 - 60)),
        ("b", ns(T0)),
        ("a", ns(T0 + 60)),
        ("b", ns(T0 + 120)),
    ]


def test_merger_counts_every_unusable_point_once() -> None:
    merger = SampleMerger()
    merger.add_result(
        [
            {
                "metric": pod("n", "p"),
                "values": [
                    [T0, "NaN"],
                    [T0 + 60, "+Inf"],
                    [T0 + 120, "-Inf"],
                    [T0 + 180, "-0.5"],
                    [T0 + 240, "not a number"],
                    [T0 + 300, None],
                    [T0 + 360],
                    "garbage",
                    [T0 + 420, "4", "extra"],
                    ["NaN", "4"],
                    [1e306, "4"],  # milliseconds overflow to infinity: an unusable point
                    [1e300, "4"],  # a finite time past 2262: one dropped (pod, time) ...
                    [T0 + 480, "7"],
                ],
            },
            {"metric": pod("n", "p"), "values": [[1e300, "5"]]},  # ... however many points it has
        ],
        SampleMerger.TFLOPS,
    )
    merger.add_result([{"metric": pod("n", "p"), "values": [[T0, "100"], [1e300, "1"]]}], SampleMerger.VRAM)
    assert merger.columns().rows() == [("n", "p", ns(T0), None, 100.0), ("n", "p", ns(T0 + 480), 7.0, None)]
    assert (merger.skipped_series, merger.skipped_points, len(merger)) == (0, 12, 2)
    merger.columns()
    assert merger.skipped_points == 12  # counted once, not per call


def test_merger_ties_keep_answer_order_across_queries() -> None:
    merger = SampleMerger()
    merger.add_result(
        [
            {"metric": pod("n", "a"), "values": [[T0, "1"]]},
            {"metric": pod("n", "b"), "values": [[T0, "2"], [T0 + 60, "2"]]},
            {"metric": pod("n", "idle"), "values": [[T0, "NaN"]]},  # no usable point: not in pods
        ],
        SampleMerger.TFLOPS,
    )
    # a shows up at T0 + 60 only in the VRAM answer, after b: it comes after b there.
    merger.add_result(
        [{"metric": pod("n", "c"), "values": [[T0, "3"]]}, {"metric": pod("n", "a"), "values": [[T0 + 60, "4"]]}],
        SampleMerger.VRAM,
    )
    got = merger.columns()
    assert got.rows() == [
        ("n", "a", ns(T0), 1.0, None),
        ("n", "b", ns(T0), 2.0, None),
        ("n", "c", ns(T0), None, 3.0),
        ("n", "b", ns(T0 + 60), 2.0, None),
        ("n", "a", ns(T0 + 60), None, 4.0),
    ]
    assert got.pods == (("n", "a"), ("n", "b"), ("n", "c"))
    assert got.pod.tolist() == [0, 1, 2, 1, 0]


def test_merger_output_is_cached_until_the_next_answer() -> None:
    merger = SampleMerger()
    assert len(merger.columns()) == 0
    merger.add_result([{"metric": pod("n", "p"), "values": [[T0, "1"]]}], SampleMerger.TFLOPS)
    first = merger.columns()
    assert merger.columns() is first and len(first) == 1
    merger.add_result([{"metric": pod("n", "p"), "values": [[T0, "2"]]}], SampleMerger.VRAM)
    assert merger.columns().rows() == [("n", "p", ns(T0), 1.0, 2.0)]
    assert first.rows() == [("n", "p", ns(T0), 1.0, None)]


def test_merger_refuses_an_unknown_slot() -> None:
    with pytest.raises(ValueError, match="slot"):
        SampleMerger().add_result([], 2)


def test_only_a_malformed_series_is_converted_point_by_point(monkeypatch: pytest.MonkeyPatch) -> None:
    slow: list[list[Any]] = []
    point_by_point = matrix_module._floats_point_by_point

    def spy(points: list[Any]) -> Any:
        slow.append(points)
        return point_by_point(points)

    monkeypatch.setattr(matrix_module, "_floats_point_by_point", spy)
    values = [[T0, "1"], [T0 + 60, "NaN"], [T0 + 120, "+Inf"]]  # unusable values, but well formed
    good = [{"metric": pod("n", f"p{i}"), "values": values} for i in range(3)]
    merger = SampleMerger()
    merger.add_result(good, SampleMerger.TFLOPS)
    assert slow == []
    bad = {"metric": pod("n", "bad"), "values": [[T0, "1"], [T0 + 60, "x"]]}
    merger.add_result([*good, bad], SampleMerger.VRAM)
    assert slow == [bad["values"]]
    assert len(merger) == 4 and merger.skipped_points == 2 * 3 * 2 + 1


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


async def unavailable(source: PrometheusSource) -> MetricsUnavailable:
    with pytest.raises(MetricsUnavailable) as info:
        await source.samples(at(T0), at(T0 + 60))
    return info.value


async def test_status_error_in_a_200_answer(fake: Any, source: PrometheusSource) -> None:
    fake.json(
        DEFAULT_VRAM_QUERY,
        {"status": "error", "errorType": "execution", "error": "query processing would load too many samples"},
    )
    error = await unavailable(source)
    assert error.reason == REASON_ERROR
    assert str(error) == (
        "Prometheus reported an error for the VRAM query: execution: query processing would load too many samples"
    )


async def test_http_400_names_status_and_prometheus_error(fake: Any, source: PrometheusSource) -> None:
    fake.json(
        DEFAULT_TFLOPS_QUERY,
        {"status": "error", "errorType": "bad_data", "error": '1:5: parse error: unexpected "}"'},
        status=400,
    )
    error = await unavailable(source)
    assert error.reason == REASON_ERROR
    assert str(error) == (
        f'Prometheus at {fake.url} answered the TFLOPS query with HTTP 400: bad_data: 1:5: parse error: unexpected "}}"'
    )


async def test_http_503_with_a_plain_text_body(fake: Any, source: PrometheusSource) -> None:
    fake.answers[DEFAULT_TFLOPS_QUERY] = lambda form: web.Response(status=503, text="Service Unavailable " * 50)
    error = await unavailable(source)
    assert "HTTP 503: Service Unavailable" in str(error)
    assert len(str(error)) < 500  # the body is clipped


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{truncated", "Prometheus returned invalid JSON for the TFLOPS query"),
        (b"[]", "Prometheus returned a non-object for the TFLOPS query"),
        (b'{"status": "weird"}', "with status 'weird', expected 'success'"),
        (b'{"status": "success"}', "has no data object"),
        (b'{"status": "success", "data": {"resultType": "vector", "result": []}}', "resultType 'vector'"),
        (b'{"status": "success", "data": {"resultType": "matrix", "result": {}}}', "has no result list"),
    ],
)
async def test_bad_bodies(fake: Any, source: PrometheusSource, body: bytes, message: str) -> None:
    fake.answers[DEFAULT_TFLOPS_QUERY] = lambda form: web.Response(body=body, content_type="application/json")
    error = await unavailable(source)
    assert error.reason == REASON_BAD_RESPONSE
    assert message in str(error)


async def test_connection_refused_says_so() -> None:
    port = free_port()  # nothing listens there
    async with PrometheusSource(MetricsConfig(prometheusURL=f"http://127.0.0.1:{port}")) as src:
        error = await unavailable(src)
    assert error.reason == REASON_UNREACHABLE
    assert str(error) == f"cannot connect to Prometheus at http://127.0.0.1:{port}: Connection refused"


async def test_timeout_says_so(fake: Any) -> None:
    async def slow(form: dict[str, str]) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response(matrix())

    fake.answers[DEFAULT_TFLOPS_QUERY] = slow
    async with PrometheusSource(MetricsConfig(prometheusURL=fake.url, timeout="200ms")) as src:
        began = asyncio.get_running_loop().time()
        error = await unavailable(src)
        assert asyncio.get_running_loop().time() - began < 1.5
    assert error.reason == REASON_TIMEOUT
    assert str(error) == f"the TFLOPS query to Prometheus at {fake.url} timed out after 0.2s"


async def test_bad_arguments_raise_value_error(source: PrometheusSource) -> None:
    with pytest.raises(ValueError, match="start must be a timezone-aware datetime"):
        await source.samples(datetime(2025, 1, 1), at(T0))
    with pytest.raises(ValueError, match="end must be a timezone-aware datetime"):
        await source.samples(at(T0), "now")  # type: ignore[arg-type]


async def test_end_before_start_asks_nothing(fake: Any, source: PrometheusSource) -> None:
    assert (await source.samples(at(T0 + 60), at(T0))).rows() == []
    assert fake.requests == []


async def test_a_given_session_is_left_open(fake: Any) -> None:
    async with aiohttp.ClientSession() as session:
        src = PrometheusSource(MetricsConfig(prometheusURL=fake.url), session)
        await src.samples(at(T0), at(T0))
        await src.close()
        assert not session.closed
    with pytest.raises(MetricsUnavailable, match="session given to PrometheusSource is closed"):
        await src.samples(at(T0), at(T0))


# ---------------------------------------------------------------------------
# Long ranges
# ---------------------------------------------------------------------------


def test_split_range_keeps_each_query_under_the_point_limit() -> None:
    assert split_range(0, 10_000_000, 1000) == [(0, 10_000_000)]  # exactly 10,000 steps: one query
    assert split_range(0, 10_001_000, 1000) == [(0, 10_000_000), (10_001_000, 10_001_000)]
    assert split_range(5, 5, 1000) == [(5, 5)]
    assert split_range(10, 5, 1000) == []
    chunks = split_range(0, 7 * 86_400_000, 60_000)  # a week at 1m: 10,080 steps
    assert chunks == [(0, 600_000_000), (600_060_000, 604_800_000)]


async def test_long_ranges_are_split_on_the_same_grid(fake: Any) -> None:
    def echo(form: dict[str, str]) -> web.Response:
        # One point at each end of the asked range, like a real evaluation grid would have.
        start, end = float(form["start"]), float(form["end"])
        return web.json_response(matrix((pod("n", "p"), [[start, "1"], [end, "2"]])))

    fake.answers[DEFAULT_TFLOPS_QUERY] = echo
    async with PrometheusSource(MetricsConfig(prometheusURL=fake.url, step="1s")) as src:
        got = await src.samples(at(T0), at(T0 + 25_000))

    tflops_forms = [r for r in fake.requests if r["query"] == DEFAULT_TFLOPS_QUERY]
    assert [(r["start"], r["end"]) for r in tflops_forms] == [
        (f"{T0}.000", f"{T0 + 10_000}.000"),
        (f"{T0 + 10_001}.000", f"{T0 + 20_001}.000"),
        (f"{T0 + 20_002}.000", f"{T0 + 25_000}.000"),
    ]
    for form in tflops_forms:
        assert (float(form["end"]) - float(form["start"])) / float(form["step"]) <= MAX_STEPS_PER_QUERY
    assert len([r for r in fake.requests if r["query"] == DEFAULT_VRAM_QUERY]) == 3
    times = got.time_ns.tolist()
    assert times == sorted(times)
    assert times == [ns(T0 + t) for t in (0, 10_000, 10_001, 20_001, 20_002, 25_000)]


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def test_config_defaults_round_trip_in_camel_case() -> None:
    config = MetricsConfig()
    assert config.model_dump(by_alias=True) == {
        "prometheusURL": "http://127.0.0.1:9090",
        "tflopsQuery": "avg by (namespace, pod) (tensor_fusion_worker_compute_tflops)",
        "vramQuery": "max by (namespace, pod) (tensor_fusion_worker_memory_bytes)",
        "step": "1m",
        "historyLength": "168h",
        "timeout": "10s",
    }
    assert MetricsConfig.model_validate(config.model_dump(by_alias=True)) == config


def test_config_accepts_go_durations_days_and_seconds() -> None:
    config = MetricsConfig.model_validate(
        {"prometheusURL": "https://prom.example:443/", "step": 30, "historyLength": "1w2d12h", "timeout": "1.5"}
    )
    assert config.prometheus_url == "https://prom.example:443"
    assert config.step == timedelta(seconds=30)
    assert config.history_length == timedelta(days=9, hours=12)
    assert config.timeout == timedelta(seconds=1.5)


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"prometheusUrl": "http://x"}, "prometheusUrl"),  # wrong case is an unknown key
        ({"prometheusURL": "localhost:9090"}, "prometheusURL"),
        ({"prometheusURL": "ftp://x"}, "prometheusURL"),
        ({"tflopsQuery": "  "}, "tflopsQuery"),
        ({"step": "0s"}, "step"),
        ({"step": "-1m"}, "step"),
        ({"step": True}, "step"),
        ({"historyLength": "7 days"}, "historyLength"),
        ({"timeout": "inf"}, "timeout"),
        ({"timeout": None}, "timeout"),
    ],
)
def test_config_errors_name_the_field(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(ValueError) as info:
        MetricsConfig.model_validate(doc)
    assert where in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60s", timedelta(seconds=60)),
        ("1h30m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(hours=36)),
        ("500ms", timedelta(milliseconds=500)),
        ("15", timedelta(seconds=15)),
        (2.5, timedelta(seconds=2.5)),
    ],
)
def test_parse_duration(text: Any, expected: timedelta) -> None:
    assert parse_duration(text) == expected


class KeepAliveServer:
    """A bare HTTP/1.1 server on a thread whose keep-alive connections the test can cut."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(self.body)}\r\n\r\n".encode()
                    + self.body
                )
        except OSError:
            return

    def cut_connections(self) -> None:
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.connections.clear()

    def close(self) -> None:
        self.cut_connections()
        self.listener.close()


async def test_a_pooled_connection_the_server_closed_is_retried_once_on_a_fresh_one() -> None:
    server = KeepAliveServer(orjson.dumps(matrix((pod("n", "p"), [[T0, "1"]]))))
    try:
        async with PrometheusSource(MetricsConfig(prometheusURL=f"http://127.0.0.1:{server.port}")) as src:
            assert len(await src.samples(at(T0), at(T0))) == 1
            opened = server.accepted
            # Like a Prometheus restart between two intervals: the client still holds the old connections.
            server.cut_connections()
            assert len(await src.samples(at(T0), at(T0))) == 1
            assert server.accepted > opened
    finally:
        server.close()
