"""The mutating admission webhook: GPU pods go to tfsched's own scheduler.

On a managed cluster the stock ``default-scheduler`` cannot be given an
extender, so tfsched runs a second kube-scheduler (``tfsched-scheduler``).
Pods that carry TensorFusion request annotations are sent to it here: their
``schedulerName`` is set when it is the default, and the managed resource
(``tensor-fusion.ai/gpu``, at quantity 0) is added to the first container's limits when no
container asks for it, so kube-scheduler routes the pod to the extender.
Every other pod is allowed unchanged.  An AdmissionReview that cannot be
read is a 400 with a JSON message, as everywhere in the extender.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from tfsched.allocation.config import DEFAULT_SCHEDULER
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.gpurequest import is_gpu_pod
from tfsched.extender.httpserver import BodyError, Reply, Request, Route, Routes
from tfsched.extender.wire import WireError

ADMISSION_VERSION = "admission.k8s.io/v1"
DEFAULT_WEBHOOK_SCHEDULER = "tfsched-scheduler"


def _escape(key: str) -> str:
    """A JSON Pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def pod_patch(pod: dict[str, Any], scheduler_name: str) -> list[dict[str, Any]]:
    """The JSON patch that sends a GPU pod to ``scheduler_name`` ([] for other pods)."""
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict) or not is_gpu_pod(annotations):
        return []
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return []
    ops: list[dict[str, Any]] = []
    if spec.get("schedulerName") in (None, "", DEFAULT_SCHEDULER):
        op = "replace" if "schedulerName" in spec else "add"
        ops.append({"op": op, "path": "/spec/schedulerName", "value": scheduler_name})
    containers = spec.get("containers")
    if isinstance(containers, list) and containers and isinstance(containers[0], dict):

        def limits(c: Any) -> dict:
            resources = c.get("resources") if isinstance(c, dict) else None
            found = resources.get("limits") if isinstance(resources, dict) else None
            return found if isinstance(found, dict) else {}

        if not any(ann.MANAGED_RESOURCE in limits(c) for c in containers):
            first = containers[0]
            resources = first.get("resources")
            limit = {ann.MANAGED_RESOURCE: ann.MANAGED_RESOURCE_QUANTITY}
            if not isinstance(resources, dict):
                ops.append({"op": "add", "path": "/spec/containers/0/resources", "value": {"limits": limit}})
            elif not isinstance(resources.get("limits"), dict):
                ops.append({"op": "add", "path": "/spec/containers/0/resources/limits", "value": limit})
            else:
                path = f"/spec/containers/0/resources/limits/{_escape(ann.MANAGED_RESOURCE)}"
                ops.append({"op": "add", "path": path, "value": ann.MANAGED_RESOURCE_QUANTITY})
    return ops


def review_response(body: bytes, scheduler_name: str) -> dict[str, Any]:
    """The AdmissionReview answering the one in ``body``; raises WireError when it cannot be read."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"request body is not valid JSON: {exc}") from None
    request = review.get("request") if isinstance(review, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise WireError("field request.uid is missing: not an AdmissionReview")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    pod = request.get("object")
    if kind.get("kind") == "Pod" and request.get("operation") == "CREATE" and isinstance(pod, dict):
        ops = pod_patch(pod, scheduler_name)
        if ops:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(orjson.dumps(ops)).decode()
    return {"apiVersion": ADMISSION_VERSION, "kind": "AdmissionReview", "response": response}


def webhook_routes(scheduler_name: str, max_body_bytes: int) -> Routes:
    async def mutate(request: Request) -> Reply:
        try:
            answer = review_response(await request.read(), scheduler_name)
        except (WireError, BodyError) as exc:
            return Reply.error(str(exc))
        return Reply.json(answer)

    return {("POST", "/mutate"): Route(mutate, max_body_bytes)}
