"""Prometheus ``query_range`` matrix answers into :class:`~tfsched.autoscale.columns.UsageColumns`.

Pure (no I/O), so the source, benchmarks and recorded-data replays share it.
One row per (namespace, pod, timestamp), NaN where one query had no value
there.  NaN, infinite and negative values are dropped; series without
``namespace``/``pod`` labels are skipped; if a query returns several series
for one pod (a custom query without ``by (namespace, pod)``), the highest
value at each timestamp wins, which errs towards the larger request.  An
answer we cannot trust raises :class:`~tfsched.autoscale.ports.MetricsUnavailable`.
"""

from __future__ import annotations

import itertools
import math
import operator
from typing import Any

import numpy as np
import orjson

from tfsched.autoscale.columns import UsageColumns
from tfsched.autoscale.numbers import parse_numbers
from tfsched.autoscale.ports import REASON_BAD_RESPONSE, REASON_ERROR, MetricsUnavailable

# The exporter's label names: the one place they are spelled.
NAMESPACE_LABEL = "namespace"
POD_LABEL = "pod"
GPU_LABEL = "gpu"

_MAX_ERROR_TEXT = 300


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "…"


def error_detail(body: bytes) -> str:
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
    return _matrix_result(doc, body, what)


def _matrix_result(doc: Any, body: bytes, what: str) -> list[Any]:
    if not isinstance(doc, dict):
        raise MetricsUnavailable(f"Prometheus returned a non-object for the {what} query", REASON_BAD_RESPONSE)
    status = doc.get("status")
    if status != "success":
        if status == "error":
            detail = error_detail(body)
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


# Timestamps whose nanoseconds would not fit in int64 (past 2262-04-11, before 1677-09-21).
_MAX_ABS_MS = (2**63 - 1) // 1_000_000
_NS_PER_MS = 1_000_000
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
_POINT_ERRORS = (TypeError, ValueError, OverflowError, IndexError, KeyError)
# Largest (time span in ms) × pods grouped by one int64 key; wider takes a slower lexsort.
_KEY_LIMIT = 2**62


_VALUES_KEY = b'"values":['
_STRIP = b'[]"'
_NUMBER_CHARS = b'0123456789.eE+-"NaInfity'  # digits, exponents, NaN, Inf, Infinity and the quotes


def _split_points(body: bytes) -> tuple[bytes, list[int], np.ndarray] | None:
    """Cut every ``"values":[[t,"v"],…]`` out of a matrix answer.

    Returns the answer with each values list emptied (small: labels only),
    the number of points of each series in order, and all stamps and values
    as one float64 array (stamp, value, stamp, value, …).  ``None`` when the
    points are not exactly ``[number,"number"]`` pairs, so the caller takes
    the general path.  Labels cannot hold the key's bytes: a quote inside a
    JSON string is escaped.
    """
    skeleton: list[bytes] = []
    inners: list[bytes] = []
    lengths: list[int] = []
    position = 0
    while True:
        found = body.find(_VALUES_KEY, position)
        if found < 0:
            break
        start = found + len(_VALUES_KEY)
        if body[start : start + 1] == b"]":
            end = start  # an empty list
            lengths.append(0)
        else:
            close = body.find(b"]]", start)
            if close < 0:
                return None
            inner = body[start : close + 1]
            points = inner.count(b"[")
            inners.append(inner)
            lengths.append(points)
            end = close + 1
        skeleton.append(body[position:found])
        skeleton.append(b'"values":[]')
        position = end + 1
    skeleton.append(body[position:])
    joined = b",".join(inners)
    total = sum(lengths)
    # Without the characters numbers are made of, what is left must be exactly
    # "[,],[,],…": pairs, nothing nested or missing, nothing else.
    if total and joined.translate(None, _NUMBER_CHARS) != b"[,]" + b",[,]" * (total - 1):
        return None
    flat = joined.translate(None, _STRIP)
    try:
        numbers = parse_numbers(flat)
    except ValueError:
        return None
    if numbers.shape[0] != 2 * sum(lengths):
        return None
    return b"".join(skeleton), lengths, numbers


