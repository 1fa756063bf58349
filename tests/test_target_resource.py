"""The extender and the autoscaler agree on which resources a workload's
recommendation covers, for every spelling of ``targetResource`` they accept.

Before they shared one model, the autoscaler took ``compute`` and any key
casing while the extender did not: running pods were resized while new pods
of the same workload were placed by their declared request.
"""

from __future__ import annotations

import pytest

from tfsched.allocation.state import ClusterState
from tfsched.autoscale.feed import Feeder
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import Kind
from tfsched.clustermodel.objects import gpu_object, gpu_pod, node_object
from tfsched.devcluster.fakes import FakeKube

GiB = 2**30
REC = {"requests": {"tflops": "13", "vram": "1Gi"}, "limits": {"tflops": "26", "vram": "2Gi"}}
KEYS = ["targetResource", "targetresource", "TargetResource", "TARGETRESOURCE"]
VALUES = {
    "all": {"tflops", "vram"},
    "ALL": {"tflops", "vram"},
    " All ": {"tflops", "vram"},
    "tflops": {"tflops"},
    "TFLOPS": {"tflops"},
    "compute": {"tflops"},
    "Compute": {"tflops"},
    "vram": {"vram"},
    "VRAM": {"vram"},
    "": set(),
    None: set(),
}


def _state(auto: dict | None, pod_annotations: dict[str, str] | None = None) -> ClusterState:
    spec: dict = {"resources": {"requests": {"tflops": "40", "vram": "10Gi"}}}
    if auto is not None:
        spec["autoScalingConfig"] = {"autoSetResources": auto}
    workload = {
        "apiVersion": ann.GROUP_VERSION,
        "kind": ann.WORKLOAD_KIND,
        "metadata": {"name": "wl", "namespace": "ns", "uid": "wl-uid", "resourceVersion": "1"},
        "spec": spec,
        "status": {"recommendation": REC},
    }
    pod = gpu_pod(
        "p",
        namespace="ns",
        tflops="40",
        vram="10Gi",
        uid="p-uid",
        extra_annotations={ann.WORKLOAD: "wl", **(pod_annotations or {})},
    )
    state = ClusterState()
    gpus = [gpu_object("n0", 0, tflops=312, vram=80 * GiB)]
    state.load({Kind.NODE: [node_object("n0")], Kind.GPU: gpus, Kind.WORKLOAD: [workload], Kind.POD: [pod]})
    return state


def _extender_targets(state: ClusterState) -> set[str]:
    pod = state.cache.get(Kind.POD, "ns", "p")
    effective = state.effective_request(pod)
    out = set()
    if (effective.tflops_request, effective.tflops_limit) == (13, 26):
        out.add("tflops")
    if (effective.vram_request, effective.vram_limit) == (GiB, 2 * GiB):
        out.add("vram")
    return out


def _autoscaler_targets(state: ClusterState) -> set[str] | None:
    """What the loop would apply, through the loop's own discovery (None: workload skipped)."""
    workloads = Feeder(state, FakeKube(state)).workloads()
    if not workloads:
        return None
    (workload,) = workloads
    auto = workload.config.auto_set_resources
    return {r for r in ("tflops", "vram") if auto.applies and auto.targets(r)}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", list(VALUES), ids=repr)
def test_workload_spelling(key: str, value: str | None) -> None:
    state = _state({"enable": True, key: value})
    assert _autoscaler_targets(state) == VALUES[value]
    assert _extender_targets(state) == VALUES[value]


@pytest.mark.parametrize("value", ["all", "compute", "VRAM", ""])
def test_disabled_applies_nothing_on_either_side(value: str) -> None:
    state = _state({"enable": False, "targetResource": value})
    assert _autoscaler_targets(state) == set()
    assert _extender_targets(state) == set()


def test_an_invalid_target_applies_nothing_on_either_side() -> None:
    state = _state({"enable": True, "targetResource": "gpu"})
    assert _autoscaler_targets(state) is None  # skipped, and logged when parsed
    assert _extender_targets(state) == set()


@pytest.mark.parametrize("value", [v for v in VALUES if v is not None])
def test_pod_annotation_spelling(value: str) -> None:
    """A workload without ``autoSetResources``: the pods' annotations decide, read the same way,
    and the workload the autoscaler creates from them says the same."""
    notes = {ann.AUTO_RESOURCES: "true", ann.AUTO_SCALE_TARGET_RESOURCE: value}
    state = _state(None, notes)
    assert _extender_targets(state) == VALUES[value]
    pod = state.cache.get(Kind.POD, "ns", "p")
    created = Feeder(state, FakeKube(state))._workload_from_pod("ns", "wl", pod)
    created["metadata"]["uid"] = "wl-uid"
    created["status"] = {"recommendation": REC}
    state.load({Kind.WORKLOAD: [created], Kind.POD: [pod], Kind.NODE: [node_object("n0")]})
    assert _autoscaler_targets(state) == VALUES[value]
    assert _extender_targets(state) == VALUES[value]
