"""GPU status is a view of the ledger: available TFLOPS / VRAM and the apps on each GPU, written when changed
(once the changes pause, or every GPU_STATUS_MAX_LAG_S while they go on)."""

from __future__ import annotations

import asyncio
import logging
import threading

from tfsched.allocation.state import ClusterState
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object
from tfsched.extender.metrics import ExtenderMetrics
from tfsched.extender.upkeep import GPU_STATUS_MAX_LAG_S, GPU_STATUS_QUIET_S, GpuStatusWriter
from tfsched.kubeapi.client import KubeApiError
from tfsched.kubeapi.leader import WriterGate

GiB = 2**30


class Recorder:
    def __init__(self, state: ClusterState, gpus: list[dict]) -> None:
        self.state = state
        self.gpus = {g["metadata"]["name"]: g for g in gpus}  # whole objects, as the API server has them
        self.patches: list[tuple[str, dict]] = []

    async def patch(self, path: str, body: dict, *args, **kwargs) -> dict:
        self.patches.append((path, body))
        name = path.split("/")[-2]
        gpu = self.gpus[name]
        updated = self.gpus[name] = {**gpu, "status": {**gpu["status"], **body["status"]}}
        self.state.cache.apply(Kind.GPU, EventType.MODIFIED, updated)  # the watch event our write causes
        return updated


async def noop() -> None:
    return None


def trusted() -> str:
    return ""


def setup() -> tuple[ClusterState, Recorder, GpuStatusWriter]:
    state = ClusterState()
    gpus = [gpu_object("a", i, tflops=100, vram=16 * GiB) for i in range(2)]
    state.load({Kind.NODE: [node_object("a")], Kind.GPU: gpus})
    client = Recorder(state, gpus)
    return state, client, GpuStatusWriter(client, state, WriterGate(), trusted)  # type: ignore[arg-type]


def pod(uid: str, tflops: str, workload: str | None = None) -> dict:
    extra = {ann.WORKLOAD: workload} if workload else {}
    return gpu_pod(
        uid, tflops=tflops, vram="4Gi", gpu_ids=[gpu_name("a", 0)], node="a", uid=uid, extra_annotations=extra
    )


async def test_available_and_running_apps_follow_the_ledger_coalesced_and_rate_limited():
    state, client, writer = setup()
    for uid in ("w1", "w2"):
        state.cache.apply(Kind.POD, EventType.ADDED, pod(uid, "20", workload="train"))
    state.cache.apply(Kind.POD, EventType.ADDED, pod("solo", "10"))
    assert await writer.write_due(now=100.0) == 0  # changes still coming in: not yet
    await writer.write_due(now=100.5)
    assert client.patches == []
    await writer.write_due(now=101.0)  # a second without a change: written
    [(path, body)] = [p for p in client.patches if gpu_name("a", 0) in p[0]]
    assert path == f"/apis/{ann.GROUP_VERSION}/gpus/{gpu_name('a', 0)}/status"
    assert body["status"]["available"] == {"tflops": "50", "vram": "4Gi"}
    assert body["status"]["runningApps"] == [
        {"name": "solo", "namespace": "default", "count": 1},
        {"name": "train", "namespace": "default", "count": 2},
    ]
    # Our own write comes back as a watch event: no second write, no loop.
    client.patches.clear()
    await writer.write_due(now=103.0)
    assert client.patches == []
    # Changes close together coalesce into one write once they pause.
    state.cache.apply(Kind.POD, EventType.DELETED, pod("solo", "10"))
    await writer.write_due(now=103.5)
    state.cache.apply(Kind.POD, EventType.DELETED, pod("w1", "20"))
    await writer.write_due(now=104.0)
    assert client.patches == []  # not due yet
    await writer.write_due(now=105.0)
    [(_, body)] = client.patches
    assert body["status"]["available"] == {"tflops": "80", "vram": "12Gi"}
    assert body["status"]["runningApps"] == [{"name": "train", "namespace": "default", "count": 1}]


