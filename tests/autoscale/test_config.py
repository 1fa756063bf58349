"""autoScalingConfig models: defaults, spellings, output names, errors that name the field."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from pydantic import ValidationError

from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, AutoSetReplicas, AutoSetResources, Resources
from tfsched.clustermodel.times import format_go_duration, parse_go_duration
from tfsched.clustermodel.yamlfile import FORBID_UNKNOWN_KEYS

SEED_YAML = """
autoScalingConfig:
  autoSetResources:
    enable: true
    targetResource: all
    targetTflopsPercentile: 0.9
    lowerBoundTflopsPercentile: 0.5
    upperBoundTflopsPercentile: 0.95
    targetVramPercentile: 0.9
    lowerBoundVramPercentile: 0.5
    upperBoundVramPercentile: 0.95
    requestMarginFraction: 0.15
    confidenceInterval: 24h
  autoSetReplicas: {}
  cronScalingRules:
    - enable: true
      name: "test"
      start: "0 0 * * Thu"
      end: "59 23 * * Thu"
      desiredResources:
        limits:
          tflops: "99"
          vram: 10Gi
        requests:
          tflops: "44"
          vram: 5Gi
"""


def error_locations(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in exc.errors()]


def test_seed_example_parses_and_round_trips() -> None:
    config = AutoScalingConfig.model_validate(yaml.safe_load(SEED_YAML)["autoScalingConfig"])
    asr = config.auto_set_resources
    assert asr.enable and asr.target_resource == "all" and asr.applies
    assert asr.confidence_interval == timedelta(hours=24)
    rule = config.cron_scaling_rules[0]
    assert rule.desired_resources is not None
    assert rule.desired_resources.requests.tflops == 44.0
    assert rule.desired_resources.limits.vram == 10 * 2**30
    out = config.to_dict()
    assert out["autoSetResources"]["targetTflopsPercentile"] == 0.9
    assert out["autoSetResources"]["confidenceInterval"] == "24h"
    assert out["cronScalingRules"][0]["desiredResources"] == {
        "requests": {"tflops": "44", "vram": "5Gi"},
        "limits": {"tflops": "99", "vram": "10Gi"},
    }
    assert AutoScalingConfig.model_validate(out) == config


def test_defaults() -> None:
    asr = AutoSetResources()
    assert (asr.target_tflops_percentile, asr.lower_bound_tflops_percentile, asr.upper_bound_tflops_percentile) == (
        0.9,
        0.5,
        0.95,
    )
    assert (asr.target_vram_percentile, asr.lower_bound_vram_percentile, asr.upper_bound_vram_percentile) == (
        0.9,
        0.5,
        0.95,
    )
    assert asr.request_margin_fraction == 0.15
    assert asr.confidence_interval == timedelta(hours=24)
    assert not asr.enable and asr.target_resource == "" and not asr.applies
    assert asr.max_step_fraction is None
    config = AutoScalingConfig.model_validate({"autoSetResources": None, "cronScalingRules": None})
    assert config.cron_scaling_rules == []


@pytest.mark.parametrize("key", ["targettflopspercentile", "targetTFlopsPercentile", "TargetTflopsPercentile"])
def test_upstream_spellings_are_accepted_and_camel_case_is_emitted(key: str) -> None:
    asr = AutoSetResources.model_validate({key: "0.8", "requestmarginfraction": "0.2", "confidenceinterval": "1h"})
    assert asr.target_tflops_percentile == 0.8
    assert asr.request_margin_fraction == 0.2
    out = asr.to_dict()
    assert out["targetTflopsPercentile"] == 0.8
    assert "targettflopspercentile" not in out
    assert out["confidenceInterval"] == "1h"


def test_target_resource_is_normalised() -> None:
    assert AutoSetResources(target_resource="TFLOPS").target_resource == "tflops"
    assert AutoSetResources(target_resource="compute").target_resource == "tflops"
    assert AutoSetResources.model_validate({"targetResource": None}).target_resource == ""
    asr = AutoSetResources(target_resource="vram")
    assert asr.targets("vram") and not asr.targets("tflops")
    assert AutoSetResources().targets("tflops") and AutoSetResources().targets("vram")


@pytest.mark.parametrize(
    ("data", "location", "text"),
    [
        (
            {"autoSetResources": {"targetTflopsPercentile": 1.5}},
            "autoSetResources.targetTflopsPercentile",
            "between 0 and 1",
        ),
        (
            {"autoSetResources": {"lowerBoundVramPercentile": -0.1}},
            "autoSetResources.lowerBoundVramPercentile",
            "between 0 and 1",
        ),
        (
            {"autoSetResources": {"upperBoundTflopsPercentile": "abc"}},
            "autoSetResources.upperBoundTflopsPercentile",
            "number",
        ),
        ({"autoSetResources": {"lowerBoundTflopsPercentile": 0.95}}, "autoSetResources", "lowerBoundTflopsPercentile"),
        ({"autoSetResources": {"upperBoundVramPercentile": 0.8}}, "autoSetResources", "targetVramPercentile"),
        ({"autoSetResources": {"confidenceInterval": "1 day"}}, "autoSetResources.confidenceInterval", "duration"),
        ({"autoSetResources": {"confidenceInterval": "0s"}}, "autoSetResources.confidenceInterval", "positive"),
        ({"autoSetResources": {"targetResource": "gpu"}}, "autoSetResources.targetResource", "all, tflops or vram"),
        ({"autoSetResources": {"requestMarginFraction": -1}}, "autoSetResources.requestMarginFraction", "negative"),
        ({"autoSetReplicas": {"evaluationPeriod": "soon"}}, "autoSetReplicas.evaluationPeriod", "duration"),
        ({"autoSetReplicas": {"targetTFlopsOfLimits": 150}}, "autoSetReplicas.targetTFlopsOfLimits", "percentage"),
        ({"autoSetReplicas": {"scaleUpStep": 0}}, "autoSetReplicas.scaleUpStep", "at least 1"),
        ({"autoSetReplicas": {"scaleDownStep": "x%"}}, "autoSetReplicas.scaleDownStep", "number"),
        ({"autoSetReplicas": {"minReplicas": 4, "maxReplicas": 2}}, "autoSetReplicas", "maxReplicas"),
        ({"cronScalingRules": [{"start": "61 * * * *", "end": "0 0 * * *"}]}, "cronScalingRules.0.start", "cron"),
        ({"cronScalingRules": [{"start": "0 0 * * *", "end": "0 0 * * * *"}]}, "cronScalingRules.0.end", "five fields"),
        (
            {"cronScalingRules": [{"start": "0 0 31 2 *", "end": "0 0 * * *"}]},
            "cronScalingRules.0.start",
            "never fires",
        ),
        ({"cronScalingRules": [{"start": "0 0 * * *", "end": "0  0 * * *"}]}, "cronScalingRules.0", "start and end"),
        (
            {
                "cronScalingRules": [
                    {"start": "0 0 * * *", "end": "1 0 * * *", "desiredResources": {"requests": {"vram": "5Gx"}}}
                ]
            },
            "cronScalingRules.0.desiredResources.requests.vram",
            "invalid quantity",
        ),
    ],
)
def test_errors_name_the_field(data: dict, location: str, text: str) -> None:
    with pytest.raises(ValidationError) as info:
        AutoScalingConfig.model_validate(data)
    assert location in error_locations(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("2h45m30s", timedelta(hours=2, minutes=45, seconds=30)),
        ("0", timedelta(0)),
        ("-5m", timedelta(minutes=-5)),
    ],
)
def test_go_durations(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "1d", "h", "1h 30m", "5 minutes", "-"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_every_duration_field_reads_days_alike() -> None:
    """One duration rule for the CRD and for tfsched's own config: ``1d`` means a day everywhere."""
    from tfsched.autoscale.prometheus import MetricsConfig
    from tfsched.autoscale.settings import AutoscaleSettings

    day = timedelta(days=1)
    assert AutoSetResources.model_validate({"confidenceInterval": "1d"}).confidence_interval == day
    assert AutoSetReplicas.model_validate({"evaluationPeriod": "1d"}).evaluation_period == day
    assert AutoSetReplicas.model_validate({"scaleDownCoolDownTime": "1d"}).scale_down_cool_down_time == day
    settings = AutoscaleSettings.model_validate(
        {
            "interval": "1d",
            "checkpointInterval": "1d",
            "evictionInterval": "1d",
        }
    )
    assert (settings.interval, settings.checkpoint_interval, settings.eviction_interval) == (day, day, day)
    from tfsched.config import ServeConfig

    assert ServeConfig.model_validate({"leaderElection": {"leaseDuration": "1d"}}).leader_election.lease_duration == day
    assert MetricsConfig.model_validate({"historyLength": "1d", "step": "1d"}).history_length == day


