"""Batch histograms for many workloads: numba kernels over 2-D arrays.

:class:`HistogramBank` holds one VPA decaying histogram per row —
``weights[rows × buckets]`` plus per-row total, min/max non-empty bucket and
decay reference — and updates it with compiled loops, sample by sample in the
given order, so its numbers are **identical** to :class:`~tfsched.autoscale.histogram.DecayingHistogram`
fed the same samples (the kernels call the same Go-math routines, and the
tests check equality with hypothesis).  :class:`UsageBank` is
:class:`~tfsched.autoscale.usage.WorkloadUsage` for many workloads at once: a TFLOPS
and a VRAM bank, per-row sample statistics and per-worker VRAM windows.
:func:`estimate_all` and :func:`decide_all` recompute every workload's
estimates and vertical decision in one call.

Storage choice: weights stay **float64**.  Both TFLOPS (0.1 … 10000, ×1.05)
and VRAM (1e7 … 1e12 bytes, ×1.05) need 176 buckets, so the two histograms
take 2 × 176 × 8 = 2816 bytes per workload; with the per-row metadata
(72 bytes) and a few workers (41 bytes each; 2970 bytes with two) a workload
stays well under the 4 KB budget.  float32 would halve that but change sums at the last bits and
break exactness against VPA, which accumulates in float64.

Times are int64 nanoseconds since the Unix epoch; ``NONE_NS`` (int64 min)
stands for "never" (Go's zero time for a decay reference).

One module on purpose: the kernels share inline numba helpers and the arrays'
layout with the classes that own them, and they are the batch twins of
:mod:`tfsched.autoscale.histogram`; split, the layout would be spelled twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from tfsched.autoscale.estimators import (
    RESOURCES,
    TFLOPS_UNIT,
    VRAM_UNIT,
    Amounts,
    Estimates,
    amount_from_float,
    confidence_factor,
    confidence_from_span,
    margin_amount,
    scale_amount,
)
from tfsched.autoscale.gomath import go_exp2, go_log, go_round, ldexp
from tfsched.autoscale.histogram import (
    GO_ZERO_TO_UNIX_NS,
    MAX_DECAY_EXPONENT,
    MAX_HALF_LIFE,
    DecayingHistogram,
    HistogramOptions,
)
from tfsched.autoscale.usage import (
    HALF_LIFE,
    TFLOPS_OPTIONS,
    TFLOPS_SAMPLE_WEIGHT,
    VRAM_AGGREGATION_INTERVAL,
    VRAM_OPTIONS,
    VRAM_PEAK_WEIGHT,
)
from tfsched.autoscale.vertical import LIMIT_CEILING, Action
from tfsched.clustermodel.times import duration_ns, to_unix_ns

if TYPE_CHECKING:
    from datetime import timedelta

    from tfsched.clustermodel.autoscaling_config import AutoSetResources

NONE_NS = np.iinfo(np.int64).min
_MIN_DURATION = -(1 << 63)

# Option vectors passed to kernels: [linear(0/1), first, ratio, log_ratio, num_buckets, epsilon].
_LINEAR, _FIRST, _RATIO, _LOG_RATIO, _NB, _EPS = range(6)
# Decay vectors: [half_life_ns, phase_ns, zero_reference_exponent].
_HL, _PHASE, _ZERO_EXP = range(3)


def _options_vector(options: HistogramOptions) -> np.ndarray:
    return np.array(
        [
            1.0 if options.kind == "linear" else 0.0,
            options.first_bucket_size,
            options.ratio,
            options._log_ratio,
            float(options.num_buckets),
            options.epsilon,
        ]
    )


def _decay_vector(half_life_ns: int) -> np.ndarray:
    # Rounding to a multiple of the half-life counts from Go's zero time, not the Unix epoch.
    phase = GO_ZERO_TO_UNIX_NS % half_life_ns
    # From the zero time, Go's Time.Sub saturates at the minimum Duration.
    zero_exponent = go_round(float(_MIN_DURATION) / float(half_life_ns))
    return np.array([half_life_ns, phase, zero_exponent], dtype=np.int64)


# ---------------------------------------------------------------------------
# Kernels (one row = one histogram)
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _find_bucket(value: float, opt: np.ndarray) -> int:
    nb = int(opt[_NB])
    if opt[_LINEAR] != 0.0:
        quotient = value / opt[_FIRST]
        if quotient != quotient or quotient < 0.0:
            return 0
        if quotient >= nb:
            return nb - 1
        return int(quotient)
    if value != value or value < opt[_FIRST]:
        return 0
    position = go_log(value * (opt[_RATIO] - 1.0) / opt[_FIRST] + 1.0) / opt[_LOG_RATIO]
    if position >= nb:
        return nb - 1
    return int(position)


@njit(cache=True, inline="always")
def _update_min_max(w, minb, maxb, row, opt):
    eps = opt[_EPS]
    last = int(opt[_NB]) - 1
    lo = minb[row]
    while w[row, lo] < eps and lo < last:
        lo += 1
    hi = maxb[row]
    while w[row, hi] < eps and hi > 0:
        hi -= 1
    minb[row] = lo
    maxb[row] = hi


@njit(cache=True, inline="always")
def _add(w, total, minb, maxb, row, bucket, weight, opt):
    w[row, bucket] += weight
    total[row] += weight
    if bucket < minb[row] and w[row, bucket] >= opt[_EPS]:
        minb[row] = bucket
    if bucket > maxb[row] and w[row, bucket] >= opt[_EPS]:
        maxb[row] = bucket


@njit(cache=True, inline="always")
def _subtract(w, total, minb, maxb, row, bucket, weight, opt):
    if weight > w[row, bucket] - opt[_EPS]:
        weight = w[row, bucket]
    total[row] -= weight
    w[row, bucket] -= weight
    _update_min_max(w, minb, maxb, row, opt)


@njit(cache=True, inline="always")
def _scale(w, total, minb, maxb, row, factor, opt):
    for bucket in range(minb[row], maxb[row] + 1):
        w[row, bucket] *= factor
    total[row] *= factor
    _update_min_max(w, minb, maxb, row, opt)


@njit(cache=True, inline="always")
def _needs_shift(reference, t, decay):
    return reference == NONE_NS or t > reference + decay[_HL] * MAX_DECAY_EXPONENT


@njit(cache=True)
def _shift_reference(w, total, minb, maxb, ref, row, t, opt, decay):
    # Cold path, deliberately not inlined: keeping it out of the sample loops keeps them fast.
    half_life = decay[_HL]
    reference = ref[row]
    remainder = (t + decay[_PHASE]) % half_life
    # Go's Time.Round: halves round up.
    new_reference = t - remainder if remainder + remainder < half_life else t + (half_life - remainder)
    if reference == NONE_NS:
        exponent = decay[_ZERO_EXP]
    else:
        exponent = go_round(float(reference - new_reference) / float(half_life))
    _scale(w, total, minb, maxb, row, ldexp(1.0, exponent), opt)
    ref[row] = new_reference


@njit(cache=True, inline="always")
def _factor(reference, t, decay):
    return go_exp2(float(t - reference) / float(decay[_HL]))


@njit(cache=True)
def _decay_factor(w, total, minb, maxb, ref, row, t, opt, decay):
    if _needs_shift(ref[row], t, decay):
        _shift_reference(w, total, minb, maxb, ref, row, t, opt, decay)
    return _factor(ref[row], t, decay)


@njit(cache=True, inline="always")
def _percentile(w, total, minb, maxb, row, p, starts, opt):
    if w[row, minb[row]] < opt[_EPS]:
        return 0.0
    threshold = p * total[row]
    partial = 0.0
    bucket = minb[row]
    while bucket < maxb[row]:
        partial += w[row, bucket]
        if partial >= threshold:
            break
        bucket += 1
    if bucket < int(opt[_NB]) - 1:
        return starts[bucket + 1]
    return starts[bucket]


@njit(cache=True)
def _add_samples_kernel(w, total, minb, maxb, ref, rows, values, weights, times, opt, decay, subtract):
    n = rows.shape[0]
    i = 0
    while i < n:
        # Hot loop: samples that need no reference shift.
        while i < n:
            row = rows[i]
            t = times[i]
            if _needs_shift(ref[row], t, decay):
                break
            weight = weights[i] * _factor(ref[row], t, decay)
            bucket = _find_bucket(values[i], opt)
            if subtract:
                _subtract(w, total, minb, maxb, row, bucket, weight, opt)
            else:
                _add(w, total, minb, maxb, row, bucket, weight, opt)
            i += 1
        if i < n:
            # VPA shifts inside decayFactor, before the sample is added; the hot loop then adds it.
            _shift_reference(w, total, minb, maxb, ref, rows[i], times[i], opt, decay)


@njit(cache=True)
def _percentiles_kernel(w, total, minb, maxb, rows, ps, starts, opt, out):
    for i in range(rows.shape[0]):
        for j in range(ps.shape[0]):
            out[i, j] = _percentile(w, total, minb, maxb, rows[i], ps[j], starts, opt)


@njit(cache=True)
def _usage_one(
    tw, ttotal, tmin, tmax, tref, topt,
    vw, vtotal, vmin, vmax, vref, vopt,
    decay, first, last, count,
    slot_row, last_tflops, last_vram, window_end, peak, has_peak,
    slot, t, x, v,
    interval, tflops_weight, vram_weight,
):  # fmt: skip
    """One sample, every case (the WorkloadUsage rules); returns accepted (TFLOPS, VRAM) as 0/1."""
    row = slot_row[slot]
    accepted_tflops = 0
    accepted_vram = 0
    if x == x and x >= 0.0 and (last_tflops[slot] == NONE_NS or t >= last_tflops[slot]):
        factor = _decay_factor(tw, ttotal, tmin, tmax, tref, row, t, topt, decay)
        _add(tw, ttotal, tmin, tmax, row, _find_bucket(x, topt), tflops_weight * factor, topt)
        last_tflops[slot] = t
        if last[row] == NONE_NS or t > last[row]:
            last[row] = t
        if first[row] == NONE_NS or t < first[row]:
            first[row] = t
        count[row] += 1
        accepted_tflops = 1
    if v == v and v >= 0.0 and (last_vram[slot] == NONE_NS or t >= last_vram[slot]):
        value = float(math.floor(v))
        last_vram[slot] = t
        if window_end[slot] == NONE_NS:
            window_end[slot] = t
        end = window_end[slot]
        if t < end:
            if has_peak[slot] and value > peak[slot]:
                factor = _decay_factor(vw, vtotal, vmin, vmax, vref, row, end, vopt, decay)
                _subtract(vw, vtotal, vmin, vmax, row, _find_bucket(peak[slot], vopt), vram_weight * factor, vopt)
                factor = _decay_factor(vw, vtotal, vmin, vmax, vref, row, end, vopt, decay)
                _add(vw, vtotal, vmin, vmax, row, _find_bucket(value, vopt), vram_weight * factor, vopt)
                peak[slot] = value
        else:
            end = end + ((t - end) // interval) * interval + interval
            window_end[slot] = end
            factor = _decay_factor(vw, vtotal, vmin, vmax, vref, row, end, vopt, decay)
            _add(vw, vtotal, vmin, vmax, row, _find_bucket(value, vopt), vram_weight * factor, vopt)
            peak[slot] = value
            has_peak[slot] = True
        accepted_vram = 1
    return accepted_tflops, accepted_vram


@njit(cache=True)
def _usage_kernel(
    tw, ttotal, tmin, tmax, tref, topt,
    vw, vtotal, vmin, vmax, vref, vopt,
    decay, first, last, count,
    slot_row, last_tflops, last_vram, window_end, peak, has_peak,
    slots, times, tflops, vram,
    interval, tflops_weight, vram_weight,
):  # fmt: skip
    accepted_tflops = 0
    accepted_vram = 0
    n = slots.shape[0]
    i = 0
    while i < n:
        # Hot loop: the common sample (TFLOPS without a reference shift, VRAM inside the current
        # window and not a new peak).  Anything else goes to _usage_one, which handles every case.
        while i < n:
            slot = slots[i]
            row = slot_row[slot]
            t = times[i]
            x = tflops[i]
            tflops_ok = x == x and x >= 0.0 and (last_tflops[slot] == NONE_NS or t >= last_tflops[slot])
            if tflops_ok and _needs_shift(tref[row], t, decay):
                break
            v = vram[i]
            vram_ok = v == v and v >= 0.0 and (last_vram[slot] == NONE_NS or t >= last_vram[slot])
            if vram_ok:
                end = window_end[slot]
                if end == NONE_NS or t >= end or (has_peak[slot] and math.floor(v) > peak[slot]):
                    break
                last_vram[slot] = t
                accepted_vram += 1
            if tflops_ok:
                weight = tflops_weight * _factor(tref[row], t, decay)
                _add(tw, ttotal, tmin, tmax, row, _find_bucket(x, topt), weight, topt)
                last_tflops[slot] = t
                if last[row] == NONE_NS or t > last[row]:
                    last[row] = t
                if first[row] == NONE_NS or t < first[row]:
                    first[row] = t
                count[row] += 1
                accepted_tflops += 1
            i += 1
        if i < n:
            accepted = _usage_one(
                tw, ttotal, tmin, tmax, tref, topt,
                vw, vtotal, vmin, vmax, vref, vopt,
                decay, first, last, count,
                slot_row, last_tflops, last_vram, window_end, peak, has_peak,
                slots[i], times[i], tflops[i], vram[i],
                interval, tflops_weight, vram_weight,
            )  # fmt: skip
            accepted_tflops += accepted[0]
            accepted_vram += accepted[1]
            i += 1
    return accepted_tflops, accepted_vram


@njit(cache=True, inline="always")
def _estimate_resource(w, total, minb, maxb, row, starts, opt, ps, unit, margin, lower_factor, upper_factor):
    target = margin_amount(amount_from_float(_percentile(w, total, minb, maxb, row, ps[0], starts, opt) * unit), margin)
    lower = margin_amount(amount_from_float(_percentile(w, total, minb, maxb, row, ps[1], starts, opt) * unit), margin)
    upper = margin_amount(amount_from_float(_percentile(w, total, minb, maxb, row, ps[2], starts, opt) * unit), margin)
    return target, scale_amount(lower, lower_factor), scale_amount(upper, upper_factor)


@njit(cache=True)
def _estimate_kernel(
    tw, ttotal, tmin, tmax, tstarts, topt,
    vw, vtotal, vmin, vmax, vstarts, vopt,
    first, last, count, rows, tps, vps, margin, interval_ns, out, has,
):  # fmt: skip
    for i in range(rows.shape[0]):
        row = rows[i]
        span = 0
        if first[row] != NONE_NS and last[row] != NONE_NS:
            span = last[row] - first[row]
        conf = confidence_from_span(span, count[row], interval_ns)
        upper_factor = confidence_factor(1.0, 1.0, conf)
        lower_factor = confidence_factor(0.001, -2.0, conf)
        t = _estimate_resource(
            tw, ttotal, tmin, tmax, row, tstarts, topt, tps, 1000.0, margin, lower_factor, upper_factor
        )
        v = _estimate_resource(vw, vtotal, vmin, vmax, row, vstarts, vopt, vps, 1.0, margin, lower_factor, upper_factor)
        out[i, 0] = t[0]
        out[i, 1] = t[1]
        out[i, 2] = t[2]
        out[i, 3] = v[0]
        out[i, 4] = v[1]
        out[i, 5] = v[2]
        has[i, 0] = tw[row, tmin[row]] >= topt[_EPS]
        has[i, 1] = vw[row, vmin[row]] >= vopt[_EPS]


@njit(cache=True)
def _decide_kernel(est, has, current, targeted, step_fraction, action, new_request, new_limit):
    for i in range(est.shape[0]):
        for r in range(2):
            target = est[i, 3 * r]
            lower = est[i, 3 * r + 1]
            upper = est[i, 3 * r + 2]
            request = current[i, 2 * r]
            limit = current[i, 2 * r + 1]
            new_request[i, r] = request
            new_limit[i, r] = limit
            if not targeted[r]:
                action[i, r] = 3
            elif not has[i, r]:
                action[i, r] = 4
            elif request <= 0 or limit <= 0 or target <= 0:
                action[i, r] = 5
            elif request < lower or request > upper:
                proposed = target
                if step_fraction > 0.0:
                    if target > request:
                        proposed = min(target, math.floor(request * (1.0 + step_fraction)))
                    else:
                        proposed = max(target, math.ceil(request * (1.0 - step_fraction)))
                action[i, r] = 1 if request < lower else 2
                new_request[i, r] = proposed
                # limit × proposed can pass 2**63 (bytes × bytes): decide_all finishes it exactly.
                new_limit[i, r] = -1
            else:
                action[i, r] = 0


# ---------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------


def _as_times(times: np.ndarray | list[datetime] | list[int]) -> np.ndarray:
    array = np.asarray(times)
    if array.dtype == object:
        return np.array([to_unix_ns(t) for t in array], dtype=np.int64)
    if np.issubdtype(array.dtype, np.datetime64):
        return array.astype("datetime64[ns]").astype(np.int64)
    return array.astype(np.int64)


class HistogramBank:
    """Many decaying histograms with the same options and half-life, one per row."""

    def __init__(self, options: HistogramOptions, half_life: timedelta = HALF_LIFE, capacity: int = 0) -> None:
        if half_life.total_seconds() <= 0 or half_life > MAX_HALF_LIFE:
            raise ValueError(f"half_life must be in (0, {MAX_HALF_LIFE}]")
        self.options = options
        self.half_life = half_life
        self._opt = _options_vector(options)
        self._decay = _decay_vector(duration_ns(half_life))
        self._starts = np.array(options.bucket_starts())
        self.size = 0
        self._allocate(max(capacity, 1))

    def _allocate(self, capacity: int) -> None:
        nb = self.options.num_buckets
        self.weights = np.zeros((capacity, nb))
        self.total = np.zeros(capacity)
        self.min_bucket = np.full(capacity, nb - 1, dtype=np.int32)
        self.max_bucket = np.zeros(capacity, dtype=np.int32)
        self.reference = np.full(capacity, NONE_NS, dtype=np.int64)

    @property
    def capacity(self) -> int:
        return self.weights.shape[0]

    def add_rows(self, count: int = 1) -> np.ndarray:
        """Append ``count`` empty histograms; returns their row indices."""
        needed = self.size + count
        if needed > self.capacity:
            old = (self.weights, self.total, self.min_bucket, self.max_bucket, self.reference)
            self._allocate(max(needed, 2 * self.capacity))
            for new, previous in zip(
                (self.weights, self.total, self.min_bucket, self.max_bucket, self.reference), old, strict=True
            ):
                new[: self.size] = previous[: self.size]
        rows = np.arange(self.size, needed)
        self.size = needed
        return rows

    def reset_row(self, row: int) -> None:
        """Empty one histogram (e.g. when its workload is deleted and the row reused)."""
        self.weights[row] = 0.0
        self.total[row] = 0.0
        self.min_bucket[row] = self.options.num_buckets - 1
        self.max_bucket[row] = 0
        self.reference[row] = NONE_NS

    def _check_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.size):
            raise IndexError("row out of range")
        return rows

    def add_samples(self, rows, values, weights, times) -> None:
        """Add samples in order: ``rows[i]`` gets ``values[i]`` with ``weights[i]`` at ``times[i]``.

        ``times`` are int64 Unix nanoseconds, ``datetime64`` or aware datetimes.
        """
        self._apply(rows, values, weights, times, subtract=False)

    def subtract_samples(self, rows, values, weights, times) -> None:
        """Subtract samples in order (a bucket never goes negative)."""
        self._apply(rows, values, weights, times, subtract=True)

    def _apply(self, rows, values, weights, times, *, subtract: bool) -> None:
        rows = self._check_rows(rows)
        values = np.ascontiguousarray(values, dtype=np.float64)
        weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), rows.shape).copy()
        if (weights < 0.0).any():
            raise ValueError("sample weight must be non-negative")
        stamps = _as_times(times)
        if not (rows.shape == values.shape == stamps.shape):
            raise ValueError("rows, values and times must have the same length")
        _add_samples_kernel(
            self.weights, self.total, self.min_bucket, self.max_bucket, self.reference,
            rows, values, weights, stamps, self._opt, self._decay, subtract,
        )  # fmt: skip

    def percentiles(self, ps, rows=None) -> np.ndarray:
        """``[len(rows) × len(ps)]`` percentiles (all rows by default); 0 for empty rows."""
        rows = np.arange(self.size) if rows is None else self._check_rows(rows)
        ps = np.atleast_1d(np.asarray(ps, dtype=np.float64))
        out = np.empty((rows.shape[0], ps.shape[0]))
        _percentiles_kernel(
            self.weights, self.total, self.min_bucket, self.max_bucket, rows, ps, self._starts, self._opt, out
        )
        return out

    def percentile(self, row: int, p: float) -> float:
        return float(self.percentiles([p], [row])[0, 0])

    def is_empty(self, rows=None) -> np.ndarray:
        """Per row: whether the histogram is empty."""
        rows = np.arange(self.size) if rows is None else self._check_rows(rows)
        return self.weights[rows, self.min_bucket[rows]] < self.options.epsilon

    def row_view(self, row: int) -> BankRow:
        """A read-only histogram view of one row (``percentile``, ``is_empty``)."""
        return BankRow(self, row)

    def to_histogram(self, row: int) -> DecayingHistogram:
        """A scalar :class:`DecayingHistogram` equal to this row (for checkpoints or inspection)."""
        hist = DecayingHistogram(self.options, self.half_life)
        hist.bucket_weight = self.weights[row].tolist()
        hist.total_weight = float(self.total[row])
        hist.min_bucket = int(self.min_bucket[row])
        hist.max_bucket = int(self.max_bucket[row])
        ref = int(self.reference[row])
        hist.reference_ns = None if ref == NONE_NS else ref
        return hist

    def load_histogram(self, row: int, hist: DecayingHistogram) -> None:
        """Replace a row with the state of a scalar histogram (e.g. one loaded from a checkpoint)."""
        if hist.options != self.options or hist.half_life != self.half_life:
            raise ValueError("histogram options or half-life differ from the bank's")
        self.weights[row] = hist.bucket_weight
        self.total[row] = hist.total_weight
        self.min_bucket[row] = hist.min_bucket
        self.max_bucket[row] = hist.max_bucket
        self.reference[row] = NONE_NS if hist.reference_ns is None else hist.reference_ns

    def bytes_per_row(self) -> float:
        arrays = (self.weights, self.total, self.min_bucket, self.max_bucket, self.reference)
        return sum(a.nbytes for a in arrays) / self.capacity


@dataclass(frozen=True)
class BankRow:
    """One row of a :class:`HistogramBank`, usable wherever a histogram is read."""

    bank: HistogramBank
    row: int

    def percentile(self, percentile: float) -> float:
        return self.bank.percentile(self.row, percentile)

    def is_empty(self) -> bool:
        return bool(self.bank.is_empty([self.row])[0])


@dataclass(frozen=True)
class UsageRow:
    """One workload of a :class:`UsageBank` as a :class:`~tfsched.autoscale.estimators.UsageSummary`."""

    tflops: BankRow
    vram: BankRow
    first_sample_ns: int | None
    last_sample_ns: int | None
    total_samples_count: int


class UsageBank:
    """:class:`~tfsched.autoscale.usage.WorkloadUsage` for many workloads, with batch ingestion.

    Rows are workloads; *slots* are workers (each belongs to one row).  Callers
    map names to indices once (:meth:`add_workload`, :meth:`worker_slot`) and
    then ingest arrays of samples with :meth:`add_samples`.
    """

    def __init__(
        self,
        capacity: int = 0,
        worker_capacity: int = 0,
        *,
        half_life: timedelta = HALF_LIFE,
        vram_aggregation_interval: timedelta = VRAM_AGGREGATION_INTERVAL,
    ) -> None:
        self.tflops = HistogramBank(TFLOPS_OPTIONS, half_life, capacity)
        self.vram = HistogramBank(VRAM_OPTIONS, half_life, capacity)
        self._interval_ns = duration_ns(vram_aggregation_interval)
        self.first = np.full(self.tflops.capacity, NONE_NS, dtype=np.int64)
        self.last = np.full(self.tflops.capacity, NONE_NS, dtype=np.int64)
        self.count = np.zeros(self.tflops.capacity, dtype=np.int64)
        self.worker_count = 0
        self._allocate_workers(max(worker_capacity, 1))
        self._slots: dict[tuple[int, str], int] = {}

    @property
    def size(self) -> int:
        return self.tflops.size

    def _allocate_workers(self, capacity: int) -> None:
        self.slot_row = np.zeros(capacity, dtype=np.int64)
        self.last_tflops = np.full(capacity, NONE_NS, dtype=np.int64)
        self.last_vram = np.full(capacity, NONE_NS, dtype=np.int64)
        self.window_end = np.full(capacity, NONE_NS, dtype=np.int64)
        self.peak = np.zeros(capacity)
        self.has_peak = np.zeros(capacity, dtype=np.bool_)

    def _worker_arrays(self) -> tuple[np.ndarray, ...]:
        return (self.slot_row, self.last_tflops, self.last_vram, self.window_end, self.peak, self.has_peak)

    def add_workloads(self, count: int = 1) -> np.ndarray:
        """Append ``count`` workloads; returns their rows."""
        rows = self.tflops.add_rows(count)
        self.vram.add_rows(count)
        if self.tflops.capacity > self.first.shape[0]:
            grown = self.tflops.capacity
            for name, fill in (("first", NONE_NS), ("last", NONE_NS), ("count", 0)):
                old = getattr(self, name)
                new = np.full(grown, fill, dtype=np.int64)
                new[: old.shape[0]] = old
                setattr(self, name, new)
        return rows

    def add_workers(self, rows) -> np.ndarray:
        """Append one worker slot per entry of ``rows`` (the workload it belongs to); returns the slots."""
        rows = np.asarray(rows, dtype=np.int64)
        needed = self.worker_count + rows.shape[0]
        if needed > self.slot_row.shape[0]:
            old = self._worker_arrays()
            self._allocate_workers(max(needed, 2 * self.slot_row.shape[0]))
            for new, previous in zip(self._worker_arrays(), old, strict=True):
                new[: self.worker_count] = previous[: self.worker_count]
        slots = np.arange(self.worker_count, needed)
        self.slot_row[slots] = rows
        self.worker_count = needed
        return slots

    def worker_slot(self, row: int, worker: str) -> int:
        """The slot of a named worker of workload ``row``, created on first use."""
        key = (row, worker)
        slot = self._slots.get(key)
        if slot is None:
            slot = int(self.add_workers([row])[0])
            self._slots[key] = slot
        return slot

    def add_samples(self, slots, times, tflops, vram) -> tuple[int, int]:
        """Ingest samples in order; NaN marks a missing value.  Returns accepted (TFLOPS, VRAM) counts."""
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        if slots.size and (slots.min() < 0 or slots.max() >= self.worker_count):
            raise IndexError("worker slot out of range")
        stamps = _as_times(times)
        tflops = np.ascontiguousarray(tflops, dtype=np.float64)
        vram = np.ascontiguousarray(vram, dtype=np.float64)
        if not (slots.shape == stamps.shape == tflops.shape == vram.shape):
            raise ValueError("slots, times, tflops and vram must have the same length")
        t, v = self.tflops, self.vram
        accepted = _usage_kernel(
            t.weights, t.total, t.min_bucket, t.max_bucket, t.reference, t._opt,
            v.weights, v.total, v.min_bucket, v.max_bucket, v.reference, v._opt,
            t._decay, self.first, self.last, self.count,
            *self._worker_arrays(),
            slots, stamps, tflops, vram,
            self._interval_ns, TFLOPS_SAMPLE_WEIGHT, VRAM_PEAK_WEIGHT,
        )  # fmt: skip
        return int(accepted[0]), int(accepted[1])

    def reset_workload(self, row: int) -> None:
        """Forget a workload's history (e.g. before reusing the row); its worker slots start afresh."""
        self.tflops.reset_row(row)
        self.vram.reset_row(row)
        self.first[row] = NONE_NS
        self.last[row] = NONE_NS
        self.count[row] = 0
        slots = np.nonzero(self.slot_row[: self.worker_count] == row)[0]
        for array in (self.last_tflops, self.last_vram, self.window_end):
            array[slots] = NONE_NS
        self.peak[slots] = 0.0
        self.has_peak[slots] = False

    def summary(self, row: int) -> UsageRow:
        """One workload as a usage summary for :func:`tfsched.autoscale.recommend.recommend`."""
        first = int(self.first[row])
        last = int(self.last[row])
        return UsageRow(
            tflops=self.tflops.row_view(row),
            vram=self.vram.row_view(row),
            first_sample_ns=None if first == NONE_NS else first,
            last_sample_ns=None if last == NONE_NS else last,
            total_samples_count=int(self.count[row]),
        )

    def bytes_per_workload(self) -> float:
        """Memory per workload: both banks, row statistics and worker slots, over allocated rows."""
        per_row = self.tflops.bytes_per_row() + self.vram.bytes_per_row()
        per_row += (self.first.nbytes + self.last.nbytes + self.count.nbytes) / self.first.shape[0]
        workers = sum(a.nbytes for a in self._worker_arrays())
        return per_row + workers / max(self.size, 1)


