"""What the autoscale loop needs from the outside world, as small protocols.

Kubernetes is :class:`tfsched.kubeapi.client.KubeApi`; usage comes from a
:class:`UsageSource` (Prometheus in production, a fake in tests and
benchmarks: :mod:`tfsched.devcluster.fakes`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from tfsched.autoscale.columns import UsageColumns


class UsageSource(Protocol):
    async def samples(self, start: datetime, end: datetime) -> UsageColumns:
        """Usage of every pod at the step-aligned times in ``[start, end]``, in time order.

        Raises ``tfsched.autoscale.prometheus.MetricsUnavailable`` when it cannot be read.
        """
        ...

    async def close(self) -> None: ...
