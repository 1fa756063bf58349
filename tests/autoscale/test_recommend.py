"""recommend(): merging vertical and cron, what gets applied, and the status it renders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tfsched.autoscale.bank import UsageBank, estimate_all
from tfsched.autoscale.estimators import Amounts, ResourceAmounts
from tfsched.autoscale.merge import merge_resources
from tfsched.autoscale.recommend import PreviousStatus, recommend
from tfsched.autoscale.replicas import ReplicaState
from tfsched.autoscale.usage import WorkloadUsage
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, Resources, ResourceValues
from tfsched.clustermodel.times import to_unix_ns
from tfsched.clustermodel.workload import resources_mode

GI = 2**30
NOW = datetime(2025, 10, 9, 9, 16, 46, tzinfo=UTC)  # a Thursday


def constant_usage(tflops: float, vram: float, days: int = 2) -> WorkloadUsage:
    usage = WorkloadUsage()
    start = NOW - timedelta(days=days)
    for minute in range(days * 1440):
        usage.add_sample("w0", start + timedelta(minutes=minute), tflops, vram)
    return usage


def resources(tflops: tuple[str, str], vram: tuple[str, str]) -> Resources:
    return Resources.model_validate(
        {"requests": {"tflops": tflops[0], "vram": vram[0]}, "limits": {"tflops": tflops[1], "vram": vram[1]}}
    )


def test_merge_larger_request_wins_and_floor_holds() -> None:
    current = ResourceAmounts(Amounts(10_000, 4 * GI), Amounts(20_000, 8 * GI))
    cron = ResourceAmounts(Amounts(44_000, 0), Amounts(99_000, 0))
    merged = merge_resources(
        current, vertical={"tflops": (50_000, 100_000), "vram": (2 * GI, 4 * GI)}, cron_proposal=cron
    )
    # TFLOPS: vertical 50 beats cron 44; VRAM: cron leaves it unspecified, vertical wins.
    assert merged.resources == ResourceAmounts(Amounts(50_000, 2 * GI), Amounts(100_000, 4 * GI))
    floor = ResourceAmounts(Amounts(44_000, 5 * GI), Amounts(99_000, 10 * GI))
    floored = merge_resources(current, vertical={"tflops": (5_000, 10_000), "vram": (2 * GI, 4 * GI)}, cron_floor=floor)
    assert floored.resources == floor
    untouched = merge_resources(current)
    assert untouched.resources == current and untouched.messages == ()


def test_cap_applies_to_scale_ups_only() -> None:
    current = ResourceAmounts(Amounts(50_000, 4 * GI), Amounts(100_000, 8 * GI))
    cap = Amounts(80_000, 6 * GI)
    up = merge_resources(current, vertical={"tflops": (120_000, 240_000)}, max_allowed=cap)
    assert up.resources.pair("tflops") == (80_000, 160_000)
    assert up.messages == ("TFlops request set to max allowed: (80)",)
    down = merge_resources(current, vertical={"vram": (2 * GI, 4 * GI)}, max_allowed=Amounts(1, 1))
    assert down.resources.pair("vram") == (2 * GI, 4 * GI) and down.messages == ()


def test_vertical_vram_is_a_whole_mi_and_cron_values_stay_exact() -> None:
    mi = 2**20
    current = ResourceAmounts(Amounts(10_000, 8 * GI), Amounts(20_000, 16 * GI))
    merged = merge_resources(current, vertical={"vram": (2539377048, 2 * 2539377048)})
    assert merged.resources.pair("vram") == (2422 * mi, 4844 * mi)  # rounded up, never down
    # The cap (a GPU's exact capacity) still bounds a rounded-up proposal.
    capped = merge_resources(current, vertical={"vram": (9 * GI - 5, 18 * GI)}, max_allowed=Amounts(1, 9 * GI - 7))
    assert capped.resources.pair("vram")[0] == 9 * GI - 7
    # What a person wrote (a cron rule's desiredResources) is taken as written.
    cron = ResourceAmounts(Amounts(0, 5_000_000_001), Amounts(0, 10_000_000_001))
    assert merge_resources(current, cron_proposal=cron).resources.pair("vram") == (5_000_000_001, 10_000_000_001)


def test_vertical_cannot_go_below_an_active_cron_rule() -> None:
    config = AutoScalingConfig.model_validate(
        {
            "autoSetResources": {"enable": True, "targetResource": "all"},
            "cronScalingRules": [
                {
                    "enable": True,
                    "name": "thursday",
                    "start": "0 0 * * Thu",
                    "end": "59 23 * * Thu",
                    "desiredResources": {
                        "requests": {"tflops": "44", "vram": "5Gi"},
                        "limits": {"tflops": "99", "vram": "10Gi"},
                    },
                }
            ],
        }
    )
    # Usage of 1 TFLOPS / 1Gi would scale far below the rule's 44 / 5Gi.
    usage = constant_usage(1.0, GI)
    previous = PreviousStatus(active_cron_rule=config.cron_scaling_rules[0])
    current = resources(("44", "99"), ("5Gi", "10Gi"))
    result = recommend(config, usage, current, NOW, previous=previous)
    assert result.vertical.proposals  # the vertical recommender wanted to scale down ...
    assert result.resources == result.current  # ... and the floor held.
    message = result.to_status()["conditions"][0]["message"]
    assert message.startswith(
        'Cron scaling rule "thursday" is active, TFLOPS scaled down due to (44) above upper bound'
    )


def test_recommend_only_reports_but_does_not_apply() -> None:
    config = AutoScalingConfig.model_validate({"autoSetResources": {"enable": True}})
    result = recommend(config, constant_usage(10.0, 8 * GI), resources(("100", "200"), ("40Gi", "80Gi")), NOW)
    assert result.changed
    assert result.to_apply is None
    assert result.to_status()["conditions"][0]["reason"] == "OutOfEstimatedBound"
    applying = AutoScalingConfig.model_validate({"autoSetResources": {"enable": True, "targetResource": "vram"}})
    applied = recommend(applying, constant_usage(10.0, 8 * GI), resources(("100", "200"), ("40Gi", "80Gi")), NOW)
    assert applied.to_apply is not None
    assert applied.to_apply.pair("tflops") == applied.current.pair("tflops")
    assert applied.to_apply.pair("vram") != applied.current.pair("vram")


def test_status_shape() -> None:
    config = AutoScalingConfig.model_validate({"autoSetReplicas": {"enable": True, "targetTFlopsOfLimits": 50}})
    result = recommend(
        config,
        constant_usage(10.0, 8 * GI),
        resources(("1", "2"), ("1Gi", "2Gi")),
        NOW,
        replicas=ReplicaState(current=2, observed_utilization=100.0),
    )
    status = result.to_status()
    assert set(status) == {"recommendation", "conditions", "activeCronScalingRule", "desiredReplicas", "mode"}
    assert status["mode"] == "recommend-only"  # autoSetResources is off
    assert set(status["recommendation"]) == {"requests", "limits"}
    assert set(status["recommendation"]["requests"]) == {"tflops", "vram"}
    assert status["desiredReplicas"] == 4
    [condition] = status["conditions"]
    assert set(condition) == {"type", "status", "reason", "message", "lastTransitionTime"}
    assert condition["type"] == "RecommendationProvided"
    assert condition["status"] == "True"
    assert condition["message"].startswith("TFLOPS scaled up due to (1) below lower bound (")
    assert ", VRAM scaled up due to (1Gi) below lower bound (" in condition["message"]


@pytest.mark.parametrize(
    ("auto", "mode"),
    [
        ({}, "recommend-only"),
        ({"enable": True}, "recommend-only"),  # no targetResource: recommend only
        ({"enable": False, "targetResource": "all"}, "recommend-only"),
        ({"enable": True, "targetResource": "all"}, "all"),
        ({"enable": True, "targetResource": "tflops"}, "tflops"),
        ({"enable": True, "targetResource": "vram"}, "vram"),
    ],
)
def test_status_mode_says_what_is_applied(auto: dict, mode: str) -> None:
    config = AutoScalingConfig.model_validate({"autoSetResources": auto})
    assert resources_mode(config.auto_set_resources) == mode
    result = recommend(config, constant_usage(10.0, 8 * GI), resources(("100", "200"), ("40Gi", "80Gi")), NOW)
    assert result.to_status()["mode"] == mode
    assert (result.to_apply is None) == (mode == "recommend-only")  # the mode is what the appliers do


def test_no_history_no_condition() -> None:
    result = recommend(AutoScalingConfig(), WorkloadUsage(), resources(("10", "10"), ("1Gi", "1Gi")), NOW)
    assert result.to_status()["conditions"] == []
    assert not result.changed


def test_previous_transition_time_is_kept_while_the_status_is_unchanged() -> None:
    earlier = "2025-10-01T00:00:00Z"
    previous = PreviousStatus.from_status(
        {"conditions": [{"type": "RecommendationProvided", "status": "True", "lastTransitionTime": earlier}]}
    )
    result = recommend(
        AutoScalingConfig(),
        constant_usage(10.0, 8 * GI),
        resources(("100", "100"), ("40Gi", "40Gi")),
        NOW,
        previous=previous,
    )
    assert result.to_status()["conditions"][0]["lastTransitionTime"] == earlier


def test_max_allowed_caps_vertical_scale_up() -> None:
    config = AutoScalingConfig.model_validate({"autoSetResources": {"enable": True, "targetResource": "tflops"}})
    cap = ResourceValues(tflops=5, vram=0)
    result = recommend(
        config, constant_usage(10.0, 8 * GI), resources(("1", "2"), ("1Gi", "2Gi")), NOW, max_allowed=cap
    )
    assert result.resources.pair("tflops") == (5_000, 10_000)
    assert result.to_status()["conditions"][0]["message"].endswith("TFlops request set to max allowed: (5)")


def test_precomputed_batch_estimates_give_the_same_recommendation() -> None:
    config = AutoScalingConfig.model_validate({"autoSetResources": {"enable": True, "targetResource": "all"}})
    usage = constant_usage(10.0, 8 * GI)
    bank = UsageBank()
    row = int(bank.add_workloads(1)[0])
    slot = bank.worker_slot(row, "w0")
    start = NOW - timedelta(days=2)
    times = [to_unix_ns(start + timedelta(minutes=m)) for m in range(2 * 1440)]
    bank.add_samples(np.full(len(times), slot), times, np.full(len(times), 10.0), np.full(len(times), 8.0 * GI))
    current = resources(("100", "200"), ("40Gi", "80Gi"))
    batch = estimate_all(bank, config.auto_set_resources).estimates(0)
    with_batch = recommend(config, bank.summary(row), current, NOW, estimates=batch)
    scalar = recommend(config, usage, current, NOW)
    assert with_batch.to_status() == scalar.to_status()
