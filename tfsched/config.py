"""The ``tfsched serve --config`` file: ``scheduling``, ``autoscaling``, ``leaderElection``,
``webhook``, ``metrics`` and ``gpuStatus`` sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tfsched.allocation.config import SchedulingConfig
from tfsched.autoscale.settings import AutoscaleSettings
from tfsched.clustermodel.yamlfile import load_yaml_model
from tfsched.extender.upkeep import GPU_STATUS_BURST, GPU_STATUS_QPS
from tfsched.extender.webhook import DEFAULT_WEBHOOK_SCHEDULER
from tfsched.kubeapi.leader import LeaderElectionSettings


class WebhookSettings(BaseModel):
    """The mutating admission webhook (``serve --webhook-port``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # The second scheduler GPU pods are sent to; bind must serve it (scheduling.schedulerNames).
    scheduler_name: str = Field(DEFAULT_WEBHOOK_SCHEDULER, alias="schedulerName", min_length=1)


class MetricsSettings(BaseModel):
    """What ``/metrics`` exports beyond the fixed families (extender.metrics)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # Five series per GPU (allocated / available TFLOPS and VRAM, pods); per-node series stay.
    # At 40,000 GPUs they are 200,000 lines and 15 MB per scrape.
    per_gpu: bool = Field(True, alias="perGPU")


class GpuStatusSettings(BaseModel):
    """How fast the leader writes GPU status (``status.available``, ``runningApps``): at
    most ``qps`` patches a second, ``burst`` at once, as a Kubernetes client's QPS and
    burst. A new leader checks every GPU once; where its predecessor left a status
    behind, the pass writes at this pace (at 50 a second, 10,000 stale GPUs take 200 s)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    qps: float = Field(GPU_STATUS_QPS, gt=0, le=100_000)
    burst: int = Field(GPU_STATUS_BURST, ge=1, le=100_000)


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    scheduling: SchedulingConfig = Field(default_factory=SchedulingConfig)
    autoscaling: AutoscaleSettings = Field(default_factory=AutoscaleSettings)
    # Which instance binds, resizes and evicts: one at a time.
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings, alias="leaderElection")
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    gpu_status: GpuStatusSettings = Field(default_factory=GpuStatusSettings, alias="gpuStatus")


def load_config(path: Path | None) -> ServeConfig:
    """Raises :class:`tfsched.clustermodel.yamlfile.YamlFileError` naming the field."""
    return ServeConfig() if path is None else load_yaml_model(path, ServeConfig)
