"""Per-pod GPU usage history from Prometheus (an edge: this module does HTTP I/O).

Two range queries run per call, one for TFLOPS and one for VRAM, over
``/api/v1/query_range``.  Their defaults suit a vGPU exporter that reports one
gauge per (namespace, pod, GPU):

* TFLOPS: ``avg by (namespace, pod) (tensor_fusion_worker_compute_tflops)`` —
  the per-GPU average, as requests are per GPU;
* VRAM: ``max by (namespace, pod) (tensor_fusion_worker_memory_bytes)`` — the
  busiest GPU, as every GPU of the pod must hold its VRAM.

Results are merged into one :class:`UsageSample` per (namespace, pod,
timestamp), ``None`` where one query had no value there.  NaN, infinite and
negative values are dropped; series without ``namespace``/``pod`` labels are
skipped; if a query returns several series for one pod (a custom query without
``by (namespace, pod)``), the highest value at each timestamp wins, which errs
towards the larger request.

Anything that keeps us from trusting the answer — connection refused, a
timeout, an HTTP error, ``status: error``, a body that is not the JSON we
expect — raises :class:`MetricsUnavailable` with a message saying why and a
CamelCase ``reason`` fit for a condition.

A long range is split so no query asks for more than 10,001 points per series
(Prometheus refuses more than 11,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

import aiohttp
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator
from tfsched.clustermodel.times import format_go_duration, parse_duration

# The vGPU exporter's metric and label names: the one place they are spelled.
TFLOPS_METRIC = "tensor_fusion_worker_compute_tflops"
VRAM_METRIC = "tensor_fusion_worker_memory_bytes"
NAMESPACE_LABEL = "namespace"
POD_LABEL = "pod"
GPU_LABEL = "gpu"

DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"
DEFAULT_TFLOPS_QUERY = f"avg by ({NAMESPACE_LABEL}, {POD_LABEL}) ({TFLOPS_METRIC})"
DEFAULT_VRAM_QUERY = f"max by ({NAMESPACE_LABEL}, {POD_LABEL}) ({VRAM_METRIC})"

QUERY_RANGE_PATH = "/api/v1/query_range"
# Prometheus refuses a range with more than 11,000 points per series; stay well below.
MAX_STEPS_PER_QUERY = 10_000

# Condition reasons carried by MetricsUnavailable.
REASON_UNREACHABLE = "PrometheusUnreachable"
REASON_TIMEOUT = "PrometheusTimeout"
REASON_ERROR = "PrometheusError"
REASON_BAD_RESPONSE = "PrometheusBadResponse"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_ERROR_TEXT = 300


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

def _positive_duration(value: Any) -> timedelta:
    duration = parse_duration(value)
    if duration < timedelta(milliseconds=1):
        raise ValueError(f"duration {value!r} must be at least 1ms")
    return duration


Duration = Annotated[timedelta, BeforeValidator(_positive_duration), PlainSerializer(format_go_duration)]


class MetricsConfig(BaseModel):
    """Where and how to read usage history (camelCase keys, unknown keys rejected)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    prometheus_url: str = Field(DEFAULT_PROMETHEUS_URL, alias="prometheusURL")
    tflops_query: str = Field(DEFAULT_TFLOPS_QUERY, alias="tflopsQuery")
    vram_query: str = Field(DEFAULT_VRAM_QUERY, alias="vramQuery")
    # Resolution of query_range; also the spacing of the returned samples.
    step: Duration = Field(timedelta(seconds=60), alias="step")
    # How far back the loop loads history when it starts.
    history_length: Duration = Field(timedelta(days=7), alias="historyLength")
    timeout: Duration = Field(timedelta(seconds=10), alias="timeout")

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, value: str) -> str:
        text = value.strip().rstrip("/")
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or rest.startswith("/"):
            raise ValueError(f"invalid prometheusURL {value!r}: expected http(s)://host[:port][/prefix]")
        return text

    @field_validator("tflops_query", "vram_query")
    @classmethod
    def _query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must not be empty")
        return value


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageSample:
    """One pod's usage at one timestamp; ``None`` where that query had no value."""

    namespace: str
    pod: str
    time: datetime
    tflops: float | None
    vram: float | None


