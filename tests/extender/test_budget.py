"""ByteBudget: the cap, FIFO order, a lone oversized hold, the timeout, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from tfsched.extender.budget import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_PARSE_BUDGET_BYTES,
    LARGEST_LEGITIMATE_REQUEST_BYTES,
    BudgetTimeout,
    ByteBudget,
)


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


class Holder:
    """A task that holds ``nbytes`` until told to let go, recording when it got them."""

    def __init__(self, budget: ByteBudget, nbytes: int, log: list[str], name: str) -> None:
        self.release = asyncio.Event()
        self.got = False
        self.task = asyncio.create_task(self._run(budget, nbytes, log, name))

    async def _run(self, budget: ByteBudget, nbytes: int, log: list[str], name: str) -> None:
        async with budget.hold(nbytes):
            self.got = True
            log.append(name)
            await self.release.wait()


def test_defaults_are_consistent():
    assert DEFAULT_MAX_REQUEST_BYTES >= LARGEST_LEGITIMATE_REQUEST_BYTES
    assert ByteBudget().capacity == DEFAULT_PARSE_BUDGET_BYTES


def test_bad_arguments():
    with pytest.raises(ValueError):
        ByteBudget(0)
    with pytest.raises(ValueError):
        ByteBudget(10, timeout=0)


async def test_negative_hold_is_refused():
    with pytest.raises(ValueError):
        async with ByteBudget(10).hold(-1):
            pass


async def test_concurrent_holds_never_exceed_capacity():
    budget = ByteBudget(100, timeout=None)
    current = peak = 0

    async def request(nbytes: int) -> None:
        nonlocal current, peak
        async with budget.hold(nbytes):
            current += nbytes
            peak = max(peak, current)
            assert budget.held <= budget.capacity
            await asyncio.sleep(0.001)
            current -= nbytes

    await asyncio.gather(*(request(10 + (i * 37) % 60) for i in range(200)))
    assert 70 <= peak <= 100
    assert budget.held == 0 and budget.waiting == 0


async def test_holds_past_capacity_wait_and_are_admitted_on_release():
    budget = ByteBudget(100, timeout=None)
    log: list[str] = []
    a, b = Holder(budget, 60, log, "a"), Holder(budget, 40, log, "b")
    c = Holder(budget, 1, log, "c")
    await settle()
    assert (a.got, b.got, c.got) == (True, True, False)
    assert budget.held == 100 and budget.waiting == 1
    b.release.set()
    await settle()
    assert c.got and budget.held == 61 and budget.waiting == 0
    a.release.set()
    c.release.set()
    await settle()
    assert budget.held == 0


async def test_fifo_a_large_waiter_is_not_overtaken_by_small_ones():
    budget = ByteBudget(100, timeout=None)
    log: list[str] = []
    first = Holder(budget, 50, log, "first")
    await settle()
    big = Holder(budget, 80, log, "big")  # does not fit beside `first`: waits
    await settle()
    smalls = [Holder(budget, 10, log, f"small{i}") for i in range(3)]  # would fit, but queue behind `big`
    await settle()
    assert log == ["first"] and budget.waiting == 4
    first.release.set()
    await settle()
    assert log == ["first", "big", "small0", "small1"]  # 80 + 10 + 10 fill it; small2 waits
    big.release.set()
    await settle()
    assert log[-1] == "small2"
    for s in smalls:
        s.release.set()
    await settle()
    assert budget.held == 0 and budget.waiting == 0


async def test_a_hold_larger_than_capacity_is_admitted_alone():
    budget = ByteBudget(100, timeout=None)
    log: list[str] = []
    small = Holder(budget, 10, log, "small")
    await settle()
    huge = Holder(budget, 250, log, "huge")
    after = Holder(budget, 1, log, "after")
    await settle()
    assert not huge.got and not after.got  # waits for the budget to empty, and blocks later ones
    small.release.set()
    await settle()
    assert huge.got and not after.got and budget.held == 250
    huge.release.set()
    await settle()
    assert after.got
    after.release.set()
    await settle()
    assert budget.held == 0


async def test_oversized_hold_on_an_idle_budget_is_immediate():
    budget = ByteBudget(100, timeout=0.01)
    async with budget.hold(10_000):
        assert budget.held == 10_000
    assert budget.held == 0


async def test_waiting_too_long_raises_budget_timeout_and_leaves_no_trace():
    budget = ByteBudget(100, timeout=0.05)
    log: list[str] = []
    holder = Holder(budget, 100, log, "holder")
    await settle()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BudgetTimeout) as info:
        async with budget.hold(10):
            pytest.fail("must not be admitted")
    assert 0.04 <= loop.time() - started < 1
    assert info.value.nbytes == 10 and "server busy" in str(info.value)
    assert budget.held == 100 and budget.waiting == 0
    holder.release.set()
    await settle()
    assert budget.held == 0


async def test_a_timed_out_head_unblocks_those_behind_it():
    budget = ByteBudget(100, timeout=0.2)
    log: list[str] = []
    holder = Holder(budget, 50, log, "holder")  # admitted at once: no timeout applies
    await settle()
    big = Holder(budget, 80, log, "big")  # waits; times out at 0.2 s
    await asyncio.sleep(0.1)
    small = Holder(budget, 10, log, "small")  # fits beside holder, but queues behind big; deadline 0.3 s
    await settle()
    assert not small.got
    with pytest.raises(BudgetTimeout):
        await big.task
    await settle()
    assert small.got and budget.held == 60 and log == ["holder", "small"]
    holder.release.set()
    small.release.set()
    await settle()
    assert budget.held == 0


async def test_a_cancelled_waiter_takes_nothing_and_unblocks_the_queue():
    budget = ByteBudget(100, timeout=None)
    log: list[str] = []
    holder = Holder(budget, 50, log, "holder")
    await settle()
    big = Holder(budget, 80, log, "big")
    await settle()
    small = Holder(budget, 10, log, "small")
    await settle()
    assert budget.waiting == 2 and not small.got
    big.task.cancel()
    await settle()
    assert big.task.cancelled() and not big.got
    assert small.got and budget.held == 60 and budget.waiting == 0  # nothing released that big never took
    holder.release.set()
    small.release.set()
    await settle()
    assert budget.held == 0


async def test_a_waiter_cancelled_just_after_its_grant_gives_the_bytes_back():
    budget = ByteBudget(100, timeout=None)
    log: list[str] = []
    holder = Holder(budget, 100, log, "holder")
    await settle()
    waiter = Holder(budget, 70, log, "waiter")
    then = Holder(budget, 60, log, "then")
    await settle()
    # In one step: the holder lets go (granting `waiter`), and `waiter` is cancelled
    # before it runs again.
    holder.release.set()
    await asyncio.sleep(0)  # holder's task leaves its block: `waiter` is granted
    assert budget.held == 70
    waiter.task.cancel()
    await settle()
    assert waiter.task.cancelled() and not waiter.got
    assert then.got and budget.held == 60
    then.release.set()
    await settle()
    assert budget.held == 0


async def test_cancelling_inside_the_block_releases():
    budget = ByteBudget(100, timeout=None)
    log: list[str] = []
    holder = Holder(budget, 90, log, "holder")
    await settle()
    holder.task.cancel()
    await settle()
    assert holder.task.cancelled() and budget.held == 0


async def test_small_calls_never_queue_behind_large_bodies(app_client) -> None:
    """kube-scheduler's usual calls (NodeNames, ~KiB) have a lane of their own."""
    import orjson

    from tests.serving import memory_app
    from tfsched.allocation.state import ClusterState

    state = ClusterState()
    app = memory_app(state)
    client = await app_client(app)
    large = app.budget
    async with large.hold(large.capacity):  # the large lane is full (dense bodies being parsed)
        body = {"Pod": {"metadata": {"name": "p"}}, "NodeNames": ["a"]}
        resp = await client.post("/filter", data=orjson.dumps(body))
        assert resp.status == 200


async def test_a_body_too_dense_is_refused_without_queueing_for_the_parse(app_client) -> None:
    """A large body is read under its raw length, so one too dense to parse gets its 400
    at once even while parses in progress hold the whole parse budget."""
    from tests.serving import memory_app
    from tfsched.allocation.state import ClusterState

    state = ClusterState()
    app = memory_app(state)
    client = await app_client(app)
    parse = app.budget
    dense = b"[" + b"[0]," * (5 * 2**20) + b"[0]]"  # 20 MiB of tiny containers
    async with parse.hold(parse.capacity):  # every byte of the parse budget is in use
        resp = await client.post("/filter", data=dense)
        assert resp.status == 400
        assert "too dense" in (await resp.json())["error"]
        assert parse.waiting == 0
