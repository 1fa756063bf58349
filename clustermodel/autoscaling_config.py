"""Pydantic models of a workload's ``autoScalingConfig`` and of GPU resources.

Field names follow the TensorFusion docs (camelCase, see the seed page):
``autoSetResources.targetTflopsPercentile``, ``cronScalingRules[].desiredResources`` and
so on.  Upstream's Go json tags have been spelled differently over time
(all lower case ``targettflopspercentile``, ``targetTFlopsPercentile``), so
keys are matched case-insensitively on input; output is always the camelCase
the docs use (``model_dump(by_alias=True)`` or :meth:`to_dict`).  Keys we do
not know are ignored in cluster objects, as the API server would prune them,
and are errors in files (validation context ``FORBID_UNKNOWN_KEYS``).  Newer
TensorFusion names for the same fields (``targetComputePercentile``,
``marginFraction``, ...) are accepted as synonyms (README, "Autoscaling config").

Percentiles and fractions accept numbers or numeric strings (upstream stores
them as strings); durations follow :func:`tfsched.clustermodel.times.parse_duration`
(``24h``, ``1h30m``, ``7d``, or seconds); quantities go through
:func:`tfsched.clustermodel.quantity.parse_quantity`.  Every validation error names
the offending field.

tfsched extensions (absent upstream, all optional): ``autoSetResources.maxStepFraction``
and ``autoSetReplicas.minReplicas``, ``maxReplicas`` and ``tolerance``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tfsched.clustermodel.quantity import QuantityError, format_bytes, format_tflops, parse_quantity
from tfsched.clustermodel.times import NonNegativeDuration, PositiveDuration

# ---------------------------------------------------------------------------
# Scalar field types
# ---------------------------------------------------------------------------


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    else:
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _percentile(value: Any) -> float:
    number = _to_float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"percentile {value!r} must be between 0 and 1")
    return number


def _percent_value(value: Any) -> float:
    text = value.strip().removesuffix("%") if isinstance(value, str) else value
    return _to_float(text)


def _quantity(value: Any) -> float:
    if type(value) is float and 0.0 <= value < math.inf:  # already a value in base units
        return value
    try:
        return parse_quantity(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


def _step(value: Any) -> int | str:
    """A replica step: a whole number of replicas, or ``"N%"`` of the current count."""
    if isinstance(value, bool):
        raise ValueError(f"invalid step {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"step {value!r} must be at least 1")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            number = _to_float(text[:-1])
            if number <= 0:
                raise ValueError(f"step {value!r} must be a positive percentage")
            return f"{number:g}%"
        if text.isdigit() and int(text) >= 1:
            return int(text)
    raise ValueError(f"invalid step {value!r}: expected a replica count such as 2 or a percentage such as '50%'")


def _target_resource(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"invalid targetResource {value!r}: expected all, tflops or vram")
    text = value.strip().lower()
    # Upstream names TFLOPS "compute" in places; accept it as a synonym.
    if text == "compute":
        text = "tflops"
    if text not in ("", "all", "tflops", "vram"):
        raise ValueError(f"invalid targetResource {value!r}: expected all, tflops or vram")
    return text


Percentile = Annotated[float, BeforeValidator(_percentile)]
TflopsQuantity = Annotated[float, BeforeValidator(_quantity), PlainSerializer(format_tflops, return_type=str)]
VramQuantity = Annotated[float, BeforeValidator(_quantity), PlainSerializer(format_bytes, return_type=str)]
ReplicaStep = Annotated[int | str, BeforeValidator(_step)]


_CANONICAL_KEYS: dict[type, dict[str, str]] = {}


class _Model(BaseModel):
    """Shared config: camelCase aliases, keys matched case-insensitively.

    Unknown keys are dropped by default (cluster objects: the API server prunes
    them, and a newer CRD's field must not stop the autoscaler) and are errors
    under the ``FORBID_UNKNOWN_KEYS`` validation context (files a user wrote).
    """

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    # Other spellings of a field that mean exactly the same: lower-cased name → our alias.
    _synonyms: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _canonical_keys(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        canonical = _CANONICAL_KEYS.get(cls)
        if canonical is None:  # once per class: models are built per workload per interval
            canonical = dict(cls._synonyms)
            for name, field in cls.model_fields.items():
                canonical[name.lower()] = field.alias or name
                if field.alias:
                    canonical[field.alias.lower()] = field.alias
            _CANONICAL_KEYS[cls] = canonical
        keep_unknown = (info.context or {}).get("unknown_keys") == "forbid"
        result: dict[str, Any] = {}
        spelled: dict[str, Any] = {}
        for key, value in data.items():
            mapped = canonical.get(key.lower()) if isinstance(key, str) else None
            if mapped is None:
                if keep_unknown:  # extra="forbid" then reports it at its own path
                    result[key] = value
                continue
            if mapped in result:
                raise ValueError(f"{spelled[mapped]!r} and {key!r} both set {mapped}: give one")
            result[mapped] = value
            spelled[mapped] = key
        return result

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the camelCase names the CRD and docs use."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


# ---------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------


class ResourceValues(_Model):
    """TFLOPS (a number of TFLOPS) and VRAM (bytes), parsed from Kubernetes quantities."""

    tflops: TflopsQuantity = 0.0
    vram: VramQuantity = 0.0


class Resources(_Model):
    """``{requests: {tflops, vram}, limits: {tflops, vram}}``; a missing side copies the other."""

    requests: ResourceValues = Field(default_factory=ResourceValues)
    limits: ResourceValues = Field(default_factory=ResourceValues)

    @model_validator(mode="before")
    @classmethod
    def _fill_missing_side(cls, data: Any) -> Any:
        if isinstance(data, dict):
            lowered = {k.lower(): k for k in data if isinstance(k, str)}
            if "requests" in lowered and "limits" not in lowered:
                data = {**data, "limits": data[lowered["requests"]]}
            elif "limits" in lowered and "requests" not in lowered:
                data = {**data, "requests": data[lowered["limits"]]}
        return data

    def is_zero(self) -> bool:
        return not (self.requests.tflops or self.requests.vram or self.limits.tflops or self.limits.vram)


# ---------------------------------------------------------------------------
# autoScalingConfig
# ---------------------------------------------------------------------------


class AutoSetResources(_Model):
    """Vertical scaling: VPA-style percentiles of usage history."""

    # Names newer TensorFusion releases use for the same fields ("compute" is TFLOPS there).
    _synonyms: ClassVar[dict[str, str]] = {
        "targetcomputepercentile": "targetTflopsPercentile",
        "lowerboundcomputepercentile": "lowerBoundTflopsPercentile",
        "upperboundcomputepercentile": "upperBoundTflopsPercentile",
        "marginfraction": "requestMarginFraction",
    }

    enable: bool = False
    target_resource: str = Field(default="", alias="targetResource")
    target_tflops_percentile: Percentile = Field(default=0.9, alias="targetTflopsPercentile")
    lower_bound_tflops_percentile: Percentile = Field(default=0.5, alias="lowerBoundTflopsPercentile")
    upper_bound_tflops_percentile: Percentile = Field(default=0.95, alias="upperBoundTflopsPercentile")
    target_vram_percentile: Percentile = Field(default=0.9, alias="targetVramPercentile")
    lower_bound_vram_percentile: Percentile = Field(default=0.5, alias="lowerBoundVramPercentile")
    upper_bound_vram_percentile: Percentile = Field(default=0.95, alias="upperBoundVramPercentile")
    request_margin_fraction: float = Field(default=0.15, alias="requestMarginFraction")
    confidence_interval: PositiveDuration = Field(default=timedelta(hours=24), alias="confidenceInterval")
    history_length: str | None = Field(default=None, alias="historyLength")
    history_resolution: str | None = Field(default=None, alias="historyResolution")
    # tfsched extension: cap one change at this fraction of the current request (off when None).
    max_step_fraction: float | None = Field(default=None, alias="maxStepFraction")

    @field_validator("target_resource", mode="before")
    @classmethod
    def _target(cls, value: Any) -> str:
        return _target_resource(value)

    @field_validator("request_margin_fraction", mode="before")
    @classmethod
    def _margin(cls, value: Any) -> float:
        number = _to_float(value)
        if number < 0:
            raise ValueError(f"requestMarginFraction {value!r} must not be negative")
        return number

    @field_validator("max_step_fraction", mode="before")
    @classmethod
    def _max_step(cls, value: Any) -> float | None:
        if value is None or value == "":
            return None
        number = _to_float(value)
        if number <= 0:
            raise ValueError(f"maxStepFraction {value!r} must be positive")
        return number

    @model_validator(mode="after")
    def _ordered_percentiles(self) -> AutoSetResources:
        for resource in ("Tflops", "Vram"):
            lower = getattr(self, f"lower_bound_{resource.lower()}_percentile")
            target = getattr(self, f"target_{resource.lower()}_percentile")
            upper = getattr(self, f"upper_bound_{resource.lower()}_percentile")
            if lower > target:
                raise ValueError(
                    f"lowerBound{resource}Percentile ({lower}) must not exceed target{resource}Percentile ({target})"
                )
            if target > upper:
                raise ValueError(
                    f"target{resource}Percentile ({target}) must not exceed upperBound{resource}Percentile ({upper})"
                )
        return self

    @property
    def applies(self) -> bool:
        """Recommendations are applied only when enabled with a target resource; else recommend-only."""
        return self.enable and self.target_resource != ""

    def targets(self, resource: Literal["tflops", "vram"]) -> bool:
        """Whether ``resource`` is recommended at all (``targetResource`` empty or ``all`` means both)."""
        return self.target_resource in ("", "all", resource)


class AutoSetReplicas(_Model):
    """Horizontal scaling on TFLOPS utilisation (declared upstream, implemented by tfsched)."""

    enable: bool = False
    target_tflops_of_limits: float = Field(default=80.0, alias="targetTFlopsOfLimits")
    evaluation_period: PositiveDuration = Field(default=timedelta(minutes=5), alias="evaluationPeriod")
    scale_up_step: ReplicaStep = Field(default="100%", alias="scaleUpStep")
    scale_down_step: ReplicaStep = Field(default="50%", alias="scaleDownStep")
    scale_up_cool_down_time: NonNegativeDuration = Field(default=timedelta(minutes=1), alias="scaleUpCoolDownTime")
    scale_down_cool_down_time: NonNegativeDuration = Field(default=timedelta(minutes=5), alias="scaleDownCoolDownTime")
    min_replicas: int = Field(default=1, alias="minReplicas", ge=0)
    max_replicas: int | None = Field(default=None, alias="maxReplicas", ge=1)
    tolerance: float = Field(default=0.1, ge=0.0, lt=1.0)

    @field_validator("target_tflops_of_limits", mode="before")
    @classmethod
    def _target(cls, value: Any) -> float:
        number = _percent_value(value)
        if not 0.0 < number <= 100.0:
            raise ValueError(f"targetTFlopsOfLimits {value!r} must be a percentage in (0, 100]")
        return number

    @model_validator(mode="after")
    def _bounds(self) -> AutoSetReplicas:
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(f"maxReplicas ({self.max_replicas}) must not be below minReplicas ({self.min_replicas})")
        return self


def validate_cron_expression(expression: str) -> str:
    """A standard five-field cron expression that fires at least once."""
    text = " ".join(expression.split())
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ValueError(f"invalid cron expression {expression!r}: expected five fields 'min hour dom month dow'")
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception as exc:  # croniter raises several types for schedules that never fire
        raise ValueError(f"cron expression {expression!r} never fires") from exc
    return text


class CronScalingRule(_Model):
    """A time window (``start`` to ``end`` cron occurrences) with desired resources and replicas."""

    enable: bool = False
    name: str = ""
    start: str = ""
    end: str = ""
    desired_resources: Resources | None = Field(default=None, alias="desiredResources")
    desired_replicas: int | None = Field(default=None, alias="desiredReplicas", ge=0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _cron(cls, value: Any, info: ValidationInfo) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ValueError(f"{info.field_name} must be a cron expression string")
        if value.strip() == "":
            return ""
        return validate_cron_expression(value)

    @model_validator(mode="after")
    def _distinct(self) -> CronScalingRule:
        if self.start and self.start == self.end:
            raise ValueError(f"start and end must differ (both {self.start!r})")
        return self

    @property
    def counts(self) -> bool:
        """Upstream ignores a rule unless it is enabled and has a name, a start and an end."""
        return self.enable and bool(self.name) and bool(self.start) and bool(self.end)


class AutoScalingConfig(_Model):
    """A workload's ``spec.autoScalingConfig``."""

    auto_set_resources: AutoSetResources = Field(default_factory=AutoSetResources, alias="autoSetResources")
    auto_set_replicas: AutoSetReplicas = Field(default_factory=AutoSetReplicas, alias="autoSetReplicas")
    cron_scaling_rules: list[CronScalingRule] = Field(default_factory=list, alias="cronScalingRules")

    @field_validator("auto_set_resources", "auto_set_replicas", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("cron_scaling_rules", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value
