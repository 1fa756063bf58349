"""Composable resource estimators, as in VPA's ``logic/estimator.go``.

A chain turns usage history into an amount per resource: percentile →
margin (``requestMarginFraction``) → confidence multiplier.  TensorFusion
builds three chains per resource from ``autoSetResources``:

* target: the target percentile plus margin;
* upper bound: the upper percentile plus margin, × ``(1 + 1.0/c)**+1``;
* lower bound: the lower percentile plus margin, × ``(1 + 0.001/c)**-2``;

where the confidence ``c = min(span of TFLOPS samples / confidenceInterval,
TFLOPS sample count / confidenceInterval-in-minutes)``.

Rounding (as VPA's ``ResourceAmount``): amounts are integers — TFLOPS in
**milli-TFLOPS**, VRAM in **bytes** — and every step truncates toward zero
(percentile × unit, the margin on its own before it is added, the scaled
value), clamped to [0, 1e14].  ``0 × ∞`` (a zero estimate scaled by the
infinite multiplier of an empty history) is 0 where Go's conversion of NaN is
undefined.  Powers use Go's ``math.Pow`` (:mod:`tfsched.autoscale.gomath`).  The numeric steps
are ``register_jitable`` so the batch path (:mod:`tfsched.autoscale.bank`) runs the
same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from numba.extending import register_jitable

from tfsched.autoscale.gomath import go_pow
from tfsched.clustermodel.quantity import MILLI_PER_TFLOPS, milli_tflops, whole_bytes
from tfsched.clustermodel.times import duration_ns

if TYPE_CHECKING:
    from tfsched.clustermodel.autoscaling_config import AutoSetResources, ResourceValues
    from tfsched.clustermodel.autoscaling_config import Resources as ResourcesModel

ResourceName = Literal["tflops", "vram"]
RESOURCES: tuple[ResourceName, ResourceName] = ("tflops", "vram")

MAX_RESOURCE_AMOUNT = 10**14
# Histogram values are TFLOPS and bytes; amounts are milli-TFLOPS and bytes.
TFLOPS_UNIT = float(MILLI_PER_TFLOPS)
VRAM_UNIT = 1.0
UPPER_BOUND_MULTIPLIER = (1.0, 1.0)
LOWER_BOUND_MULTIPLIER = (0.001, -2.0)
_MINUTE_NS = 60_000_000_000


@register_jitable
def amount_from_float(value: float) -> int:
    """VPA ``resourceAmountFromFloat``: truncate into [0, 1e14]; NaN (from 0 × ∞) is 0."""
    if math.isnan(value) or value < 0.0:
        return 0
    if value > float(MAX_RESOURCE_AMOUNT):
        return MAX_RESOURCE_AMOUNT
    return int(value)


@register_jitable
def scale_amount(amount: int, factor: float) -> int:
    """VPA ``ScaleResource``."""
    return amount_from_float(float(amount) * factor)


@register_jitable
def margin_amount(amount: int, fraction: float) -> int:
    """``amount + truncate(amount × fraction)`` (the margin is truncated on its own, as in VPA)."""
    return amount + scale_amount(amount, fraction)


@register_jitable
def go_minutes(interval_ns: int) -> float:
    """Go's ``Duration.Minutes()``."""
    # Go's integer division truncates toward zero.
    whole = interval_ns // _MINUTE_NS if interval_ns >= 0 else -((-interval_ns) // _MINUTE_NS)
    rest = interval_ns - whole * _MINUTE_NS
    return float(whole) + float(rest) / 60e9


@register_jitable
def confidence_from_span(span_ns: int, count: int, interval_ns: int) -> float:
    """VPA ``getConfidence`` over ``interval``: min(span / interval, count / interval-in-minutes)."""
    span = float(span_ns) / float(interval_ns)
    samples = float(count) / go_minutes(interval_ns)
    return min(span, samples)


