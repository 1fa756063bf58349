"""A byte budget for request bodies being read and parsed at once, and the sizes behind it.

A route's body limit bounds one body, not how many are in memory together: 16
concurrent 60 MiB bodies took the process to 1.25 GB, over the Deployment's 1
GiB limit.  A handler takes ``async with budget.hold(n)`` *before* reading a
body (the server stops reading a connection whose body nobody has asked for, so
a waiting body stays in the kernel and the client) and leaves after
parsing: a small body at its length times the worst expansion; a large one
first its raw length (a lane of its own), then, once read, its parse estimate.
Waiters are served first come, first served; one whose request alone exceeds
the capacity is admitted when nothing else is held, so a legitimate large body
is slow, never refused; a waiter that outstays ``timeout`` gets :class:`BudgetTimeout` (the app answers 503).

Sizes, measured by ``bench/bench_request_size.py``:
kube-scheduler with ``nodeCacheCapable: false`` sends every candidate Node
whole.  A GPU node as a kubelet registers it (17 labels, 4 annotations,
managedFields of kubelet, kube-controller-manager and nfd-master, taints, 5
conditions, 40 images) is 14.1 KB of JSON; the 5,000-node request is 67.3 MiB,
76.4 MiB with the kubelet's maximum of 50 images per node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

MiB = 2**20

# The 5,000-node request with whole Node objects: 67.3 MiB measured with 40
# images per node, 76.4 MiB with 50 (the kubelet's default nodeStatusMaxImages,
# so the most any node lists); rounded up to 80 MiB.
LARGEST_LEGITIMATE_REQUEST_BYTES = 80 * MiB

# The body limit: the largest legitimate request.  The former 64 MiB refused it.
DEFAULT_MAX_REQUEST_BYTES = LARGEST_LEGITIMATE_REQUEST_BYTES

# Measured on that request: orjson.loads peaks at 5.7× the body in RSS (3.8×
# kept), and a whole /filter of it (the read's chunks, the body, the parse,
# the reply echoing the nodes) at 6.75×; call it 7.  64 MiB held at once is
# then ≤ 450 MiB on top of the ~300 MiB the server holds for a 5,000-node,
# 40,000-GPU cluster (bench/RESULTS.md): ~0.73 GiB of the 1 GiB limit.  A lone
# request of up to DEFAULT_MAX_REQUEST_BYTES (admitted alone) reaches ~0.84 GiB.
# These figures hold for bodies shaped like real requests; a body made of tiny
# containers (``[[0],[0],...]``) expands up to 37× (same benchmark).
PARSE_EXPANSION_FACTOR = 7

# Before a body is read its shape is unknown, so it holds the budget at the
# worst expansion measured (37×, tiny containers): the budget then bounds the
# memory of parses in progress whatever the bodies hold.  A body whose weight
# exceeds the capacity (the 5,000-node request) is admitted alone.
WORST_EXPANSION_FACTOR = 40
DEFAULT_PARSE_BUDGET_BYTES = 512 * MiB

# Bodies up to 1 MiB (kube-scheduler's NodeNames calls are ~64 KiB at 5,000
# nodes) take a lane of their own, 256 MiB at the worst expansion, so a few
# large bodies can delay them by a parse at most, never queue them out.
SMALL_BODY_BYTES = 1 * MiB
SMALL_LANE_BYTES = 256 * MiB

# Once read, a body's parse costs about its length plus ~64 bytes per JSON
# value (a value per ``,``, ``:``, ``[`` or ``{``): 486 MiB estimated for the
# 76.4 MiB legitimate request (509 MiB RSS measured).  A body estimated above
# this is refused (400) before parsing: dense hostile bodies within the body
# limit would otherwise take gigabytes.
BYTES_PER_JSON_VALUE = 64
MAX_PARSE_ESTIMATE_BYTES = 600 * MiB
# Only bodies over SMALL_BODY_BYTES are counted (they cannot exceed the limit
# otherwise, and the counts cost ~145 µs on a 64 KiB NodeNames call, a seventh
# of a filter). Counting needs the body read: large bodies are read holding
# their raw length in this lane (one larger is admitted alone), so a body too
# dense to parse is refused at once rather than queued behind parses in
# progress (a fuzzed 20 MiB one waited 2 s for a 503 when it held 40× before
# reading), and a real body then holds what it takes (~6.4×), not 40×.
RAW_LANE_BYTES = 128 * MiB


def parse_estimate(body: bytes) -> int:
    """Bytes a parse of ``body`` will take, by its count of JSON values (C-speed counts)."""
    values = body.count(b",") + body.count(b":") + body.count(b"[") + body.count(b"{")
    return len(body) + BYTES_PER_JSON_VALUE * values


# kube-scheduler's httpTimeout is 5 s (config/scheduler-config.yaml) and parsing
# the largest request takes ~1 s: a waiter that is refused after 2 s still gets
# its 503 to the scheduler before the scheduler gives up on the call.
DEFAULT_BUDGET_TIMEOUT_SECONDS = 2.0


class BudgetTimeout(Exception):
    """A request waited ``timeout`` seconds for its bytes of the budget without getting them."""

    def __init__(self, nbytes: int, timeout: float, held: int, capacity: int, waiting: int) -> None:
        super().__init__(
            f"server busy: waited {timeout:g} s to parse {nbytes} bytes "
            f"({held} of {capacity} bytes in progress, {waiting} other requests waiting)"
        )
        self.nbytes = nbytes
        self.timeout = timeout


@dataclass(eq=False, slots=True)
class _Waiter:
    nbytes: int
    future: asyncio.Future[None]


class ByteBudget:
    """At most ``capacity`` bytes held at once (one larger hold alone), granted in FIFO order."""

    def __init__(
        self,
        capacity: int = DEFAULT_PARSE_BUDGET_BYTES,
        timeout: float | None = DEFAULT_BUDGET_TIMEOUT_SECONDS,
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None to wait for ever)")
        self.capacity = capacity
        self.timeout = timeout
        self._held = 0
        self._queue: deque[_Waiter] = deque()

    @property
    def held(self) -> int:
        """Bytes granted and not yet released."""
        return self._held

    @property
    def waiting(self) -> int:
        """Requests queued for their bytes."""
        return sum(1 for w in self._queue if not w.future.done())

    @contextlib.asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        """Hold ``nbytes`` of the budget for the body of the block; raises
        :class:`BudgetTimeout` when they are not granted within ``timeout``."""
        await self._acquire(nbytes)
        try:
            yield
        finally:
            self.release(nbytes)

    def try_hold(self, nbytes: int) -> bool:
        """Hold ``nbytes`` now if they can be granted without waiting (then :meth:`release`)."""
        if nbytes < 0:
            raise ValueError("nbytes must not be negative")
        # Jumping the queue would starve a large waiter, so only an empty queue admits at once.
        if not self._queue and self._fits(nbytes):
            self._held += nbytes
            return True
        return False

    def _fits(self, nbytes: int) -> bool:
        # Nothing held: admit whatever the size, so a body over the capacity is not starved.
        return self._held == 0 or self._held + nbytes <= self.capacity

    async def _acquire(self, nbytes: int) -> None:
        if self.try_hold(nbytes):
            return
        waiter = _Waiter(nbytes, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter.future
        except BaseException as exc:
            granted = waiter.future.done() and not waiter.future.cancelled()
            if granted and isinstance(exc, TimeoutError):
                return  # granted in the very iteration the timeout fired: use it
            if granted:
                self.release(nbytes)  # granted, then cancelled before it could run: give back
            else:
                waiter.future.cancel()
                with contextlib.suppress(ValueError):  # _grant may have dropped it already
                    self._queue.remove(waiter)
                self._grant()  # it may have been the head that held the others back
            if isinstance(exc, TimeoutError):
                raise BudgetTimeout(nbytes, self.timeout or 0.0, self._held, self.capacity, self.waiting) from None
            raise

    def release(self, nbytes: int) -> None:
        self._held -= nbytes
        self._grant()

    def _grant(self) -> None:
        """Admit waiters from the head of the queue while they fit."""
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled; its owner is unwinding
                self._queue.popleft()
                continue
            if not self._fits(head.nbytes):
                return
            self._queue.popleft()
            self._held += head.nbytes
            head.future.set_result(None)
