"""Settings of the autoscale loop (the ``autoscaling`` section of ``tfsched serve --config``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

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
