"""The cluster spec file (``examples/cluster.yaml``): groups of identical fake GPU nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from tfsched.clustermodel.objects import Obj, gpu_object, node_object
from tfsched.clustermodel.quantity import parse_quantity
from tfsched.clustermodel.yamlfile import load_yaml_model

Quantity = Annotated[float, BeforeValidator(parse_quantity)]


class GPUGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    count: int = Field(ge=0, le=128)
    model: str = "A100"
    vendor: str = "NVIDIA"
    tflops: Quantity
    vram: Quantity
    pool: str = "default"


class NodeGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name_prefix: str = Field(alias="namePrefix", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    count: int = Field(ge=1, le=10000)
    gpus: GPUGroup
    cpu: str = "64"
    memory: str = "512Gi"
    pods: int = Field(110, ge=1)


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[NodeGroup]

    def objects(self) -> tuple[list[Obj], list[Obj]]:
        """(Node objects, GPU objects) for every node of every group."""
        nodes: list[Obj] = []
        gpus: list[Obj] = []
        for group in self.nodes:
            for i in range(group.count):
                name = f"{group.name_prefix}-{i}"
                nodes.append(
                    node_object(name, cpu=group.cpu, memory=group.memory, pods=group.pods, gpus=group.gpus.count)
                )
                g = group.gpus
                gpus.extend(
                    gpu_object(name, j, tflops=g.tflops, vram=g.vram, model=g.model, vendor=g.vendor, pool=g.pool)
                    for j in range(g.count)
                )
        return nodes, gpus


def load_spec(path: Path) -> ClusterSpec:
    """Raises :class:`tfsched.clustermodel.yamlfile.YamlFileError` naming the field."""
    return load_yaml_model(path, ClusterSpec)