def test_duration_output() -> None:
    assert format_go_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert format_go_duration(timedelta(milliseconds=500)) == "500ms"
    assert format_go_duration(timedelta(seconds=90)) == "1m30s"
    assert format_go_duration(timedelta(0)) == "0s"


def test_replica_defaults_and_steps() -> None:
    r = AutoSetReplicas()
    assert (r.target_tflops_of_limits, r.scale_up_step, r.scale_down_step, r.min_replicas, r.max_replicas) == (
        80.0,
        "100%",
        "50%",
        1,
        None,
    )
    assert AutoSetReplicas.model_validate({"targetTFlopsOfLimits": "75%", "scaleUpStep": "3"}).scale_up_step == 3
    assert AutoSetReplicas.model_validate({"targetTFlopsOfLimits": "75%"}).target_tflops_of_limits == 75.0


def test_resources_fill_the_missing_side_and_format_quantities() -> None:
    only_limits = Resources.model_validate({"limits": {"tflops": "500m", "vram": "1.5Gi"}})
    assert only_limits.requests == only_limits.limits
    assert only_limits.requests.tflops == 0.5
    assert only_limits.to_dict() == {
        "requests": {"tflops": "500m", "vram": "1536Mi"},
        "limits": {"tflops": "500m", "vram": "1536Mi"},
    }
    with pytest.raises(ValidationError):
        Resources.model_validate({"requests": {"tflops": "-1"}})


