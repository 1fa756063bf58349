"""Cron scaling rules: which rule, if any, is in effect at a given moment.

A rule counts only when it is enabled and has a name, a start and an end
(upstream's rule).  It is **active** when, seen from ``now``, the next ``end``
occurrence comes before the next ``start`` occurrence — that is, we are past
a start and not yet past the end that follows it.  ``now`` exactly on a start
is inside the window; exactly on an end is outside, so the window is
``[start, end)``.  Expressions are read in an explicit time zone (UTC unless
the caller says otherwise) with croniter; ``now`` is always passed in.

More than one active rule is an error (reported, and no rule applies);
``start == end`` is rejected when the config is validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from croniter import croniter

from tfsched.clustermodel.autoscaling_config import CronScalingRule

MULTIPLE_ACTIVE_ERROR = "only one active cron scaling rule is permitted at any given time"


class CronRuleError(ValueError):
    """A rule that cannot be evaluated."""


@dataclass(frozen=True)
class CronEvaluation:
    """The active rule (or None) and an error message when the rules conflict."""

    active: CronScalingRule | None = None
    error: str | None = None


def next_occurrence(expression: str, now: datetime, tz: tzinfo = UTC) -> datetime:
    """The first time after ``now`` that ``expression`` fires, read in ``tz``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        return croniter(expression, now.astimezone(tz)).get_next(datetime)
    except Exception as exc:  # croniter raises several types for bad or never-firing schedules
        raise CronRuleError(f"cron expression {expression!r}: {exc}") from exc


def is_active(rule: CronScalingRule, now: datetime, tz: tzinfo = UTC) -> bool:
    """Whether ``now`` lies inside ``rule``'s window (ignores ``enable``)."""
    if not rule.start or not rule.end:
        return False
    if rule.start == rule.end:
        raise CronRuleError(f"cron scaling rule {rule.name!r}: start and end can not be the same")
    return next_occurrence(rule.end, now, tz) < next_occurrence(rule.start, now, tz)


def evaluate_rules(rules: Sequence[CronScalingRule], now: datetime, tz: tzinfo = UTC) -> CronEvaluation:
    """The rule in effect at ``now``, or the reason none can be chosen."""
    active: list[CronScalingRule] = []
    for rule in rules:
        if not rule.counts:
            continue
        try:
            if is_active(rule, now, tz):
                active.append(rule)
        except CronRuleError as exc:
            return CronEvaluation(error=str(exc))
    if len(active) > 1:
        names = ", ".join(f'"{r.name}"' for r in active)
        return CronEvaluation(error=f"{MULTIPLE_ACTIVE_ERROR} (active: {names})")
    return CronEvaluation(active=active[0] if active else None)
