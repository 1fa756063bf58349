"""A TensorFusionWorkload as tfsched reads and writes it: the one model of its
autoscaling config and status.

The extender (placing new pods by the recommendation), the recommender (its
previous status) and the status writer all go through these types, so they
cannot disagree on what a workload says.  :func:`read_workload` parses an
object once; :class:`tfsched.allocation.state.ClusterState` keeps the result
per object version, so a filter call never re-parses raw status.

Reading is lenient where others write: a status field that cannot be read
counts as absent (a bad status value must never block scheduling), and an
invalid ``autoScalingConfig`` is reported in :attr:`WorkloadView.config_error`
and applies nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.autoscaling_config import (
    AutoScalingConfig,
    AutoSetResources,
    CronScalingRule,
    Resources,
    ResourceValues,
)
from tfsched.clustermodel.gpurequest import MAX_TFLOPS, MAX_VRAM, ResourceOverride
from tfsched.clustermodel.times import format_time

ConditionStatus = Literal["True", "False", "Unknown"]
# What the autoscaler applies to the workers: nothing (recommend-only), one resource, or both.
ResourcesMode = Literal["recommend-only", "tflops", "vram", "all"]


class Condition(BaseModel):
    """A ``metav1.Condition``."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = Field(None, alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")

    @field_serializer("last_transition_time")
    def _time(self, value: datetime | None) -> str | None:
        return None if value is None else format_time(value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON the API server stores (``lastTransitionTime`` in whole seconds)."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class WorkloadStatus(BaseModel):
    """What the autoscaler reports on a TensorFusionWorkload."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    phase: str = ""
    # tfsched's: what autoSetResources applies (:func:`resources_mode`), for ``kubectl get tfw``'s MODE.
    mode: ResourcesMode | Literal[""] = ""
    conditions: list[Condition] = Field(default_factory=list)
    worker_count: int = Field(0, alias="workerCount")
    ready_workers: int = Field(0, alias="readyWorkers")
    pod_template_hash: str = Field("", alias="podTemplateHash")
    replicas: int | None = None
    recommendation: Resources | None = None
    applied_recommended_replicas: int = Field(0, alias="appliedRecommendedReplicas")
    active_cron_scaling_rule: CronScalingRule | None = Field(None, alias="activeCronScalingRule")
    histogram_checkpoint: dict[str, Any] | None = Field(None, alias="histogramCheckpoint")

    def condition(self, condition_type: str) -> Condition | None:
        """The condition of this type, if present."""
        return next((c for c in self.conditions if c.type == condition_type), None)

    @classmethod
    def read(cls, raw: Any) -> WorkloadStatus:
        """Field by field: what cannot be read counts as absent, the rest stands."""
        if not isinstance(raw, Mapping):
            return cls()
        try:
            return cls.model_validate(raw)
        except ValidationError:
            pass
        values: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            key = info.alias or name
            if key not in raw or raw[key] is None:
                continue
            try:
                cls.model_validate({key: raw[key]})
            except ValidationError:
                if name == "conditions" and isinstance(raw[key], list):
                    values[key] = [c for c in raw[key] if _readable_condition(c)]
                continue
            values[key] = raw[key]
        return cls.model_validate(values)

    def fragment(self, *fields: str) -> dict[str, Any]:
        """The named fields (Python names) as status JSON, for a merge patch; ``None`` stays ``null``."""
        out: dict[str, Any] = {}
        for name in fields:
            info = type(self).model_fields[name]
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                value = value.to_dict() if hasattr(value, "to_dict") else value.model_dump(by_alias=True, mode="json")
            elif isinstance(value, list):
                value = [v.to_dict() if isinstance(v, Condition) else v for v in value]
            out[info.alias or name] = value
        return out


def _readable_condition(raw: Any) -> bool:
    try:
        Condition.model_validate(raw)
    except ValidationError:
        return False
    return True


def targeted_resources(auto: AutoSetResources) -> frozenset[str]:
    """Resources whose recommendation is applied to the workers: none unless
    ``autoSetResources`` applies (enabled with a ``targetResource``)."""
    if not auto.applies:
        return frozenset()
    return frozenset(r for r in ("tflops", "vram") if auto.targets(r))


def resources_mode(auto: AutoSetResources) -> ResourcesMode:
    """``status.mode``: which resources' recommendations are applied, or recommend-only."""
    targeted = targeted_resources(auto)
    if not targeted:
        return "recommend-only"
    if len(targeted) == 2:
        return "all"
    return "tflops" if "tflops" in targeted else "vram"


def pod_auto_set_resources(pod_annotations: Mapping[str, str]) -> AutoSetResources:
    """``autoSetResources`` from a pod's ``auto-resources`` / ``auto-scale-target-resource``
    annotations, read with the same rules as the workload's own."""
    enabled = str(pod_annotations.get(ann.AUTO_RESOURCES, "")).lower() == "true"
    return _auto_set_resources(enabled, str(pod_annotations.get(ann.AUTO_SCALE_TARGET_RESOURCE) or ""))


@functools.lru_cache(maxsize=64)  # a filter call may ask; the annotation values are few
def _auto_set_resources(enabled: bool, target: str) -> AutoSetResources:
    try:
        return AutoSetResources.model_validate({"enable": enabled, "targetResource": target})
    except ValidationError:
        return AutoSetResources()


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """One version of a TensorFusionWorkload, parsed."""

    namespace: str
    name: str
    uid: str
    config: AutoScalingConfig | None  # None when invalid (see config_error)
    config_error: str
    declares_auto_set_resources: bool  # the spec has autoSetResources (else pods' annotations decide)
    status: WorkloadStatus
    raw_config: Mapping[str, Any]  # as the object has it, to reuse the parse for the next version

    def auto_set_resources(self, pod_annotations: Mapping[str, str]) -> AutoSetResources | None:
        """The ``autoSetResources`` that governs a pod of this workload (None: invalid config)."""
        if self.config is None:
            return None
        if self.declares_auto_set_resources:
            return self.config.auto_set_resources
        return pod_auto_set_resources(pod_annotations)

    def override_for(self, pod_annotations: Mapping[str, str]) -> ResourceOverride:
        """What this workload's status imposes on a pod's request.

        The recommendation counts for the targeted resources; an active cron
        rule's desired resources count for both, and where both set a value
        the larger request wins (the cron floor holds).  Only values that
        were written count: a side or a resource left out stays declared.
        """
        auto = self.auto_set_resources(pod_annotations)
        targeted = targeted_resources(auto) if auto is not None else frozenset()
        values: dict[str, float] = {}
        sources: list[str] = []
        rec = self.status.recommendation
        if targeted and rec is not None:
            for resource in targeted:
                values.update(_given(rec, resource))
            if values:
                sources.append("recommendation")
        rule = self.status.active_cron_scaling_rule
        if rule is not None and rule.desired_resources is not None:
            given = {k: v for r in ("tflops", "vram") for k, v in _given(rule.desired_resources, r).items()}
            for key, value in given.items():
                values[key] = max(values.get(key, 0.0), value)
            if given:
                sources.append(f"cron:{rule.name}")
        return ResourceOverride(**values, source="+".join(sources))


_SIDES = (("requests", "request"), ("limits", "limit"))
_MAX_PER_GPU = {"tflops": MAX_TFLOPS, "vram": MAX_VRAM}


def _given(resources: Resources, resource: str) -> dict[str, float]:
    """``{"tflops_request": …, "tflops_limit": …}`` (or vram) where the resource was written.

    A side left out copies the other, as :class:`Resources` reads it for the
    recommender too.
    """
    out: dict[str, float] = {}
    for side, suffix in _SIDES:
        values: ResourceValues = getattr(resources, side)
        value = getattr(values, resource)
        # Beyond what any pod may ask (gpurequest's bounds) it is not a value to place by.
        if resource in values.model_fields_set and value <= _MAX_PER_GPU[resource]:
            out[f"{resource}_{suffix}"] = value
    return out


def read_workload(obj: Mapping[str, Any], previous: WorkloadView | None = None) -> WorkloadView:
    """Parse one TensorFusionWorkload object (never raises).

    ``previous``: the view of an earlier version of the same object; its config
    is reused when the spec's ``autoScalingConfig`` is unchanged (status writes
    are most of a workload's versions).
    """
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    raw_config = spec.get("autoScalingConfig") if isinstance(spec, Mapping) else None
    raw_config = raw_config if isinstance(raw_config, Mapping) else {}
    config: AutoScalingConfig | None
    if previous is not None and previous.uid == str(meta.get("uid") or "") and previous.raw_config == raw_config:
        config, error = previous.config, previous.config_error
    else:
        try:
            config = AutoScalingConfig.model_validate(raw_config)
            error = ""
        except ValidationError as exc:
            config, error = None, str(exc)
    auto = next((v for k, v in raw_config.items() if isinstance(k, str) and k.lower() == "autosetresources"), None)
    return WorkloadView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        config=config,
        config_error=error,
        declares_auto_set_resources=bool(auto),
        status=WorkloadStatus.read(obj.get("status")),
        raw_config=raw_config,
    )


def workload_override(obj: Mapping[str, Any], pod_annotations: Mapping[str, str]) -> ResourceOverride:
    """:meth:`WorkloadView.override_for` of a raw object (tests, one-off callers)."""
    return read_workload(obj).override_for(pod_annotations)
