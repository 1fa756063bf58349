"""Per-pod GPU usage history from Prometheus (an edge: this module does HTTP I/O).

Two range queries run per call, one for TFLOPS and one for VRAM, over
``/api/v1/query_range``.  Their defaults suit a vGPU exporter that reports one
gauge per (namespace, pod, GPU):

* TFLOPS: ``avg by (namespace, pod) (tensor_fusion_worker_compute_tflops)`` —
  the per-GPU average, as requests are per GPU;
* VRAM: ``max by (namespace, pod) (tensor_fusion_worker_memory_bytes)`` — the
  busiest GPU, as every GPU of the pod must hold its VRAM.

Answers are merged into :class:`~tfsched.autoscale.columns.UsageColumns` by
:class:`tfsched.autoscale.matrix.SampleMerger` (pure; see there for what is
dropped and how several series of one pod combine).

Anything that keeps us from trusting the answer — connection refused, a
timeout, an HTTP error, ``status: error``, a body that is not the JSON we
expect — raises :class:`MetricsUnavailable` with a message saying why and a
CamelCase ``reason`` fit for a condition.

A long range is split so no query asks for more than 10,001 points per series
(Prometheus refuses more than 11,000).
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

import aiohttp
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator

from tfsched.autoscale.columns import UsageColumns
from tfsched.autoscale.matrix import NAMESPACE_LABEL, POD_LABEL, SampleMerger, error_detail
from tfsched.autoscale.ports import (
    REASON_ERROR,
    REASON_TIMEOUT,
    REASON_UNREACHABLE,
    MetricsUnavailable,
)
from tfsched.clustermodel.times import UNIX_EPOCH, format_go_duration, parse_duration

# The vGPU exporter's metric names: the one place they are spelled (its labels: matrix.py).
TFLOPS_METRIC = "tensor_fusion_worker_compute_tflops"
VRAM_METRIC = "tensor_fusion_worker_memory_bytes"

DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"
DEFAULT_TFLOPS_QUERY = f"avg by ({NAMESPACE_LABEL}, {POD_LABEL}) ({TFLOPS_METRIC})"
DEFAULT_VRAM_QUERY = f"max by ({NAMESPACE_LABEL}, {POD_LABEL}) ({VRAM_METRIC})"

QUERY_RANGE_PATH = "/api/v1/query_range"
# Prometheus refuses a range with more than 11,000 points per series; stay well below.
MAX_STEPS_PER_QUERY = 10_000


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
# The source
# ---------------------------------------------------------------------------


def _unix_ms(moment: datetime, name: str) -> int:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")
    return (moment - UNIX_EPOCH) // timedelta(milliseconds=1)


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

    async def samples(self, start: datetime, end: datetime) -> UsageColumns:
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
        return merger.columns()

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
                f"Prometheus at {base} answered the {what} query with HTTP {status}: {error_detail(body)}",
                REASON_ERROR,
            )
        return body
