"""VPA's histograms, ported number for number.

This is the Kubernetes Vertical Pod Autoscaler recommender's
``pkg/recommender/util`` (``histogram_options.go``, ``histogram.go``,
``decaying_histogram.go``) with its Go names in snake_case:
:class:`HistogramOptions` (``linear`` / ``exponential``), :class:`Histogram`
and :class:`DecayingHistogram`.  Every number matches VPA's on linux/amd64:

* bucket boundaries use Go's ``math.Log`` / ``math.Pow`` (see
  :mod:`tfsched.autoscale.gomath`), so a value that lands exactly on a boundary goes
  to the same bucket and a percentile (the **end** of its bucket, never
  interpolated) is the same float;
* a decaying sample's weight is multiplied by ``2**((t - ref) / halfLife)``
  computed in integer nanoseconds and Go's ``math.Exp2``; once a sample is
  more than 100 half-lives past the reference, the reference moves to the
  sample time rounded to a multiple of the half-life *counted from Go's zero
  time* (0001-01-01 UTC) and the weights are scaled by the matching power of
  two (only the buckets inside the min..max range are scaled, as in VPA);
* a checkpoint normalises bucket weights so the largest is 10000
  (``floor(w·10000/max + 0.5)``, zeros dropped) and keeps the float total.

Rounding: histograms hold float64 weights and never round a value; the only
integer rounding is the checkpoint normalisation above and the reference
timestamp, which a checkpoint stores with whole seconds (RFC 3339) exactly as
``metav1.Time`` serialises it.  A never-set reference (Go's zero time) is
stored as ``None`` (JSON ``null``), as ``metav1.Time`` does.

Times are timezone-aware :class:`datetime.datetime`; internally they are
integer nanoseconds since the Unix epoch.

One module on purpose: it is VPA's three histogram files ported together, and
their options, histogram and decaying histogram are read side by side with
the Go source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from tfsched.autoscale.gomath import go_exp2, go_log, go_pow, go_round, ldexp
from tfsched.clustermodel.times import (
    NS_PER_SECOND,
    duration_ns,
    format_time,
    from_unix_ns,
    parse_time,
    to_unix_ns,
)

MAX_CHECKPOINT_WEIGHT = 10000
# VPA's maxDecayExponent: renormalise once the decay factor would pass 2**100.
MAX_DECAY_EXPONENT = 100
# The reference bank rows and these classes share: half-lives beyond this make
# "100 half-lives after Go's zero time" land after 1970, which the int64
# nanosecond representation of the batch path cannot express.
MAX_HALF_LIFE = timedelta(days=3650)

# Nanoseconds from Go's zero time (0001-01-01T00:00:00Z) to the Unix epoch.
GO_ZERO_TO_UNIX_NS = 62_135_596_800 * NS_PER_SECOND
_MIN_DURATION = -(1 << 63)
_MAX_DURATION = (1 << 63) - 1


class CheckpointError(ValueError):
    """A histogram checkpoint that cannot be loaded."""


def _saturate(ns: int) -> int:
    # Go's Time.Sub clamps to the int64 Duration range instead of overflowing.
    return max(_MIN_DURATION, min(_MAX_DURATION, ns))


def go_round_time_ns(unix_ns: int, step_ns: int) -> int:
    """Go's ``Time.Round(step)``: nearest multiple of ``step`` since Go's zero time, halves up."""
    if step_ns <= 0:
        return unix_ns
    remainder = (unix_ns + GO_ZERO_TO_UNIX_NS) % step_ns
    if remainder + remainder < step_ns:
        return unix_ns - remainder
    return unix_ns + (step_ns - remainder)


def format_checkpoint_time(unix_ns: int | None) -> str | None:
    """``metav1.Time`` JSON: RFC 3339 in UTC with whole seconds; ``None`` for the zero time."""
    if unix_ns is None:
        return None
    return format_time(from_unix_ns(unix_ns // NS_PER_SECOND * NS_PER_SECOND))


def parse_checkpoint_time(text: str | None) -> int | None:
    """Parse an RFC 3339 checkpoint timestamp into Unix nanoseconds (``None`` stays ``None``)."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise CheckpointError(f"referenceTimestamp {text!r} is not an RFC 3339 string")
    try:
        return to_unix_ns(parse_time(text))
    except ValueError as exc:
        raise CheckpointError(f"referenceTimestamp: {exc}") from None


