"""One pure entry point: config + usage history + current state → a recommendation.

:func:`recommend` runs the estimators (:mod:`tfsched.autoscale.estimators`), the
vertical decision (:mod:`tfsched.autoscale.vertical`), the cron rules
(:mod:`tfsched.autoscale.cron`), the replica recommender (:mod:`tfsched.autoscale.replicas`)
and the merge (:mod:`tfsched.autoscale.merge`), and returns a :class:`Recommendation`
whose :meth:`Recommendation.to_status` is the TensorFusionWorkload status
fragment in the CRD's camelCase:

.. code-block:: yaml

    recommendation: {requests: {tflops: "13", vram: 1Gi}, limits: {tflops: "13", vram: 1Gi}}
    conditions:
      - {type: RecommendationProvided, status: "True", reason: OutOfEstimatedBound,
         message: "TFLOPS scaled up due to (1) below lower bound (2)",
         lastTransitionTime: "2025-10-09T09:16:46Z"}
    activeCronScalingRule: {...}   # or null
    mode: all                      # tfsched extension: recommend-only, tflops, vram or all
    desiredReplicas: 3             # tfsched extension, only with a replica decision

No I/O and no clock: ``now`` is an argument, so is everything the cluster
knows (current and original resources, the per-GPU cap, the previous status).
Status quantities are exact: amounts are whole milli-TFLOPS and whole bytes
(see :mod:`tfsched.autoscale.estimators` for where they are truncated; a
vertical VRAM proposal is a whole Mi, see :mod:`tfsched.autoscale.merge`),
written with ``format_tflops`` and ``format_bytes``, so status, annotations and
the ledger agree to the byte.

What is applied: vertical proposals only when ``autoSetResources`` applies
(enabled with a ``targetResource``); cron rules have their own ``enable`` and
apply on their own (TensorFusion gates them on ``autoSetResources`` too; we
don't, so a cron-only config works).  :attr:`Recommendation.to_apply` is that
subset, ``None`` when nothing needs changing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from tfsched.autoscale.cron import CronEvaluation, evaluate_rules
from tfsched.autoscale.estimators import Amounts, Estimates, ResourceAmounts, UsageSummary, estimate
from tfsched.autoscale.merge import merge_resources
from tfsched.autoscale.replicas import ReplicaDecision, ReplicaState, recommend_replicas
from tfsched.autoscale.vertical import VerticalResult, decide_vertical, format_amount
from tfsched.clustermodel.annotations import (
    CONDITION_RECOMMENDATION_PROVIDED,
    REASON_OUT_OF_ESTIMATED_BOUND,
    REASON_RULE_ACTIVE,
    REASON_RULE_INACTIVE,
)
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, CronScalingRule, Resources, ResourceValues
from tfsched.clustermodel.times import parse_time_or_none
from tfsched.clustermodel.workload import Condition, ResourcesMode, WorkloadStatus, resources_mode

# Not a TensorFusion reason: ours, for rules that cannot be evaluated together.
REASON_CRON_RULE_CONFLICT = "CronScalingRuleConflict"


@dataclass(frozen=True)
class PreviousStatus:
    """What the last status said, as far as the recommendation depends on it."""

    active_cron_rule: CronScalingRule | None = None
    conditions: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_status(cls, status: WorkloadStatus | Mapping[str, Any] | None) -> PreviousStatus:
        """``activeCronScalingRule`` and ``conditions`` of a workload's status (model or JSON)."""
        if not status:
            return cls()
        if not isinstance(status, WorkloadStatus):
            status = WorkloadStatus.read(status)
        return cls(
            active_cron_rule=status.active_cron_scaling_rule,
            conditions=tuple(c.to_dict() for c in status.conditions),
        )


@dataclass(frozen=True)
class Recommendation:
    """Everything :func:`recommend` decided; :meth:`to_status` renders the CR status."""

    estimates: Estimates
    vertical: VerticalResult
    cron: CronEvaluation
    current: ResourceAmounts
    resources: ResourceAmounts
    to_apply: ResourceAmounts | None
    replicas: ReplicaDecision | None
    conditions: tuple[Condition, ...] = field(default_factory=tuple)
    mode: ResourcesMode = "recommend-only"

    @property
    def active_cron_rule(self) -> CronScalingRule | None:
        return self.cron.active

    @property
    def changed(self) -> bool:
        return self.resources != self.current

    @property
    def resources_model(self) -> Resources:
        return self.resources.to_model()

    def to_status(self) -> dict[str, Any]:
        """The status fragment: ``recommendation``, ``conditions``, ``activeCronScalingRule``, ..."""
        written = WorkloadStatus(
            recommendation=self.resources.to_model(),
            conditions=list(self.conditions),
            active_cron_scaling_rule=self.cron.active,
            mode=self.mode,
        )
        status = written.fragment("recommendation", "conditions", "active_cron_scaling_rule", "mode")
        if self.replicas is not None:
            status["desiredReplicas"] = self.replicas.desired
        return status

    def estimates_dict(self) -> dict[str, dict[str, str]]:
        """Target and bounds as quantity strings, per resource (for display and ``--json``)."""
        result: dict[str, dict[str, str]] = {}
        for resource in ("tflops", "vram"):
            result[resource] = {
                "target": format_amount(resource, self.estimates.target.get(resource), exact=True),
                "lowerBound": format_amount(resource, self.estimates.lower_bound.get(resource), exact=True),
                "upperBound": format_amount(resource, self.estimates.upper_bound.get(resource), exact=True),
            }
        return result


