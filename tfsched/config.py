"""The ``tfsched serve --config`` file: a ``scheduling`` and an ``autoscaling`` section."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoscale.settings import AutoscaleSettings
from extender.config import SchedulingConfig


class ConfigError(ValueError):
    """The message names the file and the field."""


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheduling: SchedulingConfig = Field(default_factory=SchedulingConfig)
    autoscaling: AutoscaleSettings = Field(default_factory=AutoscaleSettings)


def load_config(path: Path | None) -> ServeConfig:
    if path is None:
        return ServeConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {field}: {first['msg']}") from None