async def test_a_gpu_that_keeps_changing_is_written_every_max_lag():
    state, client, writer = setup()
    t = 0.0
    written_at = []
    for k in range(50):  # a change every 0.5 s for 25 s: never quiet
        state.cache.apply(Kind.POD, EventType.ADDED, pod(f"p{k}", "1"))
        before = len(client.patches)
        await writer.write_due(now=t)
        if len(client.patches) > before:
            written_at.append(t)
        t += 0.5
    assert written_at == [GPU_STATUS_MAX_LAG_S, 2 * GPU_STATUS_MAX_LAG_S + 0.5]
    await writer.write_due(now=t + GPU_STATUS_QUIET_S)  # the last changes, once they pause
    assert client.patches[-1][1]["status"]["available"]["tflops"] == "50"


async def test_a_failed_write_is_retried():
    state, client, writer = setup()

    async def refuse(path: str, body: dict, *args, **kwargs) -> dict:
        raise ConnectionError("API server unreachable")

    real, client.patch = client.patch, refuse  # type: ignore[method-assign]
    state.cache.apply(Kind.POD, EventType.ADDED, pod("p", "10"))
    await writer.write_due(now=0.0)
    await writer.write_due(now=1.0)
    assert writer.writes == 0 and gpu_name("a", 0) in state.ledger.changed_gpus
    client.patch = real  # type: ignore[method-assign]
    await writer.write_due(now=2.0)
    await writer.write_due(now=3.0)
    assert writer.writes == 1 and client.patches[-1][1]["status"]["available"]["tflops"] == "90"


async def test_standby_writes_nothing():
    state, client, _ = setup()

    class Never:
        lease_duration = __import__("datetime").timedelta(seconds=1)
        previous_holder = ""

        async def run(self, leading):
            return None

        async def release(self):
            return None

    writer = GpuStatusWriter(client, state, WriterGate(Never(), noop), trusted)  # type: ignore[arg-type]
    state.cache.apply(Kind.POD, EventType.ADDED, pod("p", "10"))
    task = asyncio.create_task(writer.run(every=0.01))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert client.patches == []


async def test_a_pass_over_many_gpus_holds_only_the_writes_in_flight():
    """A new leader checks every GPU: with thousands due, the writer works out each status just
    before writing it, so what it holds at once is bounded by its concurrency, not the cluster."""
    state = ClusterState()
    gpus = [gpu_object("a", i, tflops=100, vram=16 * GiB) for i in range(200)]
    state.load({Kind.NODE: [node_object("a")], Kind.GPU: gpus})
    client = Recorder(state, gpus)
    writer = GpuStatusWriter(client, state, WriterGate(), trusted, qps=1e5, burst=1000)  # type: ignore[arg-type]
    worked_out = 0
    desired = writer.desired

    def counting(name: str) -> dict | None:
        nonlocal worked_out
        worked_out += 1
        return desired(name)

    writer.desired = counting  # type: ignore[method-assign]
    release = asyncio.Event()
    in_flight = 0
    record = client.patch

    async def held(path: str, body: dict, *args, **kwargs) -> dict:
        nonlocal in_flight
        in_flight += 1
        await release.wait()
        in_flight -= 1
        return await record(path, body)

    client.patch = held  # type: ignore[method-assign]
    state.ledger.changed_gpus.update(g["metadata"]["name"] for g in gpus)  # none shows runningApps yet
    assert await writer.write_due(now=100.0) == 0  # taken in; due once the changes pause
    passing = asyncio.create_task(writer.write_due(now=100.0 + GPU_STATUS_QUIET_S))
    await asyncio.sleep(0.05)
    assert 0 < in_flight == worked_out <= 8
    release.set()
    assert await passing == 200 == len({path for path, _ in client.patches}) == worked_out


async def test_nothing_is_written_while_the_ledger_is_not_trusted():
    """While the pods are still being listed, a GPU's ledger view lacks its holders: writing it
    would show the GPU emptier than it is. Its changes wait, and are written once trusted."""
    state, client, _ = setup()
    why = "the cache is not current for Pod"
    writer = GpuStatusWriter(client, state, WriterGate(), lambda: why)  # type: ignore[arg-type]
    state.cache.apply(Kind.POD, EventType.ADDED, pod("p", "10"))
    task = asyncio.create_task(writer.run(every=0.01))
    await asyncio.sleep(0.1)
    assert client.patches == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    why = ""
    await writer.write_due(now=100.0)
    await writer.write_due(now=100.0 + GPU_STATUS_QUIET_S)
    written = {path.split("/")[-2]: body["status"] for path, body in client.patches}
    assert written[gpu_name("a", 0)]["available"]["tflops"] == "90"