def confidence(first_ns: int | None, last_ns: int | None, count: int, interval_ns: int) -> float:
    """:func:`confidence_from_span` from the first and last sample times (no samples: span 0)."""
    span_ns = 0 if first_ns is None or last_ns is None else last_ns - first_ns
    return confidence_from_span(span_ns, count, interval_ns)


@register_jitable
def confidence_factor(multiplier: float, exponent: float, conf: float) -> float:
    """``(1 + multiplier/conf) ** exponent`` with Go's Pow; ``conf == 0`` gives ∞ (or 0 for exponent < 0)."""
    base = math.inf if conf <= 0.0 else 1.0 + multiplier / conf
    return go_pow(base, exponent)


@dataclass(frozen=True)
class Amounts:
    """Integer amounts: TFLOPS in milli-TFLOPS, VRAM in bytes (VPA's ``model.Resources``)."""

    tflops: int = 0
    vram: int = 0

    def get(self, resource: ResourceName) -> int:
        return self.tflops if resource == "tflops" else self.vram

    def replace(self, resource: ResourceName, value: int) -> Amounts:
        return Amounts(value, self.vram) if resource == "tflops" else Amounts(self.tflops, value)

    @classmethod
    def from_values(cls, values: ResourceValues) -> Amounts:
        """From quantities in TFLOPS and bytes, rounding up so an amount never asks for less."""
        return cls(milli_tflops(values.tflops), whole_bytes(values.vram))

    def to_values(self) -> ResourceValues:
        from tfsched.clustermodel.autoscaling_config import ResourceValues

        return ResourceValues(tflops=self.tflops / TFLOPS_UNIT, vram=float(self.vram))


@dataclass(frozen=True)
class ResourceAmounts:
    """Requests and limits as :class:`Amounts`."""

    requests: Amounts = Amounts()
    limits: Amounts = Amounts()

    @classmethod
    def from_model(cls, resources: ResourcesModel) -> ResourceAmounts:
        return cls(Amounts.from_values(resources.requests), Amounts.from_values(resources.limits))

    def to_model(self) -> ResourcesModel:
        from tfsched.clustermodel.autoscaling_config import Resources

        return Resources(requests=self.requests.to_values(), limits=self.limits.to_values())

    def pair(self, resource: ResourceName) -> tuple[int, int]:
        return self.requests.get(resource), self.limits.get(resource)

    def with_pair(self, resource: ResourceName, request: int, limit: int) -> ResourceAmounts:
        return ResourceAmounts(self.requests.replace(resource, request), self.limits.replace(resource, limit))


class HistogramLike(Protocol):
    def percentile(self, percentile: float) -> float: ...

    def is_empty(self) -> bool: ...


class UsageSummary(Protocol):
    """What estimators read: the two usage histograms and TFLOPS sample statistics."""

    @property
    def tflops(self) -> HistogramLike: ...

    @property
    def vram(self) -> HistogramLike: ...

    @property
    def first_sample_ns(self) -> int | None: ...

    @property
    def last_sample_ns(self) -> int | None: ...

    @property
    def total_samples_count(self) -> int: ...


class ResourceEstimator(Protocol):
    def estimate(self, usage: UsageSummary) -> Amounts: ...


@dataclass(frozen=True)
class ConstEstimator:
    """Always the same amounts (VPA ``NewConstEstimator``)."""

    amounts: Amounts

    def estimate(self, usage: UsageSummary) -> Amounts:
        return self.amounts


@dataclass(frozen=True)
class PercentileEstimator:
    """The given percentile of each usage histogram (VPA ``NewPercentileEstimator``)."""

    tflops_percentile: float
    vram_percentile: float

    def estimate(self, usage: UsageSummary) -> Amounts:
        return Amounts(
            amount_from_float(usage.tflops.percentile(self.tflops_percentile) * TFLOPS_UNIT),
            amount_from_float(usage.vram.percentile(self.vram_percentile) * VRAM_UNIT),
        )


