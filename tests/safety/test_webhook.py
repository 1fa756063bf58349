"""The mutating webhook sends GPU pods to tfsched's scheduler and leaves every other pod alone."""

from __future__ import annotations

import base64
import copy

import orjson
import pytest

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.objects import gpu_pod
from tfsched.extender.webhook import review_response
from tfsched.extender.wire import WireError


def review(pod: object, operation: str = "CREATE", kind: str = "Pod") -> bytes:
    request = {"uid": "r1", "kind": {"group": "", "version": "v1", "kind": kind}, "operation": operation, "object": pod}
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def apply_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902 add/replace on objects, as the API server applies them."""
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] in ("add", "replace")
        *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        target = doc
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        if op["op"] == "replace":
            assert last in target
        target[last] = op["value"]
    return doc


def mutated(pod: dict, **kwargs) -> dict:
    answer = review_response(review(pod, **kwargs), "tfsched-scheduler")
    assert answer["kind"] == "AdmissionReview" and answer["response"]["uid"] == "r1"
    assert answer["response"]["allowed"] is True
    if "patch" not in answer["response"]:
        return pod
    assert answer["response"]["patchType"] == "JSONPatch"
    return apply_patch(pod, orjson.loads(base64.b64decode(answer["response"]["patch"])))


def test_gpu_pod_goes_to_tfsched_scheduler_and_keeps_its_limit():
    pod = gpu_pod("p", tflops="10", vram="1Gi")
    pod["spec"]["schedulerName"] = "default-scheduler"  # as defaulting leaves it before admission
    out = mutated(pod)
    assert out["spec"]["schedulerName"] == "tfsched-scheduler"
    assert out["spec"]["containers"] == pod["spec"]["containers"]  # the limit was there already


def test_missing_managed_resource_is_added_to_the_first_container():
    pod = gpu_pod("p", tflops="10", vram="1Gi")
    del pod["spec"]["containers"][0]["resources"]
    out = mutated(pod)
    assert out["spec"]["containers"][0]["resources"]["limits"] == {ann.MANAGED_RESOURCE: ann.MANAGED_RESOURCE_QUANTITY}
    pod = gpu_pod("p", tflops="10", vram="1Gi")
    pod["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    out = mutated(pod)
    assert out["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "1",
        ann.MANAGED_RESOURCE: ann.MANAGED_RESOURCE_QUANTITY,
    }


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p["metadata"].update(annotations={}),  # a plain pod
        lambda p: p["metadata"].update(annotations={"tensor-fusion.ai/unrelated": "x"}),
        lambda p: p["spec"].update(schedulerName="volcano"),  # asks for another scheduler explicitly
    ],
)
def test_other_pods_are_never_touched(change):
    pod = gpu_pod("p", tflops="10", vram="1Gi")
    change(pod)
    if pod["metadata"]["annotations"]:
        pod["spec"]["containers"][0]["resources"] = {"limits": {ann.MANAGED_RESOURCE: "1"}}
    assert mutated(pod) is pod


def test_only_pod_creation_is_mutated():
    pod = gpu_pod("p", tflops="10", vram="1Gi")
    assert "patch" not in review_response(review(pod, operation="UPDATE"), "x")["response"]
    assert "patch" not in review_response(review(pod, kind="Deployment"), "x")["response"]


@pytest.mark.parametrize("body", [b"", b"[]", b'{"request": {}}', b'{"request": {"uid": 5}}', b"{bad"])
def test_unreadable_reviews_are_a_clear_error(body):
    with pytest.raises(WireError):
        review_response(body, "x")


@pytest.mark.parametrize("pod", [None, [], "x", {"metadata": []}, {"metadata": {"annotations": []}}, {"spec": 3}])
def test_hostile_pods_are_allowed_unchanged(pod):
    answer = review_response(review(pod), "x")["response"]
    assert answer["allowed"] is True and "patch" not in answer
