"""Histogram checkpoints in a workload's ``status.histogramCheckpoint``.

VPA's checkpoint shape (``version``, per-resource bucket weights, first and
last sample times, sample count), so a restarted loop, or a new leader,
continues with the same histograms and the same recommendation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tfsched.autoscale.bank import NONE_NS, UsageBank
from tfsched.autoscale.histogram import DecayingHistogram
from tfsched.autoscale.usage import HALF_LIFE, TFLOPS_OPTIONS, VRAM_OPTIONS
from tfsched.clustermodel.times import format_micro_time, from_unix_ns, parse_time_or_none, to_unix_ns

CHECKPOINT_VERSION = "v3"


def checkpoint_of(bank: UsageBank, row: int) -> dict[str, Any]:
    """The checkpoint of one bank row, as status JSON."""
    first, last = int(bank.first[row]), int(bank.last[row])
    return {
        "version": CHECKPOINT_VERSION,
        "tflops": bank.tflops.to_histogram(row).save_to_checkpoint(),
        "vram": bank.vram.to_histogram(row).save_to_checkpoint(),
        # Microseconds, not metav1.Time's whole seconds: the confidence of the
        # bounds depends on the span, and a restart must not move them.
        "firstSampleStart": None if first == NONE_NS else format_micro_time(from_unix_ns(first)),
        "lastSampleStart": None if last == NONE_NS else format_micro_time(from_unix_ns(last)),
        "totalSamplesCount": int(bank.count[row]),
    }


def restore_checkpoint(bank: UsageBank, row: int, checkpoint: Mapping[str, Any]) -> int:
    """Load a checkpoint into ``row``; returns the time up to which samples are in it
    (``NONE_NS`` when it has none).  Raises on an unreadable checkpoint, leaving
    the row for the caller to reset."""
    for histograms, options, key in ((bank.tflops, TFLOPS_OPTIONS, "tflops"), (bank.vram, VRAM_OPTIONS, "vram")):
        histogram = DecayingHistogram(options, HALF_LIFE)
        histogram.load_from_checkpoint(checkpoint.get(key))
        histograms.load_histogram(row, histogram)
    cutoff = NONE_NS
    first = parse_time_or_none(checkpoint.get("firstSampleStart"))
    last = parse_time_or_none(checkpoint.get("lastSampleStart"))
    if first is not None and last is not None:
        bank.first[row] = to_unix_ns(first)
        bank.last[row] = cutoff = to_unix_ns(last)
    bank.count[row] = int(checkpoint.get("totalSamplesCount") or 0)
    return cutoff
