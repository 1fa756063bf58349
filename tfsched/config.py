"""The ``tfsched serve --config`` file: a ``scheduling`` and an ``autoscaling`` section."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tfsched.allocation.config import SchedulingConfig
from tfsched.autoscale.settings import AutoscaleSettings
from tfsched.clustermodel.yamlfile import load_yaml_model


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheduling: SchedulingConfig = Field(default_factory=SchedulingConfig)
    autoscaling: AutoscaleSettings = Field(default_factory=AutoscaleSettings)


def load_config(path: Path | None) -> ServeConfig:
    """Raises :class:`tfsched.clustermodel.yamlfile.YamlFileError` naming the field."""
    return ServeConfig() if path is None else load_yaml_model(path, ServeConfig, "tfsched config")