async def test_a_relist_during_a_pass_leaves_the_rest_for_later():
    state, client, writer = setup()
    why = ""
    writer.distrust = lambda: why  # type: ignore[method-assign]
    record = client.patch

    async def relist_begins(path: str, body: dict, *args, **kwargs) -> dict:
        nonlocal why
        why = "re-listing Pod"
        return await record(path, body)

    client.patch = relist_begins  # type: ignore[method-assign]
    state.ledger.changed_gpus.update({gpu_name("a", 0), gpu_name("a", 1)})
    await writer.write_due(now=100.0)
    await writer.write_due(now=100.0 + GPU_STATUS_QUIET_S)
    assert len(client.patches) == 1
    unwritten = {gpu_name("a", 0), gpu_name("a", 1)} - {path.split("/")[-2] for path, _ in client.patches}
    assert state.ledger.changed_gpus == unwritten


async def test_a_relist_defers_the_rest_of_a_paced_pass_without_waiting_for_tokens():
    # At qps 1 the 29 GPUs left after the first would take half a minute if each took its
    # token before being deferred; the test's timeout would end it long before.
    state, client = stale_gpus(30)
    writer = GpuStatusWriter(client, state, WriterGate(), trusted, qps=1, burst=1)  # type: ignore[arg-type]
    why = ""
    writer.distrust = lambda: why  # type: ignore[method-assign]
    record = client.patch

    async def relist_begins(path: str, body: dict, *args, **kwargs) -> dict:
        nonlocal why
        why = "re-listing Pod"
        return await record(path, body)

    client.patch = relist_begins  # type: ignore[method-assign]
    assert await asyncio.wait_for(due_pass(writer, state), timeout=5) == 1
    assert len(state.ledger.changed_gpus) == 29


async def test_metrics_show_what_is_unwritten_and_what_was_written():
    state, client, _ = setup()
    metrics = ExtenderMetrics()
    writer = GpuStatusWriter(client, state, WriterGate(), trusted, metrics)  # type: ignore[arg-type]

    def sample(name: str, **labels: str) -> float | None:
        metrics.refresh(state, writing=True)  # as a scrape does, on the loop
        return metrics.registry.get_sample_value(name, labels)

    assert sample("tfsched_status_unwritten_gpus") == 0
    state.cache.apply(Kind.POD, EventType.ADDED, pod("p", "10"))
    assert sample("tfsched_status_unwritten_gpus") == 1  # the GPU the pod holds, changes still coming
    await writer.write_due(now=100.0)
    assert sample("tfsched_status_unwritten_gpus") == 1

    async def refuse(path: str, body: dict, *args, **kwargs) -> dict:
        raise ConnectionError("API server unreachable")

    real, client.patch = client.patch, refuse  # type: ignore[method-assign]
    await writer.write_due(now=101.0)
    assert sample("tfsched_status_writes_total", result="failed") == 1
    assert sample("tfsched_status_unwritten_gpus") == 1  # retried when due again
    client.patch = real  # type: ignore[method-assign]
    await writer.write_due(now=102.0)
    await writer.write_due(now=103.0)
    assert sample("tfsched_status_writes_total", result="written") == 1
    assert sample("tfsched_status_unwritten_gpus") == 0


class LoopOnlySet(set):
    """The ledger's changed GPUs, refusing to be read off the thread that owns them."""

    def __init__(self, owner: int) -> None:
        super().__init__()
        self.owner = owner

    def __iter__(self):
        assert threading.get_ident() == self.owner, "the ledger's changed GPUs were read off the event loop"
        return super().__iter__()


async def test_a_scrape_reads_the_writer_on_the_loop_not_in_the_exposition_thread():
    # /metrics writes the exposition in a thread while the loop goes on changing the ledger:
    # a gauge computed there raised "Set changed size during iteration" (a 500) at 20,000 nodes.
    state, client, _ = setup()
    state.ledger.changed_gpus = LoopOnlySet(threading.get_ident())
    metrics = ExtenderMetrics()
    GpuStatusWriter(client, state, WriterGate(), trusted, metrics)  # type: ignore[arg-type]
    state.cache.apply(Kind.POD, EventType.ADDED, pod("p", "10"))
    snapshot = metrics.refresh(state, writing=True)
    text = await asyncio.to_thread(metrics.exposition, snapshot, False)
    assert b"tfsched_status_unwritten_gpus 1.0" in text


