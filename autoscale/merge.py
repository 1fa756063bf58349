"""Combine the vertical and cron proposals into one set of resources.

Per resource (TFLOPS, VRAM), in integer amounts:

1. **Proposals**: the vertical recommender's new (request, limit) — VRAM
   rounded up to a whole Mi (:func:`whole_mebibytes`: bytes beyond that are
   noise, and ``2422Mi`` reads better than ``2539377048`` in status and
   annotations alike) — and the
   cron proposal — a rule's ``desiredResources`` when it has just become
   active, or the workload's original resources when a rule has just ended.
   A zero request in ``desiredResources`` means "not specified".
2. **Larger request wins** among the proposals; the limit travels with its
   request.  No proposal keeps the current pair.
3. **Cron floor**: while a rule is active, the result never goes below its
   desired request (the vertical recommender may scale above it, not below).
4. **Max allowed**: a scale-up never asks for more than the workload's GPUs
   can give (``max_allowed``, computed by the caller from GPU availability);
   the request is set to that value (or kept, if already above it), the limit
   keeps its ratio, and the message reads ``TFlops request set to max
   allowed: (100)`` / ``VRAM request set to max allowed: (8Gi)``.

The same merge, run without proposals that may not be applied (vertical in
recommend-only mode), gives what should actually be applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tfsched.autoscale.estimators import RESOURCES, Amounts, ResourceAmounts, ResourceName
from tfsched.autoscale.vertical import format_amount, proportional_limit
from tfsched.clustermodel.quantity import whole_mebibytes

CAP_LABELS: dict[ResourceName, str] = {"tflops": "TFlops", "vram": "VRAM"}


@dataclass(frozen=True)
class MergeResult:
    """Merged resources and the max-allowed messages produced on the way."""

    resources: ResourceAmounts
    messages: tuple[str, ...] = ()


def merge_resources(
    current: ResourceAmounts,
    *,
    vertical: Mapping[ResourceName, tuple[int, int]] | None = None,
    cron_proposal: ResourceAmounts | None = None,
    cron_floor: ResourceAmounts | None = None,
    max_allowed: Amounts | None = None,
) -> MergeResult:
    """Merge proposals per resource (see the module docstring)."""
    result = current
    messages: list[str] = []
    for resource in RESOURCES:
        candidates: list[tuple[int, int]] = []
        if vertical and resource in vertical:
            proposed = vertical[resource]
            if resource == "vram":
                proposed = (whole_mebibytes(proposed[0]), whole_mebibytes(proposed[1]))
            candidates.append(proposed)
        if cron_proposal is not None and cron_proposal.requests.get(resource) > 0:
            candidates.append(cron_proposal.pair(resource))
        chosen = max(candidates, key=lambda pair: pair[0]) if candidates else current.pair(resource)
        if cron_floor is not None:
            floor = cron_floor.pair(resource)
            if floor[0] > chosen[0]:
                chosen = floor
        cur_request = current.requests.get(resource)
        if max_allowed is not None and chosen[0] > cur_request:
            allowed = max_allowed.get(resource)
            if allowed > 0 and chosen[0] > allowed:
                capped = max(allowed, cur_request)
                limit = proportional_limit(chosen[1], chosen[0], capped, resource) if chosen[0] > 0 else chosen[1]
                chosen = (capped, limit)
                messages.append(
                    f"{CAP_LABELS[resource]} request set to max allowed: ({format_amount(resource, capped)})"
                )
        result = result.with_pair(resource, *chosen)
    return MergeResult(result, tuple(messages))