def transition_time(previous: Sequence[Mapping[str, Any]], condition_type: str, status: str, now: datetime) -> datetime:
    """When a condition of this type last changed to ``status``: its recorded time
    while the status stays the same (like meta.SetStatusCondition), else ``now``."""
    for old in previous:
        if old.get("type") == condition_type and old.get("status") == status:
            stamp = parse_time_or_none(old.get("lastTransitionTime"))
            return stamp if stamp is not None else now
    return now


def recommend(
    config: AutoScalingConfig,
    usage: UsageSummary,
    current: Resources,
    now: datetime,
    *,
    original: Resources | None = None,
    max_allowed: ResourceValues | None = None,
    replicas: ReplicaState | None = None,
    previous: PreviousStatus | None = None,
    tz: tzinfo = UTC,
    estimates: Estimates | None = None,
) -> Recommendation:
    """Recommend resources and replicas for one workload.

    ``current`` is what the workers run with now (the last applied
    recommendation, else the spec); ``original`` is the spec's resources,
    restored when a cron rule ends (defaults to ``current``); ``max_allowed``
    is the per-GPU ceiling for scale-ups; ``previous`` carries the last
    status's active rule and conditions; cron expressions are read in ``tz``.
    ``estimates`` skips the estimators when the caller already has them (for
    instance from :func:`tfsched.autoscale.bank.estimate_all` for many workloads).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    previous = previous or PreviousStatus()
    current_amounts = ResourceAmounts.from_model(current)
    original_amounts = ResourceAmounts.from_model(original) if original is not None else current_amounts

    if estimates is None:
        estimates = estimate(config.auto_set_resources, usage)
    vertical = decide_vertical(config.auto_set_resources, estimates, current_amounts)
    cron = evaluate_rules(config.cron_scaling_rules, now, tz)

    active = cron.active
    cron_floor: ResourceAmounts | None = None
    cron_proposal: ResourceAmounts | None = None
    ended: CronScalingRule | None = None
    if active is not None:
        desired = ResourceAmounts.from_model(active.desired_resources) if active.desired_resources else None
        cron_floor = desired
        if previous.active_cron_rule != active:
            cron_proposal = desired
    elif previous.active_cron_rule is not None and cron.error is None:
        ended = previous.active_cron_rule
        cron_proposal = original_amounts

    cap = Amounts.from_values(max_allowed) if max_allowed is not None else None
    merged = merge_resources(
        current_amounts,
        vertical=vertical.proposals,
        cron_proposal=cron_proposal,
        cron_floor=cron_floor,
        max_allowed=cap,
    )
    applicable = merge_resources(
        current_amounts,
        vertical=vertical.proposals if vertical.applies else None,
        cron_proposal=cron_proposal,
        cron_floor=cron_floor,
        max_allowed=cap,
    )
    to_apply = applicable.resources if applicable.resources != current_amounts else None

    replica_decision = recommend_replicas(
        config.auto_set_replicas,
        replicas,
        now,
        cron_desired=active.desired_replicas if active is not None else None,
        cron_rule=active.name if active is not None else None,
    )

    parts: list[str] = []
    reason: str | None = None
    status = "True"
    if cron.error is not None:
        parts.append(cron.error)
        reason, status = REASON_CRON_RULE_CONFLICT, "False"
    elif active is not None:
        parts.append(f'Cron scaling rule "{active.name}" is active')
        reason = REASON_RULE_ACTIVE
    elif ended is not None:
        parts.append(f'Cron scaling rule "{ended.name}" is inactive')
        reason = REASON_RULE_INACTIVE
    if vertical.message:
        parts.append(vertical.message)
        reason = reason or REASON_OUT_OF_ESTIMATED_BOUND
    parts.extend(merged.messages)

    conditions: tuple[Condition, ...] = ()
    if reason is not None:
        conditions = (
            Condition(
                type=CONDITION_RECOMMENDATION_PROVIDED,
                status=status,
                reason=reason,
                message=", ".join(parts),
                last_transition_time=transition_time(
                    previous.conditions, CONDITION_RECOMMENDATION_PROVIDED, status, now
                ),
            ),
        )

    return Recommendation(
        estimates=estimates,
        vertical=vertical,
        cron=cron,
        current=current_amounts,
        resources=merged.resources,
        to_apply=to_apply,
        replicas=replica_decision,
        conditions=conditions,
        mode=resources_mode(config.auto_set_resources),
    )
