"""Vertical recommendation: move a request that left the estimated band back to the target.

Per resource (TFLOPS, VRAM), as TensorFusion's percentile recommender does:

* current request below the lower bound → scale **up** to the target;
* current request above the upper bound → scale **down** to the target;
* inside [lower, upper] → no change;
* a zero current request or limit, a zero target, or an empty history → the
  resource is skipped.

The new limit keeps the old limit/request ratio: ``limit × new_request //
request`` in integer amounts (milli-TFLOPS, bytes), i.e. rounded down like
TensorFusion's ``big.Int`` division.  ``autoSetResources.targetResource``
(``tflops`` or ``vram``) restricts which resources are recommended at all;
empty or ``all`` means both.  Nothing is applied unless
``autoSetResources.enable`` is true and ``targetResource`` is non-empty
(:attr:`VerticalResult.applies`): otherwise the result is a recommendation
only.

Optional (``maxStepFraction``, off by default): one change may move the
request by at most that fraction of the current request — up to
``floor(request × (1 + f))``, down to ``ceil(request × (1 − f))``.

The condition message is TensorFusion's: ``TFLOPS scaled up due to (20)
below lower bound (100), VRAM scaled down due to (40Gi) above upper bound
(20Gi)``; values are formatted with :func:`tfsched.clustermodel.quantity.format_tflops`
and :func:`tfsched.clustermodel.quantity.format_bytes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

from tfsched.autoscale.estimators import RESOURCES, TFLOPS_UNIT, Estimates, ResourceAmounts, ResourceName
from tfsched.clustermodel.autoscaling_config import AutoSetResources
from tfsched.clustermodel.gpurequest import MAX_TFLOPS, MAX_VRAM
from tfsched.clustermodel.quantity import format_bytes, format_tflops

LABELS: dict[ResourceName, str] = {"tflops": "TFLOPS", "vram": "VRAM"}


class Action(IntEnum):
    """What the vertical recommender does with one resource (the codes the batch path returns)."""

    NONE = 0  # request inside the estimated band
    UP = 1
    DOWN = 2
    NOT_TARGETED = 3  # targetResource excludes it
    NO_HISTORY = 4
    ZERO = 5  # zero request, limit or target


def format_amount(resource: ResourceName, amount: int, *, exact: bool = False) -> str:
    """An amount as a quantity string: milli-TFLOPS via ``format_tflops``, bytes via
    ``format_bytes``, rounded up to Mi unless ``exact`` (messages are for reading;
    ``--json`` estimates are data)."""
    if resource == "tflops":
        return format_tflops(amount / TFLOPS_UNIT)
    return format_bytes(float(amount), exact=exact)


# The largest limit a recommendation proposes: the largest value a pod's annotation may
# hold (clustermodel.gpurequest's bounds). A pod asking 1 byte of VRAM with a 42 GB limit,
# scaled to 200 MB, would keep its ratio at 8e18 bytes: past int64 (the batch decision)
# and past anything the pod could be given.
LIMIT_CEILING: dict[ResourceName, int] = {"tflops": int(MAX_TFLOPS * TFLOPS_UNIT), "vram": int(MAX_VRAM)}


def proportional_limit(limit: int, request: int, new_request: int, resource: ResourceName) -> int:
    """The limit that keeps ``limit / request`` for ``new_request`` (rounded down), at
    most ``LIMIT_CEILING``."""
    return min(limit * new_request // request, LIMIT_CEILING[resource])


def step_capped(request: int, target: int, fraction: float | None) -> int:
    """``target``, moved at most ``fraction`` of ``request`` away from ``request``."""
    if fraction is None:
        return target
    if target > request:
        return min(target, math.floor(request * (1.0 + fraction)))
    return max(target, math.ceil(request * (1.0 - fraction)))


@dataclass(frozen=True)
class ResourceDecision:
    """The vertical decision for one resource, in integer amounts."""

    resource: ResourceName
    action: Action
    request: int
    limit: int
    lower_bound: int
    upper_bound: int
    target: int
    new_request: int | None = None
    new_limit: int | None = None

    @property
    def changes(self) -> bool:
        return self.action in (Action.UP, Action.DOWN)

    @property
    def message(self) -> str | None:
        label = LABELS[self.resource]
        if self.action == Action.UP:
            return (
                f"{label} scaled up due to ({format_amount(self.resource, self.request)}) "
                f"below lower bound ({format_amount(self.resource, self.lower_bound)})"
            )
        if self.action == Action.DOWN:
            return (
                f"{label} scaled down due to ({format_amount(self.resource, self.request)}) "
                f"above upper bound ({format_amount(self.resource, self.upper_bound)})"
            )
        return None


@dataclass(frozen=True)
class VerticalResult:
    """Decisions for the resources considered, and whether they may be applied."""

    decisions: tuple[ResourceDecision, ...]
    applies: bool
    proposals: dict[ResourceName, tuple[int, int]] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return ", ".join(d.message for d in self.decisions if d.message)

    def decision(self, resource: ResourceName) -> ResourceDecision | None:
        for d in self.decisions:
            if d.resource == resource:
                return d
        return None


def decide_resource(
    resource: ResourceName,
    config: AutoSetResources,
    estimates: Estimates,
    current: ResourceAmounts,
) -> ResourceDecision:
    """The decision for one resource (see the module docstring)."""
    request, limit = current.pair(resource)
    lower = estimates.lower_bound.get(resource)
    upper = estimates.upper_bound.get(resource)
    target = estimates.target.get(resource)
    base = ResourceDecision(resource, Action.NONE, request, limit, lower, upper, target)
    if not config.targets(resource):
        return _with(base, Action.NOT_TARGETED)
    if not estimates.has_history(resource):
        return _with(base, Action.NO_HISTORY)
    if request <= 0 or limit <= 0 or target <= 0:
        return _with(base, Action.ZERO)
    if request < lower:
        action = Action.UP
    elif request > upper:
        action = Action.DOWN
    else:
        return base
    new_request = step_capped(request, target, config.max_step_fraction)
    new_limit = proportional_limit(limit, request, new_request, resource)
    return ResourceDecision(resource, action, request, limit, lower, upper, target, new_request, new_limit)


def _with(decision: ResourceDecision, action: Action) -> ResourceDecision:
    return ResourceDecision(
        decision.resource,
        action,
        decision.request,
        decision.limit,
        decision.lower_bound,
        decision.upper_bound,
        decision.target,
    )


def decide_vertical(config: AutoSetResources, estimates: Estimates, current: ResourceAmounts) -> VerticalResult:
    """Decide TFLOPS and VRAM; :attr:`VerticalResult.proposals` holds the new (request, limit) pairs."""
    decisions = tuple(decide_resource(r, config, estimates, current) for r in RESOURCES)
    proposals: dict[ResourceName, tuple[int, int]] = {}
    for d in decisions:
        if d.changes and d.new_request is not None and d.new_limit is not None:
            proposals[d.resource] = (d.new_request, d.new_limit)
    return VerticalResult(decisions=decisions, applies=config.applies, proposals=proposals)
