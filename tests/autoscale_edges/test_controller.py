"""The autoscale loop against a fake API and a fake usage source (fast, no processes).

The same behaviours run against the real control plane and Prometheus in
tests/e2e/test_autoscale.py; these pin the loop's decisions exactly.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from tfsched.allocation.state import ClusterState
from tfsched.autoscale.loop import Autoscaler
from tfsched.autoscale.settings import AutoscaleSettings
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.gpurequest import parse_gpu_request
from tfsched.clustermodel.objects import gpu_object, gpu_pod, node_object
from tfsched.devcluster.fakes import FakeKube, FakeUsageSource, FixedClock, UsageRow

GiB = 2**30
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _workload(target: str = "all") -> dict:
    return {
        "apiVersion": ann.GROUP_VERSION,
        "kind": ann.WORKLOAD_KIND,
        "metadata": {"name": "wl", "namespace": "ns", "uid": "wl-uid", "generation": 1, "resourceVersion": "1"},
        "spec": {
            "resources": {"requests": {"tflops": "40", "vram": "8Gi"}, "limits": {"tflops": "80", "vram": "16Gi"}},
            "autoScalingConfig": {
                "autoSetResources": {"enable": True, "targetResource": target, "confidenceInterval": "10m"}
            },
        },
        "status": {},
    }


def _setup(target: str = "all", *, gpu_vram: str = "80Gi", filler_vram: str | None = None, echo: bool = True):
    state = ClusterState()
    pods = [
        gpu_pod(
            f"w{i}",
            namespace="ns",
            tflops="40",
            tflops_limit="80",
            vram="8Gi",
            vram_limit="16Gi",
            node="n0",
            gpu_ids=[f"n0-gpu-{i}"],
            uid=f"uid-{i}",
            extra_annotations={ann.WORKLOAD: "wl"},
        )
        for i in range(2)
    ]
    for pod in pods:
        pod["metadata"]["resourceVersion"] = "1"
    if filler_vram:
        pods.append(gpu_pod("filler", namespace="ns", vram=filler_vram, node="n0", gpu_ids=["n0-gpu-0"], uid="f"))
    from tfsched.clustermodel.quantity import parse_quantity

    gpus = [gpu_object("n0", i, tflops=312, vram=parse_quantity(gpu_vram)) for i in range(2)]
    state.load({Kind.NODE: [node_object("n0")], Kind.GPU: gpus, Kind.POD: pods, Kind.WORKLOAD: [_workload(target)]})
    kube = FakeKube(state, echo=echo)
    source = FakeUsageSource()
    settings = AutoscaleSettings.model_validate(
        {"interval": "1m", "metrics": {"step": "1m", "historyLength": "1h"}, "evictionInterval": "1s"}
    )
    clock = FixedClock(T0)
    return state, kube, source, Autoscaler(state, kube, source, settings, clock), clock


def _usage(tflops: float, vram: float, minutes: int = 30) -> list[UsageRow]:
    return [UsageRow("ns", f"w{i}", T0 - timedelta(minutes=m), tflops, vram) for m in range(minutes) for i in range(2)]


async def test_recommends_and_resizes_in_place_through_the_ledger():
    state, kube, source, loop, _ = _setup()
    source.pending = _usage(4, 2 * GiB)
    await loop.tick()
    status = state.cache.get(Kind.WORKLOAD, "ns", "wl")["status"]
    cond = next(c for c in status["conditions"] if c["type"] == ann.CONDITION_RECOMMENDATION_PROVIDED)
    assert cond["reason"] == ann.REASON_OUT_OF_ESTIMATED_BOUND
    assert cond["message"].startswith("TFLOPS scaled down due to (40) above upper bound (")
    assert "VRAM scaled down due to (8Gi) above upper bound (" in cond["message"]
    assert status["appliedRecommendedReplicas"] == 2
    rec = parse_gpu_request(
        {
            ann.TFLOPS_REQUEST: status["recommendation"]["requests"]["tflops"],
            ann.VRAM_REQUEST: status["recommendation"]["requests"]["vram"],
        }
    )
    inv = state.inventory
    for i in range(2):
        pod = state.cache.get(Kind.POD, "ns", f"w{i}")
        got = parse_gpu_request(pod["metadata"]["annotations"])
        assert (got.tflops_request, got.vram_request) == (rec.tflops_request, rec.vram_request)
        g = inv.gpu(f"n0-gpu-{i}")
        assert inv.used_v[g] == rec.vram_request  # the ledger follows the patch
    assert not kube.paths("POST", "eviction")


async def test_recommend_only_touches_no_pod():
    state, kube, source, loop, _ = _setup(target="")
    source.pending = _usage(4, 2 * GiB)
    await loop.tick()
    assert not kube.paths("PATCH", "/pods/")
    status = state.cache.get(Kind.WORKLOAD, "ns", "wl")["status"]
    assert status["recommendation"]["requests"]["vram"] != "8Gi"
    assert status["appliedRecommendedReplicas"] == 0


async def test_resize_that_does_not_fit_evicts_one_pod():
    # GPU 0 has 20Gi of VRAM and a filler holding 10Gi: w0 cannot grow to ~12Gi there.
    state, kube, source, loop, _clock = _setup(gpu_vram="20Gi", filler_vram="10Gi")
    source.pending = _usage(40, 11 * GiB)
    await loop.tick()
    evictions = kube.paths("POST", "eviction")
    assert evictions == ["/api/v1/namespaces/ns/pods/w0/eviction"]
    assert state.cache.get(Kind.POD, "ns", "w1")["metadata"]["annotations"][ann.VRAM_REQUEST] != "8Gi"
    assert [p for m, p, b in kube.calls if m == "POST" and "/events" in p]


async def test_failed_patch_rolls_the_ledger_back():
    state, kube, source, loop, _ = _setup()
    kube.fail_pod_patches = True
    used_before = state.inventory.used_v.copy()
    source.pending = _usage(4, 2 * GiB)
    await loop.tick()
    assert (state.inventory.used_v == used_before).all()
    assert not any(a.reserved for a in state.ledger.allocations.values())


async def test_metrics_outage_changes_nothing_and_says_why():
    state, kube, source, loop, _ = _setup()
    source.error = "cannot connect to Prometheus at http://x: Connection refused"
    await loop.tick()
    status = state.cache.get(Kind.WORKLOAD, "ns", "wl")["status"]
    (cond,) = status["conditions"]
    assert cond["type"] == "MetricsAvailable" and cond["status"] == "False"
    assert "Connection refused" in cond["message"]
    assert "recommendation" not in status
    assert not kube.paths("PATCH", "/pods/")


async def test_a_lagging_informer_does_not_erase_the_condition_we_wrote():
    # The watch delivers our status write after the next interval has begun: that
    # interval reads no usage (nothing due) and must not write MetricsAvailable
    # away by merging into the version the write replaced.
    state, kube, source, loop, _clock = _setup(target="", echo=False)
    source.pending = _usage(4, 2 * GiB)
    await loop.tick()
    written = kube.pending[(Kind.WORKLOAD, "ns", "wl")]
    assert ann.CONDITION_METRICS_AVAILABLE in {c["type"] for c in written["status"]["conditions"]}
    assert not state.cache.get(Kind.WORKLOAD, "ns", "wl")["status"]  # the informer has not seen it
    patches = len(kube.paths("PATCH", "/status"))
    await loop.tick()  # same moment: no usage due
    assert len(kube.paths("PATCH", "/status")) == patches  # nothing changed, nothing written
    kube.echo()
    await loop.tick()
    status = state.cache.get(Kind.WORKLOAD, "ns", "wl")["status"]
    kinds = {c["type"] for c in status["conditions"]}
    assert {ann.CONDITION_METRICS_AVAILABLE, ann.CONDITION_RECOMMENDATION_PROVIDED} <= kinds
    assert not loop.status._written  # caught up: the informer's version is used again


async def test_fetch_windows_follow_on_without_overlap():
    _state, _kube, source, loop, clock = _setup(target="")
    await loop.tick()
    clock.moment = T0 + timedelta(minutes=3)
    await loop.tick()
    (first_start, first_end), *rest = source.windows
    assert first_start == T0 - timedelta(hours=1)
    assert rest[0][0] == first_end + timedelta(minutes=1)  # one step after, never the same point twice
    assert rest[-1][1] == T0 + timedelta(minutes=3)


async def test_checkpoint_restores_the_same_recommendation():
    state, kube, source, loop, _clock = _setup(target="")
    source.pending = _usage(6, 3 * GiB)
    await loop.tick()
    await loop.shutdown()
    before = copy.deepcopy(state.cache.get(Kind.WORKLOAD, "ns", "wl")["status"])
    assert "histogramCheckpoint" in before
    # A new process: same cluster objects, fresh loop, the same samples offered again.
    again = Autoscaler(state, kube, source, loop.settings, FixedClock(T0))
    await again.tick()
    after = state.cache.get(Kind.WORKLOAD, "ns", "wl")["status"]
    assert after["recommendation"] == before["recommendation"]
    assert [c["message"] for c in after["conditions"]] == [c["message"] for c in before["conditions"]]


@pytest.mark.parametrize("bad", [{"tflops": {"bucketWeights": {"9999": 1}, "totalWeight": 1}}, "nonsense"])
async def test_unreadable_checkpoint_starts_afresh(bad):
    state, _kube, source, loop, _ = _setup(target="")
    wl = copy.deepcopy(state.cache.get(Kind.WORKLOAD, "ns", "wl"))
    wl["status"]["histogramCheckpoint"] = bad
    state.cache.apply(Kind.WORKLOAD, EventType.MODIFIED, wl)
    source.pending = _usage(6, 3 * GiB)
    await loop.tick()  # must not raise
    assert "recommendation" in state.cache.get(Kind.WORKLOAD, "ns", "wl")["status"]


async def test_batch_estimates_equal_the_per_workload_estimators():
    from tfsched.autoscale.estimators import estimate

    _state, _kube, source, loop, _ = _setup(target="")
    source.pending = _usage(6, 3 * GiB) + _usage(9, 5 * GiB, minutes=7)
    await loop.tick()
    (workload,) = loop.feeder.workloads()
    batch = loop._estimate_all([workload])[workload.key]
    single = estimate(workload.config.auto_set_resources, loop.bank.summary(loop.feeder.tracked[workload.key].row))
    assert batch == single
    assert batch.target.tflops > 0 and batch.upper_bound.vram > 0
