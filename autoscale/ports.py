"""What the autoscale loop needs from the outside world, as small protocols.

Kubernetes is :class:`tfsched.kubeapi.client.KubeApi`; usage comes from a
:class:`UsageSource` (Prometheus in production, a fake in tests and
benchmarks: :mod:`tfsched.devcluster.fakes`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from tfsched.autoscale.columns import UsageColumns

# Condition reasons carried by MetricsUnavailable.
REASON_UNREACHABLE = "PrometheusUnreachable"
REASON_TIMEOUT = "PrometheusTimeout"
REASON_ERROR = "PrometheusError"
REASON_BAD_RESPONSE = "PrometheusBadResponse"


class MetricsUnavailable(Exception):
    """Usage history could not be read; ``str()`` says why, ``reason`` is CamelCase for a condition."""

    def __init__(self, message: str, reason: str = REASON_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class UsageSource(Protocol):
    async def samples(self, start: datetime, end: datetime) -> UsageColumns:
        """Usage of every pod at the step-aligned times in ``[start, end]``, in time order.

        Raises :class:`MetricsUnavailable` when it cannot be read.
        """
        ...

    async def close(self) -> None: ...
