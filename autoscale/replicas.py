"""Horizontal recommendation from TFLOPS utilisation (``autoSetReplicas``).

Upstream declared these fields and never implemented them; this is tfsched's
algorithm, modelled on the Kubernetes HPA:

1. **Observed utilisation** ``u``: the workers' mean TFLOPS usage over the
   last ``evaluationPeriod`` as a percentage of the per-worker TFLOPS limit
   (the caller measures it; :func:`observed_utilization` computes it from
   samples).  ``t`` is ``targetTFlopsOfLimits`` (percent, default 80).
2. **Tolerance**: if ``|u/t − 1| ≤ tolerance`` (default 0.1, like HPA) the
   count stays.
3. **Raw desire**: ``ceil(current × u / t)``.
4. **Steps**: a scale-up adds at most ``scaleUpStep`` replicas, a scale-down
   removes at most ``scaleDownStep``; a step is a count (``2``) or a
   percentage of the current count (``"50%"``, at least one replica).
   Defaults: up ``100%`` (at most double), down ``50%`` (at most halve).
5. **Cool-downs**: no scale-up within ``scaleUpCoolDownTime`` (default 1m) of
   the last scale-up; no scale-down within ``scaleDownCoolDownTime``
   (default 5m) of the last scale in either direction, so a scale-down never
   follows a scale-up hastily.  A held change keeps the current count.
6. **Bounds**: the result is clamped to ``[minReplicas, maxReplicas]``
   (defaults 1 and unbounded); bounds apply even during a cool-down.
7. **Cron**: while a cron rule with ``desiredReplicas`` is active, that count
   wins outright (no tolerance, steps, cool-downs or bounds).

With zero current replicas there is nothing to measure: the result is
``minReplicas``.  Pure: ``now`` and the last scale times are inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tfsched.clustermodel.autoscaling_config import AutoSetReplicas


@dataclass(frozen=True)
class ReplicaState:
    """What the replica recommender needs to know about the workload now."""

    current: int
    observed_utilization: float | None = None  # percent of the TFLOPS limit
    last_scale_up: datetime | None = None
    last_scale_down: datetime | None = None


@dataclass(frozen=True)
class ReplicaDecision:
    """The desired replica count and why."""

    current: int
    desired: int
    reason: str
    message: str

    @property
    def changes(self) -> bool:
        return self.desired != self.current


def step_size(step: int | str, current: int) -> int:
    """Replicas a step allows: a fixed count, or a percentage of ``current`` (at least 1)."""
    if isinstance(step, int):
        return step
    percent = float(step.rstrip("%"))
    return max(1, math.ceil(current * percent / 100.0))


def observed_utilization(
    samples: Iterable[tuple[datetime, float]],
    tflops_limit: float,
    now: datetime,
    evaluation_period: timedelta,
) -> float | None:
    """Mean TFLOPS of the samples in ``(now − period, now]`` as a percentage of ``tflops_limit``."""
    if tflops_limit <= 0:
        return None
    start = now - evaluation_period
    values = [tflops for moment, tflops in samples if start < moment <= now and tflops >= 0]
    if not values:
        return None
    return sum(values) / len(values) / tflops_limit * 100.0


def _clamp(config: AutoSetReplicas, desired: int) -> int:
    desired = max(config.min_replicas, desired)
    if config.max_replicas is not None:
        desired = min(config.max_replicas, desired)
    return desired


def recommend_replicas(
    config: AutoSetReplicas,
    state: ReplicaState | None,
    now: datetime,
    *,
    cron_desired: int | None = None,
    cron_rule: str | None = None,
) -> ReplicaDecision | None:
    """The replica decision, or None when horizontal scaling has nothing to say."""
    current = state.current if state is not None else 0
    if cron_desired is not None:
        return ReplicaDecision(
            current, cron_desired, "CronRuleActive", f'Cron scaling rule "{cron_rule}" sets {cron_desired} replicas'
        )
    if not config.enable or state is None:
        return None
    if current <= 0:
        desired = _clamp(config, 0)
        return ReplicaDecision(current, desired, "NoReplicas", f"no running replicas: {current} → {desired}")
    utilization = state.observed_utilization
    if utilization is None:
        desired = _clamp(config, current)
        return ReplicaDecision(current, desired, "NoUtilization", "no TFLOPS usage in the evaluation period")
    target = config.target_tflops_of_limits
    ratio = utilization / target
    observed = f"TFLOPS utilisation {utilization:.1f}% of limits, target {target:g}%"
    if abs(ratio - 1.0) <= config.tolerance:
        desired = _clamp(config, current)
        return ReplicaDecision(current, desired, "WithinTolerance", f"{observed}: within tolerance")
    raw = math.ceil(current * ratio)
    reason = "ScaleUp" if raw > current else "ScaleDown"
    desired = raw
    if raw > current:
        desired = min(raw, current + step_size(config.scale_up_step, current))
        if state.last_scale_up is not None and now - state.last_scale_up < config.scale_up_cool_down_time:
            desired, reason = current, "ScaleUpCoolDown"
    elif raw < current:
        desired = max(raw, current - step_size(config.scale_down_step, current))
        last_scale = max((t for t in (state.last_scale_up, state.last_scale_down) if t is not None), default=None)
        if last_scale is not None and now - last_scale < config.scale_down_cool_down_time:
            desired, reason = current, "ScaleDownCoolDown"
    desired = _clamp(config, desired)
    return ReplicaDecision(current, desired, reason, f"{observed}: {current} → {desired} replicas")
