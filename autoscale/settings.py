"""Settings of the autoscale loop (the ``autoscaling`` section of ``tfsched serve --config``)."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tfsched.autoscale.prometheus import MetricsConfig
from tfsched.clustermodel.times import PositiveDuration


class AutoscaleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    enabled: bool = True
    interval: PositiveDuration = timedelta(minutes=1)
    checkpoint_interval: PositiveDuration = Field(timedelta(minutes=5), alias="checkpointInterval")
    # One pod of a workload evicted at a time, and no more often than this.
    eviction_interval: PositiveDuration = Field(timedelta(seconds=30), alias="evictionInterval")
    time_zone: str = Field("UTC", alias="timeZone")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # Checked here so a typo fails at load, not when the loop starts (cron windows use it).
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: expected an IANA name such as UTC or Europe/Berlin"
            ) from None
        return value