@dataclass(frozen=True)
class BatchEstimates:
    """Estimates for many workloads: ``amounts[i] = [tflops target, lower, upper, vram target, lower, upper]``."""

    rows: np.ndarray
    amounts: np.ndarray
    has_history: np.ndarray  # [n × 2]: TFLOPS, VRAM

    def estimates(self, i: int) -> Estimates:
        """The :class:`~tfsched.autoscale.estimators.Estimates` of the ``i``-th row."""
        a = self.amounts[i]
        return Estimates(
            target=Amounts(int(a[0]), int(a[3])),
            lower_bound=Amounts(int(a[1]), int(a[4])),
            upper_bound=Amounts(int(a[2]), int(a[5])),
            has_tflops_history=bool(self.has_history[i, 0]),
            has_vram_history=bool(self.has_history[i, 1]),
        )


def estimate_all(bank: UsageBank, config: AutoSetResources, rows=None) -> BatchEstimates:
    """Target, lower and upper amounts (milli-TFLOPS, bytes) of every workload, as ``estimators.estimate``."""
    rows = np.arange(bank.size) if rows is None else bank.tflops._check_rows(rows)
    out = np.empty((rows.shape[0], 6), dtype=np.int64)
    has = np.empty((rows.shape[0], 2), dtype=np.bool_)
    tps = np.array(
        [config.target_tflops_percentile, config.lower_bound_tflops_percentile, config.upper_bound_tflops_percentile]
    )
    vps = np.array(
        [config.target_vram_percentile, config.lower_bound_vram_percentile, config.upper_bound_vram_percentile]
    )
    t, v = bank.tflops, bank.vram
    assert TFLOPS_UNIT == 1000.0 and VRAM_UNIT == 1.0  # the kernel hard-codes these units
    _estimate_kernel(
        t.weights, t.total, t.min_bucket, t.max_bucket, t._starts, t._opt,
        v.weights, v.total, v.min_bucket, v.max_bucket, v._starts, v._opt,
        bank.first, bank.last, bank.count, rows, tps, vps,
        config.request_margin_fraction, duration_ns(config.confidence_interval), out, has,
    )  # fmt: skip
    return BatchEstimates(rows=rows, amounts=out, has_history=has)


