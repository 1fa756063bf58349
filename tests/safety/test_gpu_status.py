"""GPU status is a view of the ledger: available TFLOPS / VRAM and the apps on each GPU, written when changed."""

from __future__ import annotations

import asyncio

from tfsched.allocation.state import ClusterState
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object
from tfsched.extender.upkeep import GpuStatusWriter
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


def setup() -> tuple[ClusterState, Recorder, GpuStatusWriter]:
    state = ClusterState()
    gpus = [gpu_object("a", i, tflops=100, vram=16 * GiB) for i in range(2)]
    state.load({Kind.NODE: [node_object("a")], Kind.GPU: gpus})
    client = Recorder(state, gpus)
    return state, client, GpuStatusWriter(client, state, WriterGate())  # type: ignore[arg-type]


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
    await writer.write_due()
    [(path, body)] = [p for p in client.patches if gpu_name("a", 0) in p[0]]
    assert path == f"/apis/{ann.GROUP_VERSION}/gpus/{gpu_name('a', 0)}/status"
    assert body["status"]["available"] == {"tflops": "50", "vram": "4Gi"}
    assert body["status"]["runningApps"] == [
        {"name": "solo", "namespace": "default", "count": 1},
        {"name": "train", "namespace": "default", "count": 2},
    ]
    # Our own write comes back as a watch event: no second write, no loop.
    client.patches.clear()
    await writer.write_due()
    assert client.patches == []
    # Changes within a second coalesce into one write once it is due.
    state.cache.apply(Kind.POD, EventType.DELETED, pod("solo", "10"))
    state.cache.apply(Kind.POD, EventType.DELETED, pod("w1", "20"))
    await writer.write_due()
    assert client.patches == []  # not due yet
    await asyncio.sleep(1.05)
    await writer.write_due()
    [(_, body)] = client.patches
    assert body["status"]["available"] == {"tflops": "80", "vram": "12Gi"}
    assert body["status"]["runningApps"] == [{"name": "train", "namespace": "default", "count": 1}]


async def test_standby_writes_nothing():
    state, client, _ = setup()

    class Never:
        lease_duration = __import__("datetime").timedelta(seconds=1)
        previous_holder = ""

        async def run(self, leading):
            return None

        async def release(self):
            return None

    writer = GpuStatusWriter(client, state, WriterGate(Never(), noop))  # type: ignore[arg-type]
    state.cache.apply(Kind.POD, EventType.ADDED, pod("p", "10"))
    task = asyncio.create_task(writer.run(every=0.01))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert client.patches == []
