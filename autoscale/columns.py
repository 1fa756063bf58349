"""Per-pod GPU usage samples as columns (pure: numpy only, no I/O).

Columnar because of the volume: a 7-day history at a 1-minute step is 10,080
points per series and query, so a fleet of thousands of pods loads hundreds
of millions of points.  As one Python object (plus a ``datetime``) per sample
that is hundreds of bytes each, gigabytes in all, and most of the load time
goes to allocation and the garbage collector; as columns it is 28 bytes a row
and four allocations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class UsageColumns:
    """Usage samples as columns, in time order (ties: in the order Prometheus answered).

    Row ``i`` is pod ``pods[pod[i]]`` at ``time_ns[i]``.  Every (pod code, time)
    pair appears at most once, and ``pods`` holds only pods with at least one
    row.  ``tflops``/``vram`` are NaN where that query had no value.
    """

    pods: tuple[tuple[str, str], ...]  # pod code -> (namespace, pod name)
    time_ns: np.ndarray  # int64, Unix nanoseconds (Prometheus' millisecond timestamps * 1_000_000)
    pod: np.ndarray  # int32, index into `pods`
    tflops: np.ndarray  # float64, NaN where the TFLOPS query had no value at that (pod, time)
    vram: np.ndarray  # float64, NaN where the VRAM query had no value

    def __post_init__(self) -> None:
        # O(1) checks only: a mismatch here would otherwise surface far away, as wrong numbers.
        n = self.time_ns.shape
        for name, array, kind in (
            ("time_ns", self.time_ns, "i"),
            ("pod", self.pod, "i"),
            ("tflops", self.tflops, "f"),
            ("vram", self.vram, "f"),
        ):
            if array.ndim != 1 or array.shape != n:
                raise ValueError(f"UsageColumns.{name} has shape {array.shape}, expected {n} like time_ns")
            if array.dtype.kind != kind:
                raise ValueError(f"UsageColumns.{name} has dtype {array.dtype}")

    def __len__(self) -> int:
        return int(self.time_ns.shape[0])

    def __eq__(self, other: object) -> bool:
        # The generated __eq__ would compare arrays element-wise and fail on truth-testing them.
        if not isinstance(other, UsageColumns):
            return NotImplemented
        return (
            self.pods == other.pods
            and np.array_equal(self.time_ns, other.time_ns)
            and np.array_equal(self.pod, other.pod)
            and np.array_equal(self.tflops, other.tflops, equal_nan=True)
            and np.array_equal(self.vram, other.vram, equal_nan=True)
        )

    @classmethod
    def empty(cls) -> UsageColumns:
        return cls(
            pods=(),
            time_ns=np.empty(0, np.int64),
            pod=np.empty(0, np.int32),
            tflops=np.empty(0, np.float64),
            vram=np.empty(0, np.float64),
        )

    def rows(self) -> list[tuple[str, str, int, float | None, float | None]]:
        """For tests and debugging only: ``(namespace, pod, time_ns, tflops or None, vram or None)`` per row."""
        pods = self.pods
        return [
            (*pods[code], time, tflops if tflops == tflops else None, vram if vram == vram else None)  # NaN != NaN
            for code, time, tflops, vram in zip(
                self.pod.tolist(), self.time_ns.tolist(), self.tflops.tolist(), self.vram.tolist(), strict=True
            )
        ]