class MetricsUnavailable(Exception):
    """Usage history could not be read; ``str()`` says why, ``reason`` is CamelCase for a condition."""

    def __init__(self, message: str, reason: str = REASON_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "…"


def _error_detail(body: bytes) -> str:
    """Prometheus' ``errorType: error`` from an error body, else the body's start."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _clip(body.decode("utf-8", errors="replace")) or "empty body"
    if isinstance(doc, dict) and doc.get("error"):
        kind = doc.get("errorType")
        return _clip(f"{kind}: {doc['error']}" if kind else str(doc["error"]))
    return _clip(body.decode("utf-8", errors="replace"))


def parse_matrix(body: bytes, what: str = "query") -> list[Any]:
    """The ``data.result`` list of a successful matrix answer, or :class:`MetricsUnavailable`."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MetricsUnavailable(
            f"Prometheus returned invalid JSON for the {what} query: {exc}", REASON_BAD_RESPONSE
        ) from None
    if not isinstance(doc, dict):
        raise MetricsUnavailable(f"Prometheus returned a non-object for the {what} query", REASON_BAD_RESPONSE)
    status = doc.get("status")
    if status != "success":
        if status == "error":
            detail = _error_detail(body)
            raise MetricsUnavailable(f"Prometheus reported an error for the {what} query: {detail}", REASON_ERROR)
        raise MetricsUnavailable(
            f"Prometheus answered the {what} query with status {status!r}, expected 'success'", REASON_BAD_RESPONSE
        )
    data = doc.get("data")
    if not isinstance(data, dict):
        raise MetricsUnavailable(f"Prometheus' answer to the {what} query has no data object", REASON_BAD_RESPONSE)
    if data.get("resultType") != "matrix":
        raise MetricsUnavailable(
            f"Prometheus answered the {what} query with resultType {data.get('resultType')!r}, expected 'matrix'",
            REASON_BAD_RESPONSE,
        )
    result = data.get("result")
    if not isinstance(result, list):
        raise MetricsUnavailable(f"Prometheus' answer to the {what} query has no result list", REASON_BAD_RESPONSE)
    return result


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building hundreds of thousands of acyclic objects.

    A parsed answer is ~10 objects per point; with the collector on, its
    generation-2 passes over them triple the parse time.  Nothing here makes
    cycles, and the parse never yields to the event loop.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class SampleMerger:
    """Merges TFLOPS and VRAM matrix results into :class:`UsageSample` rows.

    Pure (no I/O) so benchmarks and recorded-data replays can drive it.
    Timestamps are keyed as whole milliseconds, Prometheus' resolution.  Rows
    are grouped by timestamp as they arrive, so the output needs a sort of the
    few distinct timestamps only; within one timestamp rows keep the order of
    the answers (Prometheus sorts series by labels, so it is deterministic).
    """

    TFLOPS = 0
    VRAM = 1

    def __init__(self) -> None:
        self._by_time: dict[int, dict[tuple[str, str], list[float | None]]] = {}
        self.skipped_series = 0
        self.skipped_points = 0

    def add_body(self, body: bytes, slot: int, what: str = "query") -> None:
        """Parse one query_range answer into ``slot`` (:attr:`TFLOPS` or :attr:`VRAM`)."""
        with _gc_paused():
            self.add_result(parse_matrix(body, what), slot)

    def add_result(self, result: list[Any], slot: int) -> None:
        by_time = self._by_time
        inf = math.inf
        skipped_points = 0
        for series in result:
            try:
                metric = series["metric"]
                namespace = metric[NAMESPACE_LABEL]
                pod = metric[POD_LABEL]
                values = series["values"]
            except (KeyError, TypeError, IndexError):
                self.skipped_series += 1
                continue
            if type(namespace) is not str or type(pod) is not str or type(values) is not list:
                self.skipped_series += 1
                continue
            key = (namespace, pod)
            for point in values:
                try:
                    stamp, text = point
                    value = float(text)
                    ms = round(float(stamp) * 1000.0)
                except (TypeError, ValueError, OverflowError):
                    skipped_points += 1
                    continue
                # Drops NaN (every comparison is false), negatives and infinities.
                if not 0.0 <= value < inf:
                    skipped_points += 1
                    continue
                rows = by_time.get(ms)
                if rows is None:
                    rows = by_time[ms] = {}
                row = rows.get(key)
                if row is None:
                    row = rows[key] = [None, None]
                    row[slot] = value
                else:
                    old = row[slot]
                    if old is None or value > old:
                        row[slot] = value
        self.skipped_points += skipped_points

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._by_time.values())

    def samples(self) -> list[UsageSample]:
        """All merged rows, sorted by time."""
        out: list[UsageSample] = []
        with _gc_paused():
            for ms in sorted(self._by_time):
                rows = self._by_time[ms]
                try:
                    moment = _EPOCH + timedelta(milliseconds=ms)
                except OverflowError:  # a timestamp beyond year 9999: not a real sample
                    self.skipped_points += len(rows)
                    continue
                out.extend(
                    UsageSample(namespace, pod, moment, tflops, vram)
                    for (namespace, pod), (tflops, vram) in rows.items()
                )
        return out


