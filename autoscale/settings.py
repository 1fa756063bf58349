"""Settings of the autoscale loop (the ``autoscaling`` section of ``tfsched serve --config``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from tfsched.autoscale.prometheus import MetricsConfig
from tfsched.clustermodel.times import parse_positive_duration

Duration = Annotated[timedelta, BeforeValidator(parse_positive_duration)]


class LeaderElectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    enabled: bool = True
    namespace: str = "kube-system"
    lease_name: str = Field("tfsched-autoscaler", alias="leaseName")
    lease_duration: Duration = Field(timedelta(seconds=15), alias="leaseDuration")
    renew_every: Duration = Field(timedelta(seconds=5), alias="renewEvery")


class AutoscaleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    enabled: bool = True
    interval: Duration = timedelta(minutes=1)
    checkpoint_interval: Duration = Field(timedelta(minutes=5), alias="checkpointInterval")
    # One pod of a workload evicted at a time, and no more often than this.
    eviction_interval: Duration = Field(timedelta(seconds=30), alias="evictionInterval")
    time_zone: str = Field("UTC", alias="timeZone")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings, alias="leaderElection")
