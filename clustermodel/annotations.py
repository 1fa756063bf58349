"""TensorFusion annotation, label and API names: defined here once.

The names match TensorFusion (``tensor-fusion.ai/*``) so pods written for it
schedule through tfsched unchanged.
"""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "tensor-fusion.ai"
PREFIX: Final = f"{DOMAIN}/"

# What a pod asks for, per GPU.
TFLOPS_REQUEST: Final = PREFIX + "tflops-request"
TFLOPS_LIMIT: Final = PREFIX + "tflops-limit"
VRAM_REQUEST: Final = PREFIX + "vram-request"
VRAM_LIMIT: Final = PREFIX + "vram-limit"
COMPUTE_PERCENT_REQUEST: Final = PREFIX + "compute-percent-request"
COMPUTE_PERCENT_LIMIT: Final = PREFIX + "compute-percent-limit"
GPU_COUNT: Final = PREFIX + "gpu-count"

# Which GPUs qualify.
GPU_MODEL: Final = PREFIX + "gpu-model"
VENDOR: Final = PREFIX + "vendor"
GPU_POOL: Final = PREFIX + "gpupool"
GPU_INDICES: Final = PREFIX + "gpu-indices"
QOS: Final = PREFIX + "qos"
DEDICATED_GPU: Final = PREFIX + "dedicated-gpu"

# Workload membership and autoscaling switches.
WORKLOAD: Final = PREFIX + "workload"
WORKLOAD_PROFILE: Final = PREFIX + "workload-profile"
AUTO_RESOURCES: Final = PREFIX + "auto-resources"
AUTO_SCALE_TARGET_RESOURCE: Final = PREFIX + "auto-scale-target-resource"
AUTO_REPLICAS: Final = PREFIX + "auto-replicas"

# Written at bind: the GPUs (GPU object names) the pod holds, comma separated.
GPU_IDS: Final = PREFIX + "gpu-ids"

# Any annotation under the prefix marks a pod as a TensorFusion pod; these are
# the ones that carry a resource request and so make the extender act.
REQUEST_ANNOTATIONS: Final = (
    TFLOPS_REQUEST,
    TFLOPS_LIMIT,
    VRAM_REQUEST,
    VRAM_LIMIT,
    COMPUTE_PERCENT_REQUEST,
    COMPUTE_PERCENT_LIMIT,
)

# What makes a pod a GPU pod (gpurequest.is_gpu_pod); the chart's webhook matchConditions
# list the same keys (tests/deploy/test_chart.py checks them).
GPU_POD_ANNOTATIONS: Final = (*REQUEST_ANNOTATIONS, GPU_COUNT)

# The extended resource the scheduler config manages (ignoredByScheduler), so
# kube-scheduler sends only GPU pods to the extender.
MANAGED_RESOURCE: Final = PREFIX + "gpu"
# The quantity GPU pods name it with.  Zero routes a pod all the same (the
# extender's interest is only that a container names the resource), and
# NodeResourcesFit skips a zero request before its per-node extended-resource
# check (a name validation, ~1 ms of kube-scheduler's CPU per pod at 420 nodes).
MANAGED_RESOURCE_QUANTITY: Final = "0"

# Custom resources.
API_GROUP: Final = DOMAIN
API_VERSION: Final = "v1"
GROUP_VERSION: Final = f"{API_GROUP}/{API_VERSION}"
GPU_PLURAL: Final = "gpus"
WORKLOAD_PLURAL: Final = "tensorfusionworkloads"
WORKLOAD_PROFILE_PLURAL: Final = "workloadprofiles"
GPU_KIND: Final = "GPU"
WORKLOAD_KIND: Final = "TensorFusionWorkload"
WORKLOAD_PROFILE_KIND: Final = "WorkloadProfile"

# GPU ``status.usedBy``: which system hands the GPU out.  TensorFusion writes its
# domain (its CRD default is "tensor-fusion"; objects from before the field are
# empty); anything else, such as "nvidia-device-plugin", is another system's.
USED_BY_TENSOR_FUSION: Final = DOMAIN
USED_BY_OURS: Final = frozenset({"", "tensor-fusion", DOMAIN})

# Node label that GPU objects use to name their node.
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"

# Status condition names (TensorFusion's).
CONDITION_RECOMMENDATION_PROVIDED: Final = "RecommendationProvided"
CONDITION_METRICS_AVAILABLE: Final = "MetricsAvailable"  # tfsched's: whether usage could be read
REASON_OUT_OF_ESTIMATED_BOUND: Final = "OutOfEstimatedBound"
REASON_RULE_ACTIVE: Final = "RuleActive"
REASON_RULE_INACTIVE: Final = "RuleInactive"

# Event reasons tfsched raises about the allocation promise (``kubectl describe`` shows them).
EVENT_GPU_IDS_IGNORED: Final = "GPUIDsIgnored"  # gpu-ids not backed by a binding to the GPUs' node
EVENT_UNREADABLE_REQUEST: Final = "UnreadableGPURequest"  # a bound pod's request annotations cannot be read
EVENT_UNREADABLE_OBJECT: Final = "UnreadableObject"  # an object tfsched watches could not be taken in
EVENT_LEDGER_DRIFT: Final = "LedgerDrift"  # the auditor found the ledger and the pods disagreeing
EVENT_GPU_OVERCOMMITTED: Final = "GPUOvercommitted"  # a GPU's holders together exceed its capacity
