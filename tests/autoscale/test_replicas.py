"""Replica recommendations: tolerance, ceil, steps, bounds, cool-downs, cron."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tfsched.autoscale.replicas import ReplicaState, observed_utilization, recommend_replicas, step_size
from tfsched.clustermodel.autoscaling_config import AutoSetReplicas

NOW = datetime(2025, 10, 9, 12, 0, tzinfo=UTC)


def config(**fields: object) -> AutoSetReplicas:
    return AutoSetReplicas.model_validate({"enable": True, "targetTFlopsOfLimits": 50, **fields})


def desired(cfg: AutoSetReplicas, current: int, utilization: float | None, **state: object) -> int:
    decision = recommend_replicas(cfg, ReplicaState(current, utilization, **state), NOW)
    assert decision is not None
    return decision.desired


def test_ceil_of_current_times_ratio() -> None:
    cfg = config(scaleUpStep=100, scaleDownStep=100)
    assert desired(cfg, 4, 80) == 7  # ceil(4 · 80/50) = ceil(6.4)
    assert desired(cfg, 4, 20) == 2  # ceil(1.6)
    assert desired(cfg, 3, 100) == 6


def test_tolerance_band_keeps_the_count() -> None:
    cfg = config()
    assert desired(cfg, 4, 54) == 4  # ratio 1.08
    assert desired(cfg, 4, 46) == 4  # ratio 0.92
    assert desired(cfg, 4, 56) == 5  # ratio 1.12 → ceil(4.48)
    decision = recommend_replicas(cfg, ReplicaState(4, 54), NOW)
    assert decision is not None and decision.reason == "WithinTolerance" and not decision.changes


def test_steps_limit_one_change() -> None:
    assert desired(config(scaleUpStep=2), 4, 200) == 6
    assert desired(config(scaleUpStep="50%"), 4, 200) == 6
    assert desired(config(scaleDownStep=1), 10, 5) == 9
    assert desired(config(scaleDownStep="50%"), 10, 5) == 5
    # Defaults: at most double, at most halve.
    assert desired(config(), 3, 500) == 6
    assert desired(config(), 10, 1) == 5
    assert step_size("10%", 3) == 1
    assert step_size(3, 100) == 3


def test_min_and_max_bound_the_result() -> None:
    assert desired(config(maxReplicas=5, scaleUpStep=100), 4, 200) == 5
    assert desired(config(minReplicas=3, scaleDownStep=100), 4, 1) == 3
    # Bounds apply even when nothing else would change.
    assert desired(config(minReplicas=6), 4, 50) == 6


def test_cool_downs_hold_the_count() -> None:
    cfg = config(scaleUpCoolDownTime="10m", scaleDownCoolDownTime="30m")
    assert desired(cfg, 4, 100, last_scale_up=NOW - timedelta(minutes=5)) == 4
    assert desired(cfg, 4, 100, last_scale_up=NOW - timedelta(minutes=11)) == 8
    # A recent scale-down does not block a scale-up.
    assert desired(cfg, 4, 100, last_scale_down=NOW - timedelta(minutes=1)) == 8
    # A scale-down waits for the last change in either direction.
    assert desired(cfg, 4, 10, last_scale_up=NOW - timedelta(minutes=20)) == 4
    assert desired(cfg, 4, 10, last_scale_down=NOW - timedelta(minutes=29)) == 4
    assert desired(cfg, 4, 10, last_scale_down=NOW - timedelta(minutes=31)) == 2
    decision = recommend_replicas(cfg, ReplicaState(4, 100, last_scale_up=NOW), NOW)
    assert decision is not None and decision.reason == "ScaleUpCoolDown"


def test_cron_desired_replicas_win() -> None:
    decision = recommend_replicas(config(maxReplicas=2), ReplicaState(4, 10), NOW, cron_desired=7, cron_rule="peak")
    assert decision is not None
    assert (decision.desired, decision.reason) == (7, "CronRuleActive")
    # Even with autoSetReplicas disabled.
    disabled = AutoSetReplicas(enable=False)
    decision = recommend_replicas(disabled, None, NOW, cron_desired=3, cron_rule="peak")
    assert decision is not None and decision.desired == 3


def test_disabled_or_unknown_state_gives_nothing() -> None:
    assert recommend_replicas(AutoSetReplicas(enable=False), ReplicaState(4, 90), NOW) is None
    assert recommend_replicas(config(), None, NOW) is None
    decision = recommend_replicas(config(), ReplicaState(4, None), NOW)
    assert decision is not None and decision.desired == 4 and decision.reason == "NoUtilization"


def test_zero_replicas_go_to_min_replicas() -> None:
    assert desired(config(minReplicas=2), 0, None) == 2


def test_observed_utilization() -> None:
    samples = [(NOW - timedelta(minutes=m), v) for m, v in ((1, 10.0), (2, 30.0), (10, 100.0))]
    assert observed_utilization(samples, 40.0, NOW, timedelta(minutes=5)) == 50.0
    assert observed_utilization(samples, 0.0, NOW, timedelta(minutes=5)) is None
    assert observed_utilization([], 40.0, NOW, timedelta(minutes=5)) is None