def stale_gpus(n: int) -> tuple[ClusterState, Recorder]:
    """``n`` GPUs whose status a previous leader left wrong (all VRAM shown taken)."""
    state = ClusterState()
    gpus = [gpu_object("a", i, tflops=100, vram=16 * GiB) for i in range(n)]
    for gpu in gpus:
        gpu["status"]["available"] = {"tflops": "0", "vram": "0"}
    state.load({Kind.NODE: [node_object("a")], Kind.GPU: gpus})
    return state, Recorder(state, gpus)


async def due_pass(writer: GpuStatusWriter, state: ClusterState) -> int:
    """A new leader's pass over every GPU."""
    state.ledger.changed_gpus.update(state.inventory.gpu_index)
    await writer.write_due(now=100.0)
    return await writer.write_due(now=100.0 + GPU_STATUS_QUIET_S)


async def test_a_new_leaders_pass_writes_at_the_configured_pace():
    """A cluster of stale statuses is not patched as fast as the connections allow:
    ``burst`` at once, then ``qps`` a second (config gpuStatus)."""
    state, client = stale_gpus(30)
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []
    record = client.patch

    async def timed(path: str, body: dict, *args, **kwargs) -> dict:
        sent_at.append(loop.time())
        return await record(path, body)

    client.patch = timed  # type: ignore[method-assign]
    writer = GpuStatusWriter(client, state, WriterGate(), trusted, qps=100, burst=5)  # type: ignore[arg-type]
    assert await due_pass(writer, state) == 30
    start = sent_at[0]
    for k, at in enumerate(sent_at):
        assert at - start >= (k - 4) / 100 - 0.002, f"write {k} went {at - start:.3f} s after the first"
    assert {body["status"]["available"]["vram"] for _, body in client.patches} == {"16Gi"}


async def test_a_429_holds_every_write_back_as_long_as_it_asks_and_is_logged_once(caplog):
    state, client = stale_gpus(12)
    loop = asyncio.get_running_loop()
    metrics = ExtenderMetrics()
    record = client.patch
    refused: list[tuple[str, float]] = []
    sent_at: list[float] = []

    async def throttling(path: str, body: dict, *args, **kwargs) -> dict:
        if not refused:
            refused.append((path.split("/")[-2], loop.time()))
            raise KubeApiError(429, "TooManyRequests", "Too many requests, please try again later.", 0.2)
        sent_at.append(loop.time())
        return await record(path, body)

    client.patch = throttling  # type: ignore[method-assign]
    writer = GpuStatusWriter(client, state, WriterGate(), trusted, metrics, qps=1000, burst=100)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="tfsched.extender.upkeep"):
        assert await due_pass(writer, state) == 12  # 11 written, 1 refused
    [(name, at)] = refused
    assert len(sent_at) == 11 and min(sent_at) - at >= 0.2 - 0.002
    assert state.ledger.changed_gpus == {name}  # retried when due again
    assert metrics.gpu_status_writes.labels("throttled")._value.get() == 1
    assert metrics.gpu_status_writes.labels("failed")._value.get() == 0
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"GPU status: 1 write(s) failed in this pass, retried when due (first: GPU {name}: 429")


async def test_an_unreachable_api_server_is_one_warning_per_pass_not_one_per_gpu(caplog):
    state, client = stale_gpus(50)

    async def refuse(path: str, body: dict, *args, **kwargs) -> dict:
        raise ConnectionError("API server unreachable")

    client.patch = refuse  # type: ignore[method-assign]
    writer = GpuStatusWriter(client, state, WriterGate(), trusted, qps=1000, burst=100)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="tfsched.extender.upkeep"):
        await due_pass(writer, state)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "50 write(s) failed" in warnings[0] and "API server unreachable" in warnings[0]
    assert len(state.ledger.changed_gpus) == 50