@dataclass(frozen=True)
class HistogramOptions:
    """Bucketing scheme: VPA's ``linearHistogramOptions`` / ``exponentialHistogramOptions``."""

    kind: Literal["linear", "exponential"]
    num_buckets: int
    first_bucket_size: float
    ratio: float
    epsilon: float
    # Go recomputes math.Log(ratio) on every call; caching the same value is equivalent.
    _log_ratio: float = field(default=0.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "exponential":
            object.__setattr__(self, "_log_ratio", go_log(self.ratio))

    @classmethod
    def linear(cls, max_value: float, bucket_size: float, epsilon: float) -> HistogramOptions:
        """``NewLinearHistogramOptions``: ``ceil(max/size) + 1`` buckets of ``bucket_size``."""
        if not (max_value > 0.0 and bucket_size > 0.0 and epsilon > 0.0):
            raise ValueError("max_value, bucket_size and epsilon must all be positive")
        num_buckets = math.ceil(max_value / bucket_size) + 1
        return cls("linear", num_buckets, bucket_size, 1.0, epsilon)

    @classmethod
    def exponential(cls, max_value: float, first_bucket_size: float, ratio: float, epsilon: float) -> HistogramOptions:
        """``NewExponentialHistogramOptions``: bucket ``n`` starts at ``first·(ratio**n − 1)/(ratio − 1)``."""
        if not (max_value > 0.0 and first_bucket_size > 0.0 and ratio > 1.0 and epsilon > 0.0):
            raise ValueError("max_value, first_bucket_size and epsilon must be > 0, ratio must be > 1")
        log_ratio = go_log(ratio)
        num_buckets = math.ceil(go_log(max_value * (ratio - 1.0) / first_bucket_size + 1.0) / log_ratio) + 1
        return cls("exponential", num_buckets, first_bucket_size, ratio, epsilon)

    def find_bucket(self, value: float) -> int:
        """Index of the bucket ``value`` falls in; out-of-range values go to the first or last bucket."""
        if self.kind == "linear":
            quotient = value / self.first_bucket_size
            if math.isnan(quotient) or quotient < 0.0:
                return 0
            if quotient >= self.num_buckets:
                return self.num_buckets - 1
            return int(quotient)
        if math.isnan(value) or value < self.first_bucket_size:
            return 0
        position = go_log(value * (self.ratio - 1.0) / self.first_bucket_size + 1.0) / self._log_ratio
        if position >= self.num_buckets:
            return self.num_buckets - 1
        return int(position)

    def get_bucket_start(self, bucket: int) -> float:
        """Start of bucket ``bucket`` (0 for the first)."""
        if bucket < 0 or bucket >= self.num_buckets:
            raise IndexError(f"index {bucket} out of range [0..{self.num_buckets - 1}]")
        if self.kind == "linear":
            return float(bucket) * self.first_bucket_size
        if bucket == 0:
            return 0.0
        return self.first_bucket_size * (go_pow(self.ratio, float(bucket)) - 1.0) / (self.ratio - 1.0)

    def bucket_starts(self) -> list[float]:
        """All bucket starts, index by index."""
        return [self.get_bucket_start(b) for b in range(self.num_buckets)]


class Histogram:
    """VPA's plain ``histogram``: bucket weights, a total and the min/max non-empty bucket."""

    def __init__(self, options: HistogramOptions) -> None:
        self.options = options
        self.bucket_weight: list[float] = [0.0] * options.num_buckets
        self.total_weight = 0.0
        self.min_bucket = options.num_buckets - 1
        self.max_bucket = 0

    def add_sample(self, value: float, weight: float, time: datetime | None = None) -> None:
        """Add ``weight`` to the bucket of ``value``; ``time`` matters only to decaying histograms."""
        self._add(value, weight)

    def subtract_sample(self, value: float, weight: float, time: datetime | None = None) -> None:
        """Remove up to ``weight`` from the bucket of ``value`` (a bucket never goes negative)."""
        self._subtract(value, weight)

    def _add(self, value: float, weight: float) -> None:
        if weight < 0.0:
            raise ValueError("sample weight must be non-negative")
        bucket = self.options.find_bucket(value)
        self.bucket_weight[bucket] += weight
        self.total_weight += weight
        # As in VPA, only a bucket that reaches epsilon widens the non-empty range.
        if bucket < self.min_bucket and self.bucket_weight[bucket] >= self.options.epsilon:
            self.min_bucket = bucket
        if bucket > self.max_bucket and self.bucket_weight[bucket] >= self.options.epsilon:
            self.max_bucket = bucket

    def _subtract(self, value: float, weight: float) -> None:
        if weight < 0.0:
            raise ValueError("sample weight must be non-negative")
        bucket = self.options.find_bucket(value)
        if weight > self.bucket_weight[bucket] - self.options.epsilon:
            weight = self.bucket_weight[bucket]
        self.total_weight -= weight
        self.bucket_weight[bucket] -= weight
        self._update_min_and_max_bucket()

    def merge(self, other: Histogram) -> None:
        """Add all of ``other``'s samples; both must use equal options."""
        if self.options != other.options:
            raise ValueError("can't merge histograms with different options")
        for bucket in range(other.min_bucket, other.max_bucket + 1):
            self.bucket_weight[bucket] += other.bucket_weight[bucket]
        self.total_weight += other.total_weight
        self.min_bucket = min(self.min_bucket, other.min_bucket)
        self.max_bucket = max(self.max_bucket, other.max_bucket)

    def percentile(self, percentile: float) -> float:
        """The end of the bucket where the cumulative weight reaches ``percentile × total`` (0 if empty)."""
        if self.is_empty():
            return 0.0
        threshold = percentile * self.total_weight
        partial_sum = 0.0
        bucket = self.min_bucket
        while bucket < self.max_bucket:
            partial_sum += self.bucket_weight[bucket]
            if partial_sum >= threshold:
                break
            bucket += 1
        if bucket < self.options.num_buckets - 1:
            return self.options.get_bucket_start(bucket + 1)
        # The last bucket has no end.
        return self.options.get_bucket_start(bucket)

    def is_empty(self) -> bool:
        """True when the first non-empty bucket holds less than epsilon."""
        return self.bucket_weight[self.min_bucket] < self.options.epsilon

    def equals(self, other: Histogram) -> bool:
        """VPA's ``Equals``: same options, same range, weights within 1e-15."""
        if type(self) is not type(other) or self.options != other.options:
            return False
        if self.min_bucket != other.min_bucket or self.max_bucket != other.max_bucket:
            return False
        return all(
            abs(self.bucket_weight[b] - other.bucket_weight[b]) <= 1e-15
            for b in range(self.min_bucket, self.max_bucket + 1)
        )

    def _update_min_and_max_bucket(self) -> None:
        epsilon = self.options.epsilon
        last_bucket = self.options.num_buckets - 1
        while self.bucket_weight[self.min_bucket] < epsilon and self.min_bucket < last_bucket:
            self.min_bucket += 1
        while self.bucket_weight[self.max_bucket] < epsilon and self.max_bucket > 0:
            self.max_bucket -= 1

    def _scale(self, factor: float) -> None:
        if factor < 0.0:
            raise ValueError("scale factor must be non-negative")
        for bucket in range(self.min_bucket, self.max_bucket + 1):
            self.bucket_weight[bucket] *= factor
        self.total_weight *= factor
        self._update_min_and_max_bucket()

    def _checkpoint_buckets(self) -> dict[str, int]:
        max_weight = 0.0
        for bucket in range(self.min_bucket, self.max_bucket + 1):
            max_weight = max(max_weight, self.bucket_weight[bucket])
        weights: dict[str, int] = {}
        if max_weight <= 0.0:
            # Go computes 10000/0 and drops every NaN-derived weight; the outcome is no buckets.
            return weights
        ratio = float(MAX_CHECKPOINT_WEIGHT) / max_weight
        for bucket in range(self.min_bucket, self.max_bucket + 1):
            new_weight = go_round(self.bucket_weight[bucket] * ratio)
            if new_weight > 0:
                weights[str(bucket)] = new_weight
        return weights

    def save_to_checkpoint(self) -> dict[str, Any]:
        """VPA ``HistogramCheckpoint`` JSON: ``referenceTimestamp``, ``bucketWeights``, ``totalWeight``."""
        return {
            "referenceTimestamp": None,
            "bucketWeights": self._checkpoint_buckets(),
            "totalWeight": self.total_weight,
        }

    def load_from_checkpoint(self, checkpoint: Mapping[str, Any] | None) -> None:
        """Add a checkpoint's samples to this histogram (VPA ``LoadFromCheckpoint``)."""
        if checkpoint is None:
            raise CheckpointError("cannot load from empty checkpoint")
        total = checkpoint.get("totalWeight", 0.0)
        if isinstance(total, bool) or not isinstance(total, (int, float)) or math.isnan(total):
            raise CheckpointError(f"checkpoint totalWeight {total!r} is not a number")
        total = float(total)
        if total < 0.0:
            raise CheckpointError(f"cannot load checkpoint with negative weight {total}")
        raw_weights = checkpoint.get("bucketWeights") or {}
        if not isinstance(raw_weights, Mapping):
            raise CheckpointError("checkpoint bucketWeights must be a mapping of bucket index to weight")
        weights: list[tuple[int, int]] = []
        total_stored = 0
        for key, weight in raw_weights.items():
            try:
                bucket = int(key)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"checkpoint bucket index {key!r} is not an integer") from exc
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0 or weight >= 1 << 32:
                raise CheckpointError(f"checkpoint bucket {bucket} weight {weight!r} is not a uint32")
            if bucket >= self.options.num_buckets:
                raise CheckpointError(
                    f"checkpoint has bucket {bucket} that is exceeding histogram buckets {self.options.num_buckets}"
                )
            if bucket < 0:
                raise CheckpointError(f"checkpoint has a negative bucket {bucket}")
            total_stored += weight
            weights.append((bucket, weight))
        if total_stored == 0:
            return
        ratio = total / float(total_stored)
        for bucket, weight in weights:
            self.min_bucket = min(self.min_bucket, bucket)
            self.max_bucket = max(self.max_bucket, bucket)
            self.bucket_weight[bucket] += float(weight) * ratio
        self.total_weight += total

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_bucket={self.min_bucket}, max_bucket={self.max_bucket}, "
            f"total_weight={self.total_weight!r})"
        )