def _floats(points: list[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Stamps and values of ``[stamp, "value"]`` points as float64, or ``None`` if any point is malformed.

    ``float()`` on each item, like the per-point path, so both parse alike;
    ``map`` keeps the loop in C.
    """
    n = len(points)
    try:
        # itemgetter(1) fails on shorter points; a longer one would pass it silently.
        if n and max(map(len, points)) != 2:
            return None
        stamps = np.fromiter(map(float, map(_first, points)), np.float64, count=n)
        values = np.fromiter(map(float, map(_second, points)), np.float64, count=n)
    except _POINT_ERRORS:
        return None
    return stamps, values


def _floats_point_by_point(points: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`_floats` for a series with malformed points: NaN (dropped later) for each of those."""
    stamps: list[float] = []
    values: list[float] = []
    nan = math.nan
    for point in points:
        try:
            stamp, text = point
            value = float(text)
            moment = float(stamp)
        except (TypeError, ValueError, OverflowError):
            value = moment = nan
        stamps.append(moment)
        values.append(value)
    return np.array(stamps, np.float64), np.array(values, np.float64)


def _labels(series: Any) -> tuple[str, str, Any] | None:
    """(namespace, pod, values) of one series; None when its labels cannot be read."""
    try:
        metric = series["metric"]
        namespace = metric[NAMESPACE_LABEL]
        pod = metric[POD_LABEL]
        values = series["values"]
    except (KeyError, TypeError, IndexError):
        return None
    if type(namespace) is not str or type(pod) is not str:
        return None
    return namespace, pod, values


class SampleMerger:
    """Merges TFLOPS and VRAM matrix results into :class:`UsageColumns`.

    Pure (no I/O) so benchmarks and recorded-data replays can drive it.  Each
    answer is converted to arrays at once (one pass of ``float()`` over its
    points, no object per point); only a series with a malformed point is
    converted point by point.  :meth:`columns` merges everything with one sort.

    Timestamps are keyed as whole milliseconds, Prometheus' resolution.  NaN,
    infinite and negative values and unparsable points are dropped and counted
    in :attr:`skipped_points`, as is each (pod, timestamp) whose time does not
    fit int64 nanoseconds; series without string ``namespace``/``pod`` labels
    or a ``values`` list are counted in :attr:`skipped_series`.  Several series
    for one pod: the highest value at each timestamp wins, per query.  Rows
    come out sorted by time; within one timestamp in the order of the answers
    (Prometheus sorts series by labels, so it is deterministic).
    """

    TFLOPS = 0
    VRAM = 1

    def __init__(self) -> None:
        self._codes: dict[tuple[str, str], int] = {}
        # (slot, ms, pod code, value) of the usable points, in the order they were added.
        self._chunks: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        # Distinct (pod code, ms) beyond int64 nanoseconds: each counts once, as one dropped row.
        self._beyond: set[tuple[int, float]] = set()
        self._skipped_points = 0
        self.skipped_series = 0
        self._merged: UsageColumns | None = None

    @property
    def skipped_points(self) -> int:
        return self._skipped_points + len(self._beyond)

    def add_body(self, body: bytes, slot: int, what: str = "query") -> None:
        """Parse one query_range answer into ``slot`` (:attr:`TFLOPS` or :attr:`VRAM`).

        The points are read straight from the bytes (:func:`_split_points`):
        a JSON parser would build one list per point, millions for a history
        load, and the garbage collector's passes over them cost more than the
        parse.  Anything that does not look exactly like Prometheus' answer
        takes the general path, which reads it (or reports it) as before.
        """
        if slot not in (self.TFLOPS, self.VRAM):
            raise ValueError(f"slot must be SampleMerger.TFLOPS or SampleMerger.VRAM, got {slot!r}")
        split = _split_points(body)
        if split is not None:
            try:
                skeleton = orjson.loads(split[0])
            except orjson.JSONDecodeError:
                skeleton = None
            if skeleton is not None and self._add_split(_matrix_result(skeleton, body, what), *split[1:], slot):
                return
        self.add_result(parse_matrix(body, what), slot)

    def _add_split(self, result: list[Any], lengths: list[int], numbers: np.ndarray, slot: int) -> bool:
        """Add points read by :func:`_split_points`; False (nothing added) unless each
        series of the skeleton lines up with its points."""
        if len(result) != len(lengths):
            return False
        codes = self._codes
        keep = np.zeros(len(lengths), np.bool_)
        series_codes: list[int] = []
        for i, series in enumerate(result):
            read = _labels(series)
            if read is None or read[2] != []:
                return False  # the general path says which series and why
            namespace, pod, _ = read
            if lengths[i]:
                keep[i] = True
                series_codes.append(codes.setdefault((namespace, pod), len(codes)))
        counts = np.array(lengths, np.int64)
        owner = np.repeat(np.arange(len(lengths)), counts)
        take = keep[owner]
        if series_codes:
            pods = np.repeat(np.array(series_codes, np.int32), counts[keep])
            self._add(slot, pods, numbers[0::2][take], numbers[1::2][take])
        return True

    def add_result(self, result: list[Any], slot: int) -> None:
        """Add the ``data.result`` list of one matrix answer into ``slot``."""
        if slot not in (self.TFLOPS, self.VRAM):
            raise ValueError(f"slot must be SampleMerger.TFLOPS or SampleMerger.VRAM, got {slot!r}")
        codes = self._codes
        series_codes: list[int] = []
        series_values: list[list[Any]] = []
        for series in result:
            read = _labels(series)
            if read is None or type(read[2]) is not list:
                self.skipped_series += 1
                continue
            namespace, pod, values = read
            if not values:
                continue
            code = codes.setdefault((namespace, pod), len(codes))
            series_codes.append(code)
            series_values.append(values)
        if not series_codes:
            return
        lengths = np.fromiter(map(len, series_values), np.int64, count=len(series_values))
        pods = np.repeat(np.array(series_codes, np.int32), lengths)
        converted = _floats(list(itertools.chain.from_iterable(series_values)))
        if converted is None:  # some point is malformed: find out series by series
            parts = [_floats(values) or _floats_point_by_point(values) for values in series_values]
            converted = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        self._add(slot, pods, *converted)

    def _add(self, slot: int, pods: np.ndarray, stamps: np.ndarray, values: np.ndarray) -> None:
        self._merged = None
        with np.errstate(over="ignore", invalid="ignore"):
            ms = np.rint(stamps * 1000.0)  # round half to even, like round()
            # Drops NaN (every comparison is false), negatives and infinities, and unusable stamps.
            usable = (values >= 0.0) & (values < math.inf) & np.isfinite(ms)
            fits = usable & (np.abs(ms) <= _MAX_ABS_MS)
        kept = int(np.count_nonzero(fits))
        self._skipped_points += int(np.count_nonzero(~usable))
        if kept < int(np.count_nonzero(usable)):  # rare: timestamps beyond year 2262
            beyond = usable & ~fits
            self._beyond.update(zip(pods[beyond].tolist(), ms[beyond].tolist(), strict=True))
        if kept:
            # + 0.0: "-0" reads as 0, so which of ±0 wins a tie does not matter.
            self._chunks.append((slot, ms[fits].astype(np.int64), pods[fits], values[fits] + 0.0))

    def __len__(self) -> int:
        """Rows :meth:`columns` returns."""
        return len(self.columns())

    def columns(self) -> UsageColumns:
        """All merged rows, sorted by time (ties in answer order); cached until the next add."""
        if self._merged is None:
            self._merged = self._merge()
        return self._merged

    def _merge(self) -> UsageColumns:
        chunks = self._chunks
        if not chunks:
            return UsageColumns.empty()
        ms = np.concatenate([chunk[1] for chunk in chunks])
        pod = np.concatenate([chunk[2] for chunk in chunks])
        value = np.concatenate([chunk[3] for chunk in chunks])
        is_vram = np.repeat(
            np.array([chunk[0] == self.VRAM for chunk in chunks]), [chunk[1].shape[0] for chunk in chunks]
        )
        npods = len(self._codes)

        # Group by (time, pod) with a stable sort, so each group's first point is its first in answer order.
        low = int(ms.min())
        if (int(ms.max()) - low + 1) * npods < _KEY_LIMIT:
            key = (ms - low) * npods + pod
            order = np.argsort(key, kind="stable")
            key = key[order]
            starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
            del key
        else:  # a span of times too wide for one int64 key
            order = np.lexsort((pod, ms))
            sorted_ms, sorted_pod = ms[order], pod[order]
            change = (sorted_ms[1:] != sorted_ms[:-1]) | (sorted_pod[1:] != sorted_pod[:-1])
            starts = np.flatnonzero(np.concatenate(([True], change)))
        first = order[starts]
        value, is_vram = value[order], is_vram[order]
        del order
        # fmax skips NaN: a group's other-query points, so all-NaN means "no value".
        tflops = np.fmax.reduceat(np.where(is_vram, np.nan, value), starts)
        vram = np.fmax.reduceat(np.where(is_vram, value, np.nan), starts)
        del value, is_vram, starts
        row_ms, row_pod = ms[first], pod[first]
        del ms, pod

        # Groups are in (time, pod code) order; ties must be in answer order, which differs when a
        # pod first appears at some time after pods coded later (e.g. only in the VRAM answer).
        same_time = row_ms[1:] == row_ms[:-1]
        if np.any(same_time & (first[1:] < first[:-1])):
            resort = np.lexsort((first, row_ms))
            row_ms, row_pod, tflops, vram = row_ms[resort], row_pod[resort], tflops[resort], vram[resort]

        # Only pods with rows, in code order (first appearance in the answers).
        pods = list(self._codes)
        used = np.zeros(npods, bool)
        used[row_pod] = True
        if not used.all():
            recode = np.cumsum(used, dtype=np.int32) - 1
            row_pod = recode[row_pod]
            pods = [name for name, keep in zip(pods, used.tolist(), strict=True) if keep]
        return UsageColumns(tuple(pods), row_ms * _NS_PER_MS, row_pod, tflops, vram)
