"""Placement settings of the extender (pydantic, loaded from ``tfsched serve --config``)."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tfsched.clustermodel.times import PositiveDuration
from tfsched.scoring.modes import DEFAULT_TFLOPS_WEIGHT, DEFAULT_VRAM_WEIGHT, PlacementMode

DEFAULT_SCHEDULER = "default-scheduler"  # what an empty spec.schedulerName means


class SchedulingConfig(BaseModel):
    """How nodes are scored and GPUs picked.

    ``placementMode`` applies cluster-wide; ``poolPlacementModes`` overrides it
    for pods of a named pool (``tensor-fusion.ai/gpupool``).
    """

    # Frozen: what is derived from it (needs_all_pods) is worked out once.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    placement_mode: PlacementMode = Field(PlacementMode.NODE_COMPACT_GPU_LOW_LOAD, alias="placementMode")
    pool_placement_modes: dict[str, PlacementMode] = Field(default_factory=dict, alias="poolPlacementModes")
    vram_weight: float = Field(DEFAULT_VRAM_WEIGHT, ge=0, le=1, alias="vramWeight")
    tflops_weight: float = Field(DEFAULT_TFLOPS_WEIGHT, ge=0, le=1, alias="tflopsWeight")
    # The largest legitimate request: 5,000 whole Node objects (nodeCacheCapable:
    # false) are 76.4 MiB (bench/bench_request_size.py; extender/budget.py).
    max_request_bytes: int = Field(80 * 1024 * 1024, gt=0, alias="maxRequestBytes")
    # How often the ledger is compared with a fresh list of pods.
    audit_interval: PositiveDuration = Field(timedelta(minutes=1), alias="auditInterval")
    # The profiles of the kube-scheduler this extender serves: bind refuses a
    # pod whose spec.schedulerName names any other scheduler.
    scheduler_names: list[str] = Field(
        default_factory=lambda: [DEFAULT_SCHEDULER], alias="schedulerNames", min_length=1
    )
    # Filter passes only the nodes tfsched scores highest, so kube-scheduler needs no
    # prioritize call (configure it without prioritizeVerb; the chart's
    # scheduler.scoreInFilter does both). Its own Score plugins then only break ties
    # among those nodes, and when one node is left it skips scoring altogether.
    score_in_filter: bool = Field(False, alias="scoreInFilter")

    @model_validator(mode="after")
    def _weights_sum_to_one(self) -> SchedulingConfig:
        if abs(self.vram_weight + self.tflops_weight - 1.0) > 1e-9:
            raise ValueError("vramWeight and tflopsWeight must add up to 1")
        return self

    @cached_property
    def needs_all_pods(self) -> bool:
        """A fragmentation-aware mode weighs each node's CPU and memory: every pod's requests count."""
        return self.placement_mode.fragmentation_aware or any(
            m.fragmentation_aware for m in self.pool_placement_modes.values()
        )

    def mode_for(self, pool: str) -> PlacementMode:
        return self.pool_placement_modes.get(pool, self.placement_mode) if pool else self.placement_mode

    @property
    def weights(self) -> tuple[float, float]:
        """(TFLOPS weight, VRAM weight), the order the kernels take them."""
        return (self.tflops_weight, self.vram_weight)
