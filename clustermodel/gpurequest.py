"""What a pod asks for, read from its ``tensor-fusion.ai/*`` annotations, and the
*effective* request it is placed and accounted with.

The effective request replaces the declared values with a
:class:`ResourceOverride` (what the workload's recommendation and active cron
rule impose, read by :mod:`tfsched.clustermodel.workload`).  Filter, score,
bind and the allocation ledger all use :func:`apply_override`, so a pod is
never filtered with one number and accounted with another.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.quantity import MILLI_PER_TFLOPS, QuantityError, milli_tflops, parse_quantity, whole_bytes

MAX_GPU_COUNT = 128
# Bounds of what one pod may ask per GPU: far above any GPU made, far below
# where float arithmetic on the inventory stops being exact (2**53).
MAX_TFLOPS = 1e6  # TFLOPS per GPU
MAX_VRAM = float(2**50)  # bytes per GPU (1 PiB)
MAX_GPU_INDEX = 1023
MAX_ANNOTATION_TEXT = 256  # characters of a quantity or index list


class RequestError(ValueError):
    """A pod annotation that cannot be read; the message names the annotation."""


@dataclass(frozen=True, slots=True)
class GPURequest:
    """Per-GPU resources and placement constraints of one pod.

    TFLOPS are either absolute (``tflops_*``) or a share of each GPU's
    capacity (``percent_*``, 0–100); when both were annotated, TFLOPS wins and
    the percentages are zero.  VRAM is in bytes.
    """

    tflops_request: float = 0.0
    tflops_limit: float = 0.0
    percent_request: float = 0.0
    percent_limit: float = 0.0
    vram_request: float = 0.0
    vram_limit: float = 0.0
    gpu_count: int = 1
    gpu_models: tuple[str, ...] = ()  # any of these models ("" in the annotation: any model)
    vendor: str = ""
    pool: str = ""
    gpu_indices: frozenset[int] | None = None
    qos: str = ""
    workload: str = ""
    dedicated: bool = False

    def tflops_on(self, capacity_tflops: float) -> float:
        """TFLOPS this request takes on a GPU of the given capacity."""
        return self.tflops_request + self.percent_request / 100.0 * capacity_tflops


@dataclass(frozen=True, slots=True)
class ResourceOverride:
    """Values a workload imposes on its pods: requests and limits per resource,
    ``None`` where the declared value stands."""

    tflops_request: float | None = None
    tflops_limit: float | None = None
    vram_request: float | None = None
    vram_limit: float | None = None
    source: str = ""  # "recommendation", "cron:<rule>", or both joined with "+"


_BOUNDS = {
    ann.TFLOPS_REQUEST: (MAX_TFLOPS, f"{MAX_TFLOPS:g} TFLOPS"),
    ann.TFLOPS_LIMIT: (MAX_TFLOPS, f"{MAX_TFLOPS:g} TFLOPS"),
    ann.VRAM_REQUEST: (MAX_VRAM, "1Pi of VRAM"),
    ann.VRAM_LIMIT: (MAX_VRAM, "1Pi of VRAM"),
}


def is_gpu_pod(annotations: Mapping[str, str] | None) -> bool:
    """Whether the pod asks for TensorFusion GPU resources at all."""
    if not annotations:
        return False
    if type(annotations) is dict:  # decoded JSON: one C call
        return not annotations.keys().isdisjoint(_GPU_POD_KEYS)
    return any(key in annotations for key in _GPU_POD_KEYS)


_GPU_POD_KEYS = frozenset(ann.GPU_POD_ANNOTATIONS)


def _quantity(annotations: Mapping[str, str], key: str) -> float | None:
    raw = annotations.get(key)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise RequestError(f"annotation {key}: expected a string, got {type(raw).__name__}")
    if len(raw) > MAX_ANNOTATION_TEXT:
        raise RequestError(f"annotation {key}: longer than {MAX_ANNOTATION_TEXT} characters")
    try:
        value = parse_quantity(raw)
    except QuantityError as exc:
        raise RequestError(f"annotation {key}: {exc}") from None
    bound = _BOUNDS.get(key)
    if bound is not None and value > bound[0]:
        raise RequestError(f"annotation {key}: {raw} is above the maximum of {bound[1]} per GPU")
    return value


def _pair(annotations: Mapping[str, str], req_key: str, lim_key: str) -> tuple[float, float]:
    """Request and limit; each defaults to the other, and request ≤ limit."""
    request = _quantity(annotations, req_key)
    limit = _quantity(annotations, lim_key)
    if request is None:
        request = limit if limit is not None else 0.0
    if limit is None:
        limit = request
    if request > limit:
        raise RequestError(f"annotation {req_key} ({annotations[req_key]}) exceeds {lim_key} ({annotations[lim_key]})")
    return request, limit


def parse_gpu_models(raw: object) -> tuple[str, ...]:
    """``tensor-fusion.ai/gpu-model``: one model, or a comma-separated list of models
    any of which will do (``V100M16,V100M32``), in order, without repeats."""
    text = str(raw or "")
    if len(text) > MAX_ANNOTATION_TEXT:
        raise RequestError(f"annotation {ann.GPU_MODEL}: longer than {MAX_ANNOTATION_TEXT} characters")
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


# Every annotation parse_gpu_request reads (its cache is keyed by their values).
_REQUEST_KEYS = (
    ann.TFLOPS_REQUEST,
    ann.TFLOPS_LIMIT,
    ann.COMPUTE_PERCENT_REQUEST,
    ann.COMPUTE_PERCENT_LIMIT,
    ann.VRAM_REQUEST,
    ann.VRAM_LIMIT,
    ann.GPU_COUNT,
    ann.GPU_INDICES,
    ann.GPU_MODEL,
    ann.VENDOR,
    ann.GPU_POOL,
    ann.QOS,
    ann.WORKLOAD,
    ann.DEDICATED_GPU,
)


_STR_ONLY = frozenset({str})


def parse_gpu_request(annotations: Mapping[str, str]) -> GPURequest:
    """Read a pod's annotations; :class:`RequestError` names the bad annotation.

    The pods of a workload ask alike: each distinct set of short string values is read
    once (a bounded LRU; a :class:`GPURequest` is immutable, so it is shared)."""
    values = tuple(map(annotations.get, _REQUEST_KEYS))
    # Only short strings are cache keys (C-level checks: this runs once per pod event).
    present = [v for v in values if v is not None]
    if set(map(type, present)) <= _STR_ONLY and max(map(len, present), default=0) <= MAX_ANNOTATION_TEXT:
        return _parse_values(values)
    return _parse_gpu_request(annotations)


@functools.lru_cache(maxsize=1024)
def _parse_values(values: tuple[str | None, ...]) -> GPURequest:
    return _parse_gpu_request({k: v for k, v in zip(_REQUEST_KEYS, values, strict=True) if v is not None})


def _parse_gpu_request(annotations: Mapping[str, str]) -> GPURequest:
    tflops_req, tflops_lim = _pair(annotations, ann.TFLOPS_REQUEST, ann.TFLOPS_LIMIT)
    pct_req, pct_lim = _pair(annotations, ann.COMPUTE_PERCENT_REQUEST, ann.COMPUTE_PERCENT_LIMIT)
    if pct_lim > 100:
        raise RequestError(f"annotation {ann.COMPUTE_PERCENT_LIMIT}: must be between 0 and 100")
    if tflops_lim > 0:  # TFLOPS wins over compute percent when both are given
        pct_req = pct_lim = 0.0
    vram_req, vram_lim = _pair(annotations, ann.VRAM_REQUEST, ann.VRAM_LIMIT)

    raw_count = annotations.get(ann.GPU_COUNT, "1") or "1"
    try:
        if len(str(raw_count)) > MAX_ANNOTATION_TEXT:
            raise ValueError
        gpu_count = int(str(raw_count).strip())
    except ValueError:
        raise RequestError(f"annotation {ann.GPU_COUNT}: {raw_count!r} is not an integer") from None
    if not 1 <= gpu_count <= MAX_GPU_COUNT:
        raise RequestError(f"annotation {ann.GPU_COUNT}: {gpu_count} is outside 1..{MAX_GPU_COUNT}")

    indices: frozenset[int] | None = None
    raw_indices = annotations.get(ann.GPU_INDICES, "")
    if raw_indices:
        if len(str(raw_indices)) > MAX_ANNOTATION_TEXT:
            raise RequestError(f"annotation {ann.GPU_INDICES}: longer than {MAX_ANNOTATION_TEXT} characters")
        try:
            indices = frozenset(int(part) for part in str(raw_indices).split(",") if part.strip())
        except ValueError:
            raise RequestError(
                f"annotation {ann.GPU_INDICES}: {raw_indices!r} is not a comma-separated list of integers"
            ) from None
        if any(not 0 <= i <= MAX_GPU_INDEX for i in indices):
            raise RequestError(f"annotation {ann.GPU_INDICES}: indices must be between 0 and {MAX_GPU_INDEX}")

    return GPURequest(
        tflops_request=tflops_req,
        tflops_limit=tflops_lim,
        percent_request=pct_req,
        percent_limit=pct_lim,
        vram_request=vram_req,
        vram_limit=vram_lim,
        gpu_count=gpu_count,
        gpu_models=parse_gpu_models(annotations.get(ann.GPU_MODEL, "")),
        vendor=str(annotations.get(ann.VENDOR, "") or ""),
        pool=str(annotations.get(ann.GPU_POOL, "") or ""),
        gpu_indices=indices,
        qos=str(annotations.get(ann.QOS, "") or ""),
        workload=str(annotations.get(ann.WORKLOAD, "") or ""),
        dedicated=str(annotations.get(ann.DEDICATED_GPU, "")).lower() == "true",
    )


def _accounted_tflops(tflops: float) -> float:
    return milli_tflops(tflops) / MILLI_PER_TFLOPS


def apply_override(request: GPURequest, override: ResourceOverride) -> GPURequest:
    """The effective request: declared values with the override's in their place.

    A TFLOPS override replaces a compute-percent request too (it is absolute).
    Limits never fall below requests.  Values are rounded up to what is
    accounted and written back (whole milli-TFLOPS, whole bytes), so the
    annotations bind writes read back as exactly this request.
    """
    if not override.source:
        return request
    changes: dict[str, float] = {}
    if override.tflops_request is not None or override.tflops_limit is not None:
        t_req = override.tflops_request if override.tflops_request is not None else request.tflops_request
        t_lim = override.tflops_limit if override.tflops_limit is not None else request.tflops_limit
        t_req, t_lim = _accounted_tflops(t_req), _accounted_tflops(t_lim)
        changes |= {"tflops_request": t_req, "tflops_limit": max(t_lim, t_req)}
        changes |= {"percent_request": 0.0, "percent_limit": 0.0}
    if override.vram_request is not None or override.vram_limit is not None:
        v_req = override.vram_request if override.vram_request is not None else request.vram_request
        v_lim = override.vram_limit if override.vram_limit is not None else request.vram_limit
        v_req, v_lim = float(whole_bytes(v_req)), float(whole_bytes(v_lim))
        changes |= {"vram_request": v_req, "vram_limit": max(v_lim, v_req)}
    return replace(request, **changes)
