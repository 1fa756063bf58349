"""Time and durations: the one place they are parsed and written.

* Kubernetes times: ``metav1.Time`` is RFC 3339 in UTC with whole seconds
  (:func:`format_time`), ``metav1.MicroTime`` the same with microseconds
  (:func:`format_micro_time`); :func:`parse_time` reads either (a zone is
  required).
* Durations: :func:`parse_duration` is the rule for every config field, in
  the CRDs and in ``tfsched serve --config`` alike: a Go duration (``90s``,
  ``1h30m``, ``500ms``) with Prometheus' ``d`` and ``w`` in front (``7d``,
  ``1w2d12h``), or a number of seconds (``60``, ``"1.5"``).
  :func:`parse_go_duration` is Go's ``time.ParseDuration`` exactly, for values
  that must stay valid Go; :func:`format_go_duration` writes the compact Go
  form.
* Instants inside the pure core are integer nanoseconds since the Unix epoch
  (:func:`to_unix_ns`, :func:`from_unix_ns`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

NS_PER_SECOND = 1_000_000_000
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# ---------------------------------------------------------------------------
# Instants
# ---------------------------------------------------------------------------


def format_time(moment: datetime) -> str:
    """``metav1.Time``: RFC 3339, UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(moment: datetime) -> str:
    """``metav1.MicroTime``: RFC 3339, UTC, microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> datetime:
    """An RFC 3339 time with a zone (``Z`` or an offset), as a UTC datetime.

    Raises ``ValueError`` saying what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{text!r} has no time zone: RFC 3339 needs a zone such as Z or +02:00")
    return moment.astimezone(UTC)


def parse_time_or_none(text: Any) -> datetime | None:
    """:func:`parse_time`, with ``None`` for anything unreadable (status fields written by others)."""
    if isinstance(text, datetime):
        return text if text.tzinfo is not None else None
    try:
        return parse_time(text)
    except ValueError:
        return None


def to_unix_ns(moment: datetime) -> int:
    """Integer nanoseconds since the Unix epoch of a timezone-aware datetime."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: times must carry a time zone")
    delta = moment - UNIX_EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000


def from_unix_ns(ns: int) -> datetime:
    """The UTC datetime of integer Unix nanoseconds (truncated to microseconds)."""
    return UNIX_EPOCH + timedelta(microseconds=ns // 1000)


def duration_ns(value: timedelta) -> int:
    """Integer nanoseconds of a timedelta (Go's ``time.Duration``)."""
    return (value.days * 86_400 + value.seconds) * NS_PER_SECOND + value.microseconds * 1000


# ---------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------

_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# Prometheus-style day/week prefix (``7d``, ``1w2d``) in front of a Go duration.
_DAYS_WEEKS = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(.*)$")
_EXAMPLE = "a duration such as '30s', '1h30m' or '7d'"


def parse_go_duration(value: Any) -> timedelta:
    """Go's ``time.ParseDuration``: ``24h``, ``1h30m``, ``1.5s``, ``0`` (no days, no bare numbers)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: expected a Go duration such as '24h' or '30m'")
    text = value.strip()
    if text in ("0", "+0", "-0"):
        return timedelta(0)
    sign = 1
    body = text
    if not body:
        raise ValueError(f"invalid duration {value!r}: empty")
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    position = 0
    total_ns = 0.0
    while position < len(body):
        match = _GO_DURATION_PART.match(body, position)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: expected a Go duration such as '24h' or '30m'")
        total_ns += float(match.group(1)) * _GO_UNITS_NS[match.group(2)]
        position = match.end()
    if position == 0:
        raise ValueError(f"invalid duration {value!r}: empty")
    return timedelta(microseconds=sign * total_ns / 1000)


def parse_duration(value: Any) -> timedelta:
    """The duration of every config field: Go's syntax with ``d``/``w``, or seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError(f"invalid duration {value!r}: expected {_EXAMPLE}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"invalid duration {value!r}: not finite")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: expected {_EXAMPLE}")
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"invalid duration {value!r}: not finite")
        return timedelta(seconds=seconds)
    match = _DAYS_WEEKS.match(text)
    weeks, days, rest = (match[1], match[2], match[3]) if match else (None, None, text)
    if weeks is None and days is None:
        return parse_go_duration(text)
    extra = timedelta(weeks=int(weeks or 0), days=int(days or 0))
    return extra + (parse_go_duration(rest) if rest else timedelta(0))


def parse_positive_duration(value: Any) -> timedelta:
    duration = parse_duration(value)
    if duration <= timedelta(0):
        raise ValueError(f"duration {value!r} must be positive")
    return duration


def parse_non_negative_duration(value: Any) -> timedelta:
    duration = parse_duration(value)
    if duration < timedelta(0):
        raise ValueError(f"duration {value!r} must not be negative")
    return duration


def format_go_duration(value: timedelta) -> str:
    """Compact Go-style duration: ``24h``, ``1h30m``, ``90s``, ``500ms``, ``0s``."""
    total_us = value // timedelta(microseconds=1)
    if total_us == 0:
        return "0s"
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    hours, rest = divmod(total_us, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if micros:
        if micros % 1000 == 0 and not (hours or minutes or seconds):
            parts.append(f"{micros // 1000}ms")
        else:
            parts.append(f"{seconds}.{micros:06d}".rstrip("0") + "s")
    elif seconds:
        parts.append(f"{seconds}s")
    return sign + "".join(parts)


# Duration fields of pydantic models (CRDs and tfsched's config): read by
# parse_*_duration, written back as Go durations.
_go_duration = PlainSerializer(format_go_duration, return_type=str)
PositiveDuration = Annotated[timedelta, BeforeValidator(parse_positive_duration), _go_duration]
NonNegativeDuration = Annotated[timedelta, BeforeValidator(parse_non_negative_duration), _go_duration]