class DecayingHistogram(Histogram):
    """VPA's ``decayingHistogram``: newer samples weigh more, halving every ``half_life``."""

    def __init__(self, options: HistogramOptions, half_life: timedelta) -> None:
        super().__init__(options)
        if half_life <= timedelta(0) or half_life > MAX_HALF_LIFE:
            raise ValueError(f"half_life must be in (0, {MAX_HALF_LIFE}]")
        self.half_life = half_life
        self._half_life_ns = duration_ns(half_life)
        # None is Go's zero time.Time{}: the reference before the first sample.
        self.reference_ns: int | None = None

    @property
    def reference_timestamp(self) -> datetime | None:
        """The current decay reference (``None`` before the first sample)."""
        return None if self.reference_ns is None else from_unix_ns(self.reference_ns)

    def add_sample(self, value: float, weight: float, time: datetime | None = None) -> None:
        if time is None:
            raise ValueError("a decaying histogram needs the sample time")
        self._add(value, weight * self._decay_factor(to_unix_ns(time)))

    def subtract_sample(self, value: float, weight: float, time: datetime | None = None) -> None:
        if time is None:
            raise ValueError("a decaying histogram needs the sample time")
        self._subtract(value, weight * self._decay_factor(to_unix_ns(time)))

    def add_sample_ns(self, value: float, weight: float, unix_ns: int) -> None:
        """:meth:`add_sample` with the time already in Unix nanoseconds."""
        self._add(value, weight * self._decay_factor(unix_ns))

    def subtract_sample_ns(self, value: float, weight: float, unix_ns: int) -> None:
        """:meth:`subtract_sample` with the time already in Unix nanoseconds."""
        self._subtract(value, weight * self._decay_factor(unix_ns))

    def merge(self, other: Histogram) -> None:
        """Align both references to the younger one (shifting ``other`` too, as VPA does), then add."""
        if not isinstance(other, DecayingHistogram):
            raise TypeError("can only merge a DecayingHistogram into a DecayingHistogram")
        if self.half_life != other.half_life:
            raise ValueError("can't merge decaying histograms with different half life periods")
        mine = self._abs_reference()
        theirs = other._abs_reference()
        if mine < theirs:
            self._shift_reference(other.reference_ns)
        elif theirs < mine:
            other._shift_reference(self.reference_ns)
        super().merge(other)

    def equals(self, other: Histogram) -> bool:
        return (
            isinstance(other, DecayingHistogram)
            and self.half_life == other.half_life
            and self.reference_ns == other.reference_ns
            and super().equals(other)
        )

    def save_to_checkpoint(self) -> dict[str, Any]:
        checkpoint = super().save_to_checkpoint()
        checkpoint["referenceTimestamp"] = format_checkpoint_time(self.reference_ns)
        return checkpoint

    def load_from_checkpoint(self, checkpoint: Mapping[str, Any] | None) -> None:
        if checkpoint is None:
            raise CheckpointError("cannot load from empty checkpoint")
        reference = parse_checkpoint_time(checkpoint.get("referenceTimestamp"))
        super().load_from_checkpoint(checkpoint)
        self.reference_ns = reference

    # Go's zero time is 0001-01-01; "absolute" times count from there so it compares correctly.
    def _abs_reference(self) -> int:
        return 0 if self.reference_ns is None else self.reference_ns + GO_ZERO_TO_UNIX_NS

    def _shift_reference(self, new_reference_ns: int | None) -> None:
        if new_reference_ns is None:
            # Rounding the zero time yields the zero time; scale by 2**0.
            new_abs = 0
            rounded: int | None = None
        else:
            rounded = go_round_time_ns(new_reference_ns, self._half_life_ns)
            new_abs = rounded + GO_ZERO_TO_UNIX_NS
        difference = _saturate(self._abs_reference() - new_abs)
        exponent = go_round(float(difference) / float(self._half_life_ns))
        self._scale(ldexp(1.0, exponent))
        self.reference_ns = rounded

    def _decay_factor(self, unix_ns: int) -> float:
        sample_abs = unix_ns + GO_ZERO_TO_UNIX_NS
        max_allowed = self._abs_reference() + self._half_life_ns * MAX_DECAY_EXPONENT
        if sample_abs > max_allowed:
            self._shift_reference(unix_ns)
        elapsed = _saturate(sample_abs - self._abs_reference())
        return go_exp2(float(elapsed) / float(self._half_life_ns))
