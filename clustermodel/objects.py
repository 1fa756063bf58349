"""Constructors for the Kubernetes objects tfsched deals in: kubelet-less GPU
nodes with their GPU objects, and TensorFusion pods.

The local devcluster creates its fake nodes with these; tests and benchmarks
build snapshots with them, so all three describe a GPU node the same way.
"""

from __future__ import annotations

from typing import Any

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.quantity import format_bytes, format_tflops

Obj = dict[str, Any]


def node_object(name: str, *, cpu: str = "64", memory: str = "512Gi", pods: int = 110, gpus: int = 0) -> Obj:
    """A Ready node that advertises ``gpus`` of the managed extended resource."""
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods), ann.MANAGED_RESOURCE: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {ann.HOSTNAME_LABEL: name, "kubernetes.io/os": "linux"}},
        "spec": {},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake node"}],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64", "operatingSystem": "linux"},
        },
    }


def gpu_name(node: str, index: int) -> str:
    return f"{node}-gpu-{index}"


def gpu_object(
    node: str,
    index: int,
    *,
    tflops: float,
    vram: float,
    model: str = "A100",
    vendor: str = "NVIDIA",
    pool: str = "default",
    phase: str = "Running",
) -> Obj:
    name = gpu_name(node, index)
    capacity = {"tflops": format_tflops(tflops), "vram": format_bytes(vram)}
    return {
        "apiVersion": ann.GROUP_VERSION,
        "kind": ann.GPU_KIND,
        "metadata": {"name": name, "labels": {ann.GPU_POOL: pool, ann.HOSTNAME_LABEL: node}},
        "status": {
            "capacity": capacity,
            "available": dict(capacity),
            "uuid": f"GPU-{name}",
            "gpuModel": model,
            "vendor": vendor,
            "index": index,
            "phase": phase,
            "nodeSelector": {ann.HOSTNAME_LABEL: node},
        },
    }


def gpu_pod(
    name: str,
    *,
    namespace: str = "default",
    tflops: str | None = None,
    vram: str | None = None,
    tflops_limit: str | None = None,
    vram_limit: str | None = None,
    gpu_count: int | None = None,
    extra_annotations: dict[str, str] | None = None,
    node: str | None = None,
    gpu_ids: list[str] | None = None,
    uid: str | None = None,
    image: str = "registry.k8s.io/pause:3.10",
) -> Obj:
    """A pod with TensorFusion annotations and one unit of the managed resource,
    so kube-scheduler sends it to the extender."""
    annotations: dict[str, str] = {}
    for key, value in (
        (ann.TFLOPS_REQUEST, tflops),
        (ann.TFLOPS_LIMIT, tflops_limit),
        (ann.VRAM_REQUEST, vram),
        (ann.VRAM_LIMIT, vram_limit),
    ):
        if value is not None:
            annotations[key] = value
    if gpu_count is not None:
        annotations[ann.GPU_COUNT] = str(gpu_count)
    if gpu_ids:
        annotations[ann.GPU_IDS] = ",".join(gpu_ids)
    annotations.update(extra_annotations or {})
    pod: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "resources": {
                        "limits": {ann.MANAGED_RESOURCE: ann.MANAGED_RESOURCE_QUANTITY},
                        "requests": {ann.MANAGED_RESOURCE: ann.MANAGED_RESOURCE_QUANTITY},
                    },
                }
            ],
        },
        "status": {"phase": "Running" if node else "Pending"},
    }
    if uid:
        pod["metadata"]["uid"] = uid
    if node:
        pod["spec"]["nodeName"] = node
    return pod
