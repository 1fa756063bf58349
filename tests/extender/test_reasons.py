"""Filter reasons: quantities as Kubernetes writes them, the largest free share, and
which failures preemption cannot fix (FailedAndUnresolvableNodes)."""

from __future__ import annotations

import pytest

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.gpurequest import parse_gpu_request
from tfsched.clustermodel.objects import gpu_pod
from tfsched.extender import placement
from tfsched.extender.placement import filter_nodes

from .conftest import GiB, make_state

MiB = 2**20


def request(**kwargs):
    return parse_gpu_request(gpu_pod("p", **kwargs)["metadata"]["annotations"])


def holder(node: str, gpu: int, *, tflops: str = "0", vram: str = "0") -> dict:
    return gpu_pod(
        f"h-{node}-{gpu}", tflops=tflops, vram=vram, node=node, gpu_ids=[f"{node}-gpu-{gpu}"], uid=f"{node}{gpu}"
    )


def test_vram_reason_names_the_largest_free_share_in_mi():
    state = make_state(
        {"a": [(100, 16 * GiB), (100, 16 * GiB)]}, pods=[holder("a", 0, vram="4Gi"), holder("a", 1, vram="10Gi")]
    )
    out = filter_nodes(state, request(tflops="1", vram="17179869000"), ["a"])  # 16Gi less 184 bytes
    assert out.failed == {"a": "insufficient VRAM: need 1 GPU with 16Gi free, largest free 12Gi"}
    assert out.unresolvable == {}


def test_several_gpus_say_how_many_have_it_and_the_best_of_the_rest():
    state = make_state({"a": [(100, 16 * GiB)] * 3}, pods=[holder("a", 0, tflops="90"), holder("a", 1, tflops="70")])
    out = filter_nodes(state, request(tflops="50", vram="1Gi", gpu_count=2), ["a"])
    assert out.failed == {
        "a": "insufficient TFLOPS: need 2 GPUs with 50 TFLOPS free, 1 has it, largest free on the others 30 TFLOPS"
    }


def test_percent_and_vram_together():
    state = make_state({"a": [(100, 16 * GiB)]}, pods=[holder("a", 0, tflops="1", vram="2539377048")])
    req = request(vram="16Gi", extra_annotations={ann.COMPUTE_PERCENT_REQUEST: "100"})
    out = filter_nodes(state, req, ["a"])
    assert out.failed == {
        "a": "insufficient TFLOPS and VRAM: need 1 GPU with 100% of TFLOPS and 16Gi free, "
        "largest free 99% of TFLOPS and 13963Mi"
    }


def test_free_share_that_would_read_as_enough_is_exact():
    state = make_state({"a": [(100, 16 * GiB)]}, pods=[holder("a", 0, vram="100")])
    out = filter_nodes(state, request(tflops="1", vram="16Gi"), ["a"])
    assert out.failed == {"a": f"insufficient VRAM: need 1 GPU with 16Gi free, largest free {16 * GiB - 100}"}


def test_larger_than_any_gpu_is_unresolvable_usage_is_not():
    layout = {"small": [(100, 16 * GiB)], "big": [(312, 80 * GiB), (312, 40 * GiB)]}
    state = make_state(layout, pods=[holder("big", 0, vram="70Gi")])
    # Larger than every GPU in the cluster: preemption cannot help anywhere.
    out = filter_nodes(state, request(tflops="1", vram="96Gi"), ["small", "big"])
    assert out.failed == {}
    assert out.unresolvable == {
        "small": "insufficient VRAM: need 1 GPU with 96Gi free, largest free 16Gi; no GPU on the node is that large",
        "big": "insufficient VRAM: need 1 GPU with 96Gi free, largest free 40Gi; no GPU on the node is that large",
    }
    # 50Gi: big's first GPU holds it once its 70Gi holder goes (resolvable); small never can.
    out = filter_nodes(state, request(tflops="1", vram="50Gi"), ["small", "big"])
    assert out.failed == {"big": "insufficient VRAM: need 1 GPU with 50Gi free, largest free 40Gi"}
    assert "no GPU on the node is that large" in out.unresolvable["small"]
    # Two GPUs of 50Gi: only one of big's is that large.
    out = filter_nodes(state, request(tflops="1", vram="50Gi", gpu_count=2), ["big"])
    assert out.unresolvable == {
        "big": "insufficient VRAM: need 2 GPUs with 50Gi free, 0 have it, largest free on the others 40Gi; "
        "only 1 GPU on the node is that large"
    }


def test_reasons_are_formatted_once_per_distinct_outcome(monkeypatch: pytest.MonkeyPatch):
    layout = {f"n{i}": [(100, 16 * GiB)] for i in range(6)}
    used = [holder(f"n{i}", 0, vram="10Gi" if i < 4 else "12Gi") for i in range(6)]
    state = make_state(layout, pods=used)
    calls = []
    real = placement.fail_reason
    monkeypatch.setattr(placement, "fail_reason", lambda *a: calls.append(a) or real(*a))
    out = filter_nodes(state, request(tflops="1", vram="8Gi"), list(layout))
    assert len(out.failed) == 6 and len(calls) == 2  # largest free 6Gi (4 nodes) and 4Gi (2 nodes)
    assert out.failed["n0"].endswith("largest free 6Gi") and out.failed["n5"].endswith("largest free 4Gi")
