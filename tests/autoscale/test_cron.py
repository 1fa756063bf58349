"""Cron rules: windows, time zones, conflicts, and what they do to the recommendation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from tfsched.autoscale.cron import MULTIPLE_ACTIVE_ERROR, evaluate_rules, is_active
from tfsched.autoscale.recommend import PreviousStatus, recommend
from tfsched.autoscale.usage import WorkloadUsage
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, CronScalingRule, Resources, ResourceValues

# 2025-10-09 is a Thursday.
THURSDAY = datetime(2025, 10, 9, 9, 16, 46, tzinfo=UTC)
SEED_RULE = {
    "enable": True,
    "name": "test",
    "start": "0 0 * * Thu",
    "end": "59 23 * * Thu",
    "desiredResources": {
        "limits": {"tflops": "99", "vram": "10Gi"},
        "requests": {"tflops": "44", "vram": "5Gi"},
    },
}
ORIGINAL = Resources.model_validate(
    {"requests": {"tflops": "10", "vram": "2Gi"}, "limits": {"tflops": "20", "vram": "4Gi"}}
)


def rule(**overrides: object) -> CronScalingRule:
    return CronScalingRule.model_validate({**SEED_RULE, **overrides})


def test_seed_rule_is_active_on_thursday_only() -> None:
    r = rule()
    assert is_active(r, THURSDAY)
    assert not is_active(r, THURSDAY - timedelta(days=1))
    assert not is_active(r, THURSDAY + timedelta(days=1))


def test_window_is_start_inclusive_end_exclusive() -> None:
    r = rule()
    start = datetime(2025, 10, 9, 0, 0, tzinfo=UTC)
    end = datetime(2025, 10, 9, 23, 59, tzinfo=UTC)
    assert is_active(r, start)
    assert not is_active(r, start - timedelta(seconds=1))
    assert is_active(r, end - timedelta(seconds=1))
    assert not is_active(r, end)


def test_window_across_midnight() -> None:
    r = rule(start="0 22 * * *", end="0 2 * * *")
    assert is_active(r, datetime(2025, 10, 9, 23, 0, tzinfo=UTC))
    assert is_active(r, datetime(2025, 10, 10, 1, 59, tzinfo=UTC))
    assert not is_active(r, datetime(2025, 10, 10, 2, 0, tzinfo=UTC))
    assert not is_active(r, datetime(2025, 10, 10, 12, 0, tzinfo=UTC))


def test_time_zone_is_explicit() -> None:
    r = rule(start="0 9 * * *", end="0 17 * * *")
    # 08:00 UTC is 10:00 in Berlin (CEST): inside the Berlin window, outside the UTC one.
    now = datetime(2025, 10, 9, 8, 0, tzinfo=UTC)
    assert not is_active(r, now)
    assert is_active(r, now, ZoneInfo("Europe/Berlin"))


def test_disabled_or_incomplete_rules_do_not_count() -> None:
    rules = [rule(enable=False), rule(name=""), CronScalingRule(enable=True, name="x", start="0 0 * * *")]
    assert evaluate_rules(rules, THURSDAY).active is None
    assert evaluate_rules([], THURSDAY).active is None


def test_more_than_one_active_rule_is_an_error() -> None:
    result = evaluate_rules([rule(name="a"), rule(name="b")], THURSDAY)
    assert result.active is None
    assert result.error is not None and result.error.startswith(MULTIPLE_ACTIVE_ERROR)
    assert '"a", "b"' in result.error


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("-30 0 * * *", "59 23 * * *"),
        ("30 0 * * *", "59 -23 * * *"),
        ("30 0 * * *", "59 23 * -3 *"),
        ("30 0 * * *", "30 0 * * *"),
    ],
)
def test_invalid_or_identical_expressions_are_rejected(start: str, end: str) -> None:
    with pytest.raises(ValidationError):
        rule(start=start, end=end)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError):
        is_active(rule(), datetime(2025, 10, 9))


def cron_config(**rule_overrides: object) -> AutoScalingConfig:
    return AutoScalingConfig.model_validate({"cronScalingRules": [{**SEED_RULE, **rule_overrides}]})


def test_desired_resources_apply_while_active() -> None:
    result = recommend(cron_config(), WorkloadUsage(), ORIGINAL, THURSDAY, original=ORIGINAL)
    status = result.to_status()
    assert status["recommendation"] == {
        "requests": {"tflops": "44", "vram": "5Gi"},
        "limits": {"tflops": "99", "vram": "10Gi"},
    }
    assert status["activeCronScalingRule"]["name"] == "test"
    assert status["activeCronScalingRule"]["desiredResources"]["requests"] == {"tflops": "44", "vram": "5Gi"}
    [condition] = status["conditions"]
    assert condition["reason"] == "RuleActive"
    assert condition["message"] == 'Cron scaling rule "test" is active'
    assert condition["lastTransitionTime"] == "2025-10-09T09:16:46Z"
    # Cron rules apply on their own, without autoSetResources.
    assert result.to_apply == result.resources


def test_resources_revert_to_the_original_when_the_rule_ends() -> None:
    active = recommend(cron_config(), WorkloadUsage(), ORIGINAL, THURSDAY, original=ORIGINAL)
    previous = PreviousStatus.from_status(active.to_status())
    friday = THURSDAY + timedelta(days=1)
    ended = recommend(
        cron_config(), WorkloadUsage(), active.resources_model, friday, original=ORIGINAL, previous=previous
    )
    status = ended.to_status()
    assert status["recommendation"] == {
        "requests": {"tflops": "10", "vram": "2Gi"},
        "limits": {"tflops": "20", "vram": "4Gi"},
    }
    assert status["activeCronScalingRule"] is None
    [condition] = status["conditions"]
    assert condition["reason"] == "RuleInactive"
    assert condition["message"] == 'Cron scaling rule "test" is inactive'


def test_rule_already_applied_is_not_proposed_again_but_floors() -> None:
    first = recommend(cron_config(), WorkloadUsage(), ORIGINAL, THURSDAY, original=ORIGINAL)
    previous = PreviousStatus.from_status(first.to_status())
    # Someone lowered the workload below the rule during the window: the floor lifts it back.
    lowered = ORIGINAL
    again = recommend(
        cron_config(), WorkloadUsage(), lowered, THURSDAY + timedelta(hours=1), original=ORIGINAL, previous=previous
    )
    assert again.resources == first.resources
    # The transition time of an unchanged condition is kept.
    assert again.conditions[0].last_transition_time == THURSDAY


def test_cron_replicas_win_while_active() -> None:
    result = recommend(cron_config(desiredReplicas=5), WorkloadUsage(), ORIGINAL, THURSDAY, original=ORIGINAL)
    assert result.to_status()["desiredReplicas"] == 5


def test_max_allowed_caps_a_cron_scale_up() -> None:
    config = cron_config(
        desiredResources={"requests": {"tflops": "200", "vram": "200Gi"}, "limits": {"tflops": "400", "vram": "400Gi"}}
    )
    cap = ResourceValues(tflops=100, vram=100 * 2**30)
    result = recommend(config, WorkloadUsage(), ORIGINAL, THURSDAY, original=ORIGINAL, max_allowed=cap)
    status = result.to_status()
    assert status["recommendation"] == {
        "requests": {"tflops": "100", "vram": "100Gi"},
        "limits": {"tflops": "200", "vram": "200Gi"},
    }
    assert status["conditions"][0]["message"] == (
        'Cron scaling rule "test" is active, TFlops request set to max allowed: (100), '
        "VRAM request set to max allowed: (100Gi)"
    )


def test_conflicting_rules_give_a_false_condition() -> None:
    config = AutoScalingConfig.model_validate(
        {"cronScalingRules": [{**SEED_RULE, "name": "a"}, {**SEED_RULE, "name": "b"}]}
    )
    result = recommend(config, WorkloadUsage(), ORIGINAL, THURSDAY)
    [condition] = result.to_status()["conditions"]
    assert condition["status"] == "False"
    assert condition["reason"] == "CronScalingRuleConflict"
    assert result.resources == result.current