# ---------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------


def _unix_ms(moment: datetime, name: str) -> int:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}"


def split_range(
    start_ms: int, end_ms: int, step_ms: int, max_steps: int = MAX_STEPS_PER_QUERY
) -> list[tuple[int, int]]:
    """Split ``[start, end]`` into ranges of at most ``max_steps`` steps on the same grid, without overlap."""
    if end_ms < start_ms:
        return []
    span = max_steps * step_ms
    chunks = []
    chunk_start = start_ms
    while chunk_start <= end_ms:
        chunk_end = min(chunk_start + span, end_ms)
        chunks.append((chunk_start, chunk_end))
        chunk_start += span + step_ms  # the next grid point after this chunk's last
    return chunks


class PrometheusSource:
    """Reads per-pod usage from Prometheus' HTTP API."""

    def __init__(self, config: MetricsConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self._session = session
        self._own_session = session is None
        self._url = config.prometheus_url + QUERY_RANGE_PATH
        self._step_ms = max(1, config.step // timedelta(milliseconds=1))
        self._timeout_s = config.timeout.total_seconds()

    async def __aenter__(self) -> PrometheusSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise MetricsUnavailable("the HTTP session given to PrometheusSource is closed", REASON_UNREACHABLE)
            self._session = aiohttp.ClientSession()
        return self._session

    async def samples(self, start: datetime, end: datetime) -> list[UsageSample]:
        """Usage of every pod at ``start``, ``start + step``, … ``≤ end`` (both inclusive)."""
        start_ms = _unix_ms(start, "start")
        end_ms = _unix_ms(end, "end")
        merger = SampleMerger()
        # Chunks one after another: bounded load on Prometheus, both queries of a chunk at once.
        for chunk_start, chunk_end in split_range(start_ms, end_ms, self._step_ms):
            # return_exceptions: when one query fails, still wait for the other rather than leave it running.
            outcomes = await asyncio.gather(
                self._query_range(self.config.tflops_query, chunk_start, chunk_end, "TFLOPS"),
                self._query_range(self.config.vram_query, chunk_start, chunk_end, "VRAM"),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            tflops_body, vram_body = cast(list[bytes], outcomes)
            merger.add_body(tflops_body, SampleMerger.TFLOPS, "TFLOPS")
            merger.add_body(vram_body, SampleMerger.VRAM, "VRAM")
        return merger.samples()

    async def _query_range(self, query: str, start_ms: int, end_ms: int, what: str) -> bytes:
        form = {
            "query": query,
            "start": _seconds(start_ms),
            "end": _seconds(end_ms),
            "step": _seconds(self._step_ms),
            # Plain seconds: Prometheus' duration syntax has no fractions ("5.000s" is refused).
            "timeout": f"{self._timeout_s:.3f}",
        }
        base = self.config.prometheus_url
        for attempt in (1, 2):
            try:
                return await self._post(form, what)
            except aiohttp.ClientConnectorError as exc:
                errno = getattr(exc.os_error, "errno", None)
                why = os.strerror(errno) if errno else str(exc.os_error or exc)
                raise MetricsUnavailable(f"cannot connect to Prometheus at {base}: {why}", REASON_UNREACHABLE) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled keep-alive connection that Prometheus closed (a restart, an idle
                # timeout) fails on first use; a fresh connection tells the real story.
                if attempt == 1:
                    continue
                raise MetricsUnavailable(
                    f"the {what} query to Prometheus at {base} failed: {type(exc).__name__}: {exc}",
                    REASON_UNREACHABLE,
                ) from None
            except aiohttp.ClientError as exc:
                raise MetricsUnavailable(
                    f"the {what} query to Prometheus at {base} failed: {type(exc).__name__}: {exc}",
                    REASON_UNREACHABLE,
                ) from None
        raise AssertionError("unreachable")

    async def _post(self, form: dict[str, str], what: str) -> bytes:
        base = self.config.prometheus_url
        try:
            # POST with a form body: long PromQL does not hit URL length limits.
            async with self._client().post(
                self._url, data=form, timeout=aiohttp.ClientTimeout(total=self._timeout_s)
            ) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise MetricsUnavailable(
                f"the {what} query to Prometheus at {base} timed out after {self._timeout_s:g}s", REASON_TIMEOUT
            ) from None
        if status != 200:
            raise MetricsUnavailable(
                f"Prometheus at {base} answered the {what} query with HTTP {status}: {_error_detail(body)}",
                REASON_ERROR,
            )
        return body