def test_unknown_keys_are_ignored() -> None:
    config = AutoScalingConfig.model_validate({"autoSetResources": {"historyLength": "2d", "somethingNew": 1}})
    assert config.auto_set_resources.history_length == "2d"


def test_unknown_keys_are_errors_in_files() -> None:
    with pytest.raises(ValidationError) as info:
        AutoScalingConfig.model_validate(
            {"autoSetResources": {"somethingNew": 1}, "cronScalingRules": [{"nmae": "x"}]}, context=FORBID_UNKNOWN_KEYS
        )
    assert {(".".join(map(str, e["loc"])), e["type"]) for e in info.value.errors()} == {
        ("autoSetResources.somethingNew", "extra_forbidden"),
        ("cronScalingRules.0.nmae", "extra_forbidden"),
    }


def test_newer_upstream_names_mean_the_same_fields() -> None:
    config = AutoScalingConfig.model_validate(
        {
            "autoSetResources": {
                "targetComputePercentile": "0.8",
                "lowerBoundComputePercentile": "0.4",
                "upperBoundComputePercentile": "0.99",
                "targetVRAMPercentile": "0.7",
                "marginFraction": "0.2",
                "targetResource": "compute",
            }
        },
        context=FORBID_UNKNOWN_KEYS,
    ).auto_set_resources
    assert (config.target_tflops_percentile, config.lower_bound_tflops_percentile) == (0.8, 0.4)
    assert (config.upper_bound_tflops_percentile, config.target_vram_percentile) == (0.99, 0.7)
    assert config.request_margin_fraction == 0.2 and config.target_resource == "tflops"
    assert "targetTflopsPercentile" in config.to_dict() and "targetComputePercentile" not in config.to_dict()
