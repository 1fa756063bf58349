"""Placement modes and score weights.

TensorFusion's names: ``CompactFirst`` fills used GPUs and nodes first,
``LowLoadFirst`` spreads, and the default ``NodeCompactGPULowLoad`` packs nodes
but spreads across the GPUs within the chosen node. tfsched's own
``LeastFragmentation`` places where the cluster's expected fragmentation for
the requests it receives rises least (FGD in TFLOPS, VRAM, CPU and memory; see
kernels.py), one winner per pod among near-equal nodes (rank.py).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class PlacementMode(StrEnum):
    COMPACT_FIRST = "CompactFirst"
    LOW_LOAD_FIRST = "LowLoadFirst"
    NODE_COMPACT_GPU_LOW_LOAD = "NodeCompactGPULowLoad"
    LEAST_FRAGMENTATION = "LeastFragmentation"

    @property
    def fragmentation_aware(self) -> bool:
        """Whether nodes and GPUs are chosen by the rise in expected fragmentation."""
        return self is PlacementMode.LEAST_FRAGMENTATION

    @property
    def node_compact(self) -> bool:
        """Whether nodes are ranked by how full they are (else by how empty)."""
        return self is not PlacementMode.LOW_LOAD_FIRST

    @property
    def gpu_compact(self) -> bool:
        """Whether GPUs within a node are picked fullest first (else emptiest)."""
        return self is PlacementMode.COMPACT_FIRST


DEFAULT_VRAM_WEIGHT = 0.7
DEFAULT_TFLOPS_WEIGHT = 0.3

# Per-node fit verdicts the kernels return; the extender turns them into reasons.
FIT_OK = np.int8(0)
FIT_NO_ELIGIBLE_GPU = np.int8(1)  # no usable GPU matching model/vendor/pool/indices
FIT_TOO_FEW_GPUS = np.int8(2)  # fewer eligible GPUs than gpu-count
FIT_NO_TFLOPS = np.int8(3)  # VRAM would do, TFLOPS is the short resource
FIT_NO_VRAM = np.int8(4)  # TFLOPS would do, VRAM is the short resource
FIT_NO_BOTH = np.int8(5)  # neither alone would satisfy gpu-count
# Each failure verdict's name in metrics (tfsched_extender_filter_denials_total's reason).
VERDICT_NAMES = {
    int(FIT_NO_ELIGIBLE_GPU): "no_eligible_gpu",
    int(FIT_TOO_FEW_GPUS): "too_few_gpus",
    int(FIT_NO_TFLOPS): "insufficient_tflops",
    int(FIT_NO_VRAM): "insufficient_vram",
    int(FIT_NO_BOTH): "insufficient_tflops_and_vram",
}