@dataclass(frozen=True)
class BatchDecisions:
    """Vertical decisions: ``action``, ``new_request``, ``new_limit`` are ``[n × 2]`` (TFLOPS, VRAM)."""

    action: np.ndarray
    new_request: np.ndarray
    new_limit: np.ndarray

    def changed(self) -> np.ndarray:
        """Rows where at least one resource moves."""
        return np.isin(self.action, (int(Action.UP), int(Action.DOWN))).any(axis=1)


def decide_all(estimates: BatchEstimates, current: np.ndarray, config: AutoSetResources) -> BatchDecisions:
    """:func:`tfsched.autoscale.vertical.decide_vertical` for every row.

    ``current`` is ``[n × 4]`` int64: TFLOPS request, TFLOPS limit (milli), VRAM request, VRAM limit (bytes).
    """
    current = np.ascontiguousarray(current, dtype=np.int64)
    n = estimates.amounts.shape[0]
    if current.shape != (n, 4):
        raise ValueError(f"current must have shape ({n}, 4)")
    action = np.empty((n, 2), dtype=np.int8)
    new_request = np.empty((n, 2), dtype=np.int64)
    new_limit = np.empty((n, 2), dtype=np.int64)
    targeted = np.array([config.targets("tflops"), config.targets("vram")])
    fraction = config.max_step_fraction if config.max_step_fraction is not None else -1.0
    _decide_kernel(
        estimates.amounts, estimates.has_history, current, targeted, fraction, action, new_request, new_limit
    )
    # The proportional limit, limit × new_request // request, exactly: int64 where the product
    # fits, Python integers where it might not.
    rows, cols = np.nonzero(new_limit < 0)
    if rows.size:
        limits = current[rows, 2 * cols + 1]
        requests = current[rows, 2 * cols]
        proposed = new_request[rows, cols]
        fits = limits <= np.iinfo(np.int64).max // np.maximum(proposed, 1)
        ceiling = np.array([LIMIT_CEILING[r] for r in RESOURCES], np.int64)[cols]
        new_limit[rows[fits], cols[fits]] = np.minimum(limits[fits] * proposed[fits] // requests[fits], ceiling[fits])
        for i, j, limit, request, value in zip(
            rows[~fits], cols[~fits], limits[~fits], requests[~fits], proposed[~fits], strict=True
        ):
            new_limit[i, j] = min(int(limit) * int(value) // int(request), LIMIT_CEILING[RESOURCES[j]])
    return BatchDecisions(action, new_request, new_limit)


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) every kernel of the banks,
    so the first autoscale interval does not stall the process compiling them
    (seconds, with the event loop that answers kube-scheduler blocked)."""
    from tfsched.clustermodel.autoscaling_config import AutoSetResources

    bank = UsageBank(1, 1)
    rows = bank.add_workloads(1)
    slot = bank.worker_slot(int(rows[0]), "warm-up")
    times = np.array([0, 10**9], np.int64)
    bank.add_samples(np.array([slot, slot]), times, np.array([1.0, 2.0]), np.array([1e9, 2e9]))
    values, weights = np.array([1.0, 2.0]), np.ones(2)
    both = np.array([rows[0], rows[0]], np.int64)
    bank.tflops.add_samples(both, values, weights, times)
    bank.tflops.subtract_samples(both, values, weights, times)
    bank.tflops.percentiles(np.array([0.5]))
    config = AutoSetResources()
    decide_all(estimate_all(bank, config), np.ones((1, 4), np.int64), config)
