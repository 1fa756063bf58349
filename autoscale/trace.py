"""Read a usage trace file (an edge: this module does file I/O).

Two formats, same keys:

* CSV with a header naming ``timestamp``, ``worker``, ``tflops``, ``vram``
  (any order; other columns are ignored; blank lines and lines starting with
  ``#`` are skipped);
* JSON lines, one object per line with those keys.

``timestamp`` is RFC 3339 with a zone (``2025-10-09T09:16:46Z``) or Unix
seconds (``1760001406`` or ``1760001406.5``).  ``tflops`` is a number or a
quantity (``500m``); ``vram`` is bytes or a quantity (``10Gi``).  An empty
``tflops`` or ``vram`` (or JSON ``null``) means that resource was not sampled.
The format is chosen by the file suffix (``.csv``, ``.jsonl``, ``.ndjson``,
``.json``), else by the first non-blank character (``{`` means JSON lines).

Bad rows are collected and reported together with their line numbers; an
unreadable file raises :class:`TraceError` with the reason.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tfsched.clustermodel.quantity import QuantityError, parse_quantity
from tfsched.clustermodel.times import parse_time

COLUMNS = ("timestamp", "worker", "tflops", "vram")
MAX_REPORTED_ERRORS = 20


class TraceError(ValueError):
    """A trace that cannot be read; ``errors`` lists ``(line, message)`` for bad rows."""

    def __init__(self, message: str, errors: list[tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


@dataclass(frozen=True)
class UsageRecord:
    """One sample of one worker."""

    line: int
    time: datetime
    worker: str
    tflops: float | None
    vram: float | None


def parse_timestamp(value: Any) -> datetime:
    """RFC 3339 (with a zone) or Unix seconds → an aware UTC datetime."""
    if isinstance(value, bool):
        raise ValueError(f"bad timestamp {value!r}")
    if isinstance(value, (int, float)):
        return _from_unix(float(value), value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"bad timestamp {value!r}: expected RFC 3339 or Unix seconds")
    text = value.strip()
    try:
        return _from_unix(float(text), value)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ValueError(f"bad timestamp: {exc}") from None


def _from_unix(seconds: float, original: Any) -> datetime:
    if not math.isfinite(seconds):
        raise ValueError(f"bad timestamp {original!r}")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"bad timestamp {original!r}: out of range") from None


def _parse_value(value: Any, name: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        return parse_quantity(value.strip() if isinstance(value, str) else value)
    except QuantityError as exc:
        raise ValueError(f"bad {name}: {exc}") from None


def _record(line: int, row: Mapping[str, Any]) -> UsageRecord:
    worker = row.get("worker")
    if worker is None or (isinstance(worker, str) and not worker.strip()):
        raise ValueError("missing worker")
    return UsageRecord(
        line=line,
        time=parse_timestamp(row.get("timestamp")),
        worker=str(worker).strip(),
        tflops=_parse_value(row.get("tflops"), "tflops"),
        vram=_parse_value(row.get("vram"), "vram"),
    )


def _csv_rows(text: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [f.strip().lower() for f in fields]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise TraceError(
                    f"line {line}: CSV header must name {', '.join(COLUMNS)}; missing {', '.join(missing)}"
                )
            continue
        if len(fields) != len(header):
            yield line, {"__error__": f"expected {len(header)} fields, found {len(fields)}"}
            continue
        yield line, dict(zip(header, fields, strict=True))


def _jsonl_rows(text: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield line, {"__error__": f"invalid JSON: {exc}"}
            continue
        if not isinstance(obj, dict):
            yield line, {"__error__": "expected a JSON object"}
            continue
        yield line, obj


def parse_trace(text: str, *, fmt: str | None = None) -> list[UsageRecord]:
    """Parse trace text (``fmt`` ``"csv"`` or ``"jsonl"``, sniffed when None)."""
    if fmt is None:
        fmt = "jsonl" if text.lstrip().startswith("{") else "csv"
    rows = _jsonl_rows(text) if fmt == "jsonl" else _csv_rows(text)
    records: list[UsageRecord] = []
    errors: list[tuple[int, str]] = []
    for line, row in rows:
        problem = row.get("__error__")
        if problem is None:
            try:
                records.append(_record(line, row))
                continue
            except ValueError as exc:
                problem = str(exc)
        errors.append((line, str(problem)))
    if errors:
        shown = "\n".join(f"  line {line}: {message}" for line, message in errors[:MAX_REPORTED_ERRORS])
        more = len(errors) - MAX_REPORTED_ERRORS
        suffix = f"\n  ... and {more} more" if more > 0 else ""
        raise TraceError(f"{len(errors)} bad row(s):\n{shown}{suffix}", errors)
    if not records:
        raise TraceError("the trace has no samples")
    return records


def read_trace(path: str | Path) -> list[UsageRecord]:
    """Read and parse a trace file; raises :class:`TraceError` on an unreadable file or bad rows."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"cannot read {path}: not UTF-8 text ({exc.reason})") from None
    suffix = path.suffix.lower()
    fmt = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}.get(suffix)
    return parse_trace(text, fmt=fmt)