@dataclass(frozen=True)
class MarginEstimator:
    """Adds ``margin_fraction`` of the base estimate (VPA ``WithMargin``)."""

    margin_fraction: float
    base: ResourceEstimator

    def estimate(self, usage: UsageSummary) -> Amounts:
        amounts = self.base.estimate(usage)
        return Amounts(
            margin_amount(amounts.tflops, self.margin_fraction),
            margin_amount(amounts.vram, self.margin_fraction),
        )


@dataclass(frozen=True)
class ConfidenceMultiplier:
    """Scales by ``(1 + multiplier/confidence) ** exponent`` (VPA ``WithConfidenceMultiplier``)."""

    multiplier: float
    exponent: float
    base: ResourceEstimator
    interval: timedelta = timedelta(hours=24)

    def estimate(self, usage: UsageSummary) -> Amounts:
        conf = confidence(
            usage.first_sample_ns, usage.last_sample_ns, usage.total_samples_count, duration_ns(self.interval)
        )
        factor = confidence_factor(self.multiplier, self.exponent, conf)
        amounts = self.base.estimate(usage)
        return Amounts(scale_amount(amounts.tflops, factor), scale_amount(amounts.vram, factor))


@dataclass(frozen=True)
class MinResourcesEstimator:
    """At least ``minimum`` of each resource (VPA ``WithMinResources``)."""

    minimum: Amounts
    base: ResourceEstimator

    def estimate(self, usage: UsageSummary) -> Amounts:
        amounts = self.base.estimate(usage)
        return Amounts(max(amounts.tflops, self.minimum.tflops), max(amounts.vram, self.minimum.vram))


def with_margin(fraction: float, base: ResourceEstimator) -> ResourceEstimator:
    return MarginEstimator(fraction, base)


def with_confidence_multiplier(
    multiplier: float, exponent: float, base: ResourceEstimator, interval: timedelta = timedelta(hours=24)
) -> ResourceEstimator:
    return ConfidenceMultiplier(multiplier, exponent, base, interval)


def with_min_resources(minimum: Amounts, base: ResourceEstimator) -> ResourceEstimator:
    return MinResourcesEstimator(minimum, base)


@dataclass(frozen=True)
class EstimatorChains:
    """The three chains TensorFusion's percentile recommender builds."""

    target: ResourceEstimator
    lower_bound: ResourceEstimator
    upper_bound: ResourceEstimator


def build_estimators(config: AutoSetResources) -> EstimatorChains:
    """Target, lower and upper bound chains from ``autoSetResources`` (percentiles, margin, interval)."""
    margin = config.request_margin_fraction
    interval = config.confidence_interval
    target = with_margin(margin, PercentileEstimator(config.target_tflops_percentile, config.target_vram_percentile))
    lower = with_confidence_multiplier(
        *LOWER_BOUND_MULTIPLIER,
        with_margin(
            margin,
            PercentileEstimator(config.lower_bound_tflops_percentile, config.lower_bound_vram_percentile),
        ),
        interval,
    )
    upper = with_confidence_multiplier(
        *UPPER_BOUND_MULTIPLIER,
        with_margin(
            margin,
            PercentileEstimator(config.upper_bound_tflops_percentile, config.upper_bound_vram_percentile),
        ),
        interval,
    )
    return EstimatorChains(target=target, lower_bound=lower, upper_bound=upper)


@dataclass(frozen=True)
class Estimates:
    """Target, lower and upper bound amounts, plus whether there was any history at all."""

    target: Amounts
    lower_bound: Amounts
    upper_bound: Amounts
    has_tflops_history: bool = True
    has_vram_history: bool = True

    def has_history(self, resource: ResourceName) -> bool:
        return self.has_tflops_history if resource == "tflops" else self.has_vram_history


def estimate(config: AutoSetResources, usage: UsageSummary) -> Estimates:
    """Run the three chains on one workload's usage."""
    chains = build_estimators(config)
    return Estimates(
        target=chains.target.estimate(usage),
        lower_bound=chains.lower_bound.estimate(usage),
        upper_bound=chains.upper_bound.estimate(usage),
        has_tflops_history=not usage.tflops.is_empty(),
        has_vram_history=not usage.vram.is_empty(),
    )
