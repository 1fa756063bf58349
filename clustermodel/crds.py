"""Typed views of tfsched's custom resources: GPU, TensorFusionWorkload, WorkloadProfile.

The CRD manifests live in the Helm chart, ``deploy/helm/tfsched/crds/`` (:func:`crd_paths`); these pydantic
models cover the parts the Python side reads.  Quantities become floats in base
units through :func:`tfsched.clustermodel.quantity.parse_quantity` (TFLOPS, bytes).
Field names follow the Kubernetes JSON (camelCase aliases); unknown fields are
ignored so newer upstream objects still parse.

The hot paths (the extender's cache) keep raw dicts; these models are for code
that wants validation more than speed: the autoscaler, the CLI and tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, CronScalingRule, Resources, ResourceValues
from tfsched.clustermodel.quantity import parse_quantity
from tfsched.clustermodel.workload import Condition, WorkloadStatus

__all__ = [
    "GPU",
    "AutoScalingConfig",
    "Condition",
    "CronScalingRule",
    "GPUResources",
    "GPUStatus",
    "ObjectMeta",
    "ResourceValues",
    "Resources",
    "RunningApp",
    "TensorFusionWorkload",
    "WorkloadProfile",
    "WorkloadSpec",
    "WorkloadStatus",
    "crd_dir",
    "crd_paths",
]

# --------------------------------------------------------------------------- #
# Manifests
# --------------------------------------------------------------------------- #

CRD_DIR_ENV = "TFSCHED_CRD_DIR"
CRD_FILES = (
    f"{ann.GPU_PLURAL}.{ann.API_GROUP}.yaml",
    f"{ann.WORKLOAD_PLURAL}.{ann.API_GROUP}.yaml",
    f"{ann.WORKLOAD_PROFILE_PLURAL}.{ann.API_GROUP}.yaml",
)


def crd_dir() -> Path:
    """The folder holding the CRD YAML files.

    ``$TFSCHED_CRD_DIR`` when set; otherwise the chart's ``crds/`` in the source
    tree this module sits in.  That works from a checkout and from an editable
    install (``pip install -e .``), not from a wheel, which does not carry the
    manifests; set the variable there.
    """
    override = os.environ.get(CRD_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "deploy" / "helm" / "tfsched" / "crds"


def crd_paths() -> list[Path]:
    """The GPU, TensorFusionWorkload and WorkloadProfile CRD manifests, in that order."""
    folder = crd_dir()
    paths = [folder / name for name in CRD_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"CRD manifests not found: {', '.join(missing)} (set ${CRD_DIR_ENV} to the folder holding them)"
        )
    return paths


# --------------------------------------------------------------------------- #
# Shared pieces
# --------------------------------------------------------------------------- #


def _quantity(value: Any) -> float:
    return parse_quantity(value)


Quantity = Annotated[float, BeforeValidator(_quantity)]
"""A Kubernetes quantity (``20``, ``500m``, ``10Gi``) read as a float in base units."""


class CRModel(BaseModel):
    """Base for the custom-resource models: camelCase aliases, unknown fields ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class ObjectMeta(CRModel):
    """The parts of ``metadata`` tfsched reads."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = Field("", alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- #
# GPU
# --------------------------------------------------------------------------- #

GPUPhase = Literal["Pending", "Provisioning", "Running", "Unknown", "Destroying", "Migrating"]
GPU_RUNNING: GPUPhase = "Running"


class GPUResources(CRModel):
    """TFLOPS and VRAM (bytes) of one GPU."""

    tflops: Quantity = 0.0
    vram: Quantity = 0.0


class RunningApp(CRModel):
    """A workload with workers on a GPU."""

    name: str = ""
    namespace: str = ""
    count: int = 0


class GPUStatus(CRModel):
    capacity: GPUResources = Field(default_factory=GPUResources)
    available: GPUResources = Field(default_factory=GPUResources)
    uuid: str = ""
    gpu_model: str = Field("", alias="gpuModel")
    vendor: str = ""
    index: int | None = None
    phase: GPUPhase = "Pending"
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    running_apps: list[RunningApp] = Field(default_factory=list, alias="runningApps")
    message: str = ""


class GPU(CRModel):
    """One physical GPU (cluster-scoped ``gpus.tensor-fusion.ai``)."""

    api_version: str = Field(ann.GROUP_VERSION, alias="apiVersion")
    kind: str = ann.GPU_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    status: GPUStatus = Field(default_factory=GPUStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def node(self) -> str:
        """The GPU's node: ``status.nodeSelector[kubernetes.io/hostname]``, else the same label."""
        return self.status.node_selector.get(ann.HOSTNAME_LABEL) or self.metadata.labels.get(ann.HOSTNAME_LABEL, "")

    @property
    def pool(self) -> str:
        """The GPU pool, from the ``tensor-fusion.ai/gpupool`` label ('' when unlabelled)."""
        return self.metadata.labels.get(ann.GPU_POOL, "")

    @property
    def model(self) -> str:
        return self.status.gpu_model

    @property
    def vendor(self) -> str:
        return self.status.vendor

    @property
    def index(self) -> int | None:
        return self.status.index

    @property
    def phase(self) -> GPUPhase:
        return self.status.phase

    @property
    def capacity(self) -> GPUResources:
        return self.status.capacity

    @property
    def available(self) -> GPUResources:
        return self.status.available

    @property
    def usable(self) -> bool:
        """Running and tied to a node: the extender may place pods on it."""
        return self.status.phase == GPU_RUNNING and bool(self.node)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> GPU:
        return cls.model_validate(obj)


# --------------------------------------------------------------------------- #
# TensorFusionWorkload and WorkloadProfile
# --------------------------------------------------------------------------- #

QoS = Literal["low", "medium", "high", "critical"]


class WorkloadSpec(CRModel):
    """The spec shared by TensorFusionWorkload and WorkloadProfile.

    ``resources`` and ``autoScalingConfig`` are the models of
    :mod:`tfsched.clustermodel.autoscaling_config` (which also accepts upstream's
    lower-case percentile spellings).
    """

    replicas: int | None = Field(None, ge=0)
    pool_name: str = Field("", alias="poolName")
    resources: Resources = Field(default_factory=Resources)
    qos: QoS | None = None
    gpu_model: str = Field("", alias="gpuModel")
    gpu_count: int = Field(1, alias="gpuCount", ge=1, le=128)
    is_local_gpu: bool = Field(False, alias="isLocalGPU")
    auto_scaling_config: AutoScalingConfig = Field(default_factory=AutoScalingConfig, alias="autoScalingConfig")


class TensorFusionWorkload(CRModel):
    """A namespaced ``tensorfusionworkloads.tensor-fusion.ai`` object."""

    api_version: str = Field(ann.GROUP_VERSION, alias="apiVersion")
    kind: str = ann.WORKLOAD_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: WorkloadSpec = Field(default_factory=WorkloadSpec)
    status: WorkloadStatus = Field(default_factory=WorkloadStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> TensorFusionWorkload:
        return cls.model_validate(obj)


class WorkloadProfile(CRModel):
    """A namespaced ``workloadprofiles.tensor-fusion.ai`` object: shared workload config."""

    api_version: str = Field(ann.GROUP_VERSION, alias="apiVersion")
    kind: str = ann.WORKLOAD_PROFILE_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: WorkloadSpec = Field(default_factory=WorkloadSpec)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> WorkloadProfile:
        return cls.model_validate(obj)
