"""The ledger auditor: drift seen twice in a row is reported and repaired; events in flight are not drift."""

from __future__ import annotations

import copy

from tfsched.allocation.audit import (
    ALLOCATION_MISMATCH,
    ALLOCATION_WITHOUT_POD,
    GPU_OVERCOMMITTED,
    POD_WITHOUT_ALLOCATION,
    Auditor,
)
from tfsched.allocation.state import ClusterState
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object

GiB = 2**30


def setup() -> tuple[ClusterState, Auditor]:
    state = ClusterState()
    state.load(
        {Kind.NODE: [node_object("a")], Kind.GPU: [gpu_object("a", i, tflops=100, vram=16 * GiB) for i in range(2)]}
    )
    return state, Auditor(state.ledger)


def holder(uid: str, gpu: int = 0, tflops: str = "40") -> dict:
    return gpu_pod(uid, tflops=tflops, vram="4Gi", gpu_ids=[gpu_name("a", gpu)], node="a", uid=uid)


def test_agreement_is_no_drift():
    state, auditor = setup()
    pods = [holder("p1"), holder("p2", 1)]
    for pod in pods:
        state.cache.apply(Kind.POD, EventType.ADDED, pod)
    assert auditor.audit(pods) == [] and auditor.audit(pods) == []


def test_a_missed_delete_is_drift_on_the_second_audit_and_repaired():
    state, auditor = setup()
    state.cache.apply(Kind.POD, EventType.ADDED, holder("gone"))
    assert auditor.audit([]) == []  # once: maybe a delete in flight
    [drift] = auditor.audit([])
    assert drift.kind == ALLOCATION_WITHOUT_POD and "default/gone" in drift.message
    state.repair(drift)
    assert "gone" not in state.ledger.allocations
    assert state.cache.get(Kind.POD, "default", "gone") is None
    assert auditor.audit([]) == []


def test_a_missed_bind_is_counted():
    state, auditor = setup()
    listed = [holder("missed")]
    assert auditor.audit(listed) == []
    [drift] = auditor.audit(listed)
    assert drift.kind == POD_WITHOUT_ALLOCATION
    state.repair(drift)
    assert state.ledger.allocations["missed"].tflops == 40_000


def test_a_changed_record_is_taken_from_the_pod():
    state, auditor = setup()
    state.cache.apply(Kind.POD, EventType.ADDED, holder("p", tflops="40"))
    listed = [holder("p", tflops="60")]
    auditor.audit(listed)
    [drift] = auditor.audit(listed)
    assert drift.kind == ALLOCATION_MISMATCH
    state.repair(drift)
    assert state.ledger.allocations["p"].tflops == 60_000


def test_an_event_in_flight_is_not_drift():
    state, auditor = setup()
    state.cache.apply(Kind.POD, EventType.ADDED, holder("new"))
    assert auditor.audit([]) == []  # listed before the bind
    assert auditor.audit([holder("new")]) == []  # the next list has it


def test_reservations_are_not_drift_and_overcommit_is_reported_at_once():
    state, auditor = setup()
    pods = [holder("x", tflops="70"), holder("y", tflops="70")]  # two real pods on one 100-TFLOPS GPU
    for pod in copy.deepcopy(pods):
        state.cache.apply(Kind.POD, EventType.ADDED, pod)
    [drift] = auditor.audit(pods)
    assert drift.kind == GPU_OVERCOMMITTED and drift.uid == gpu_name("a", 0)


class _OnePage:
    """A client whose pod list is one page."""

    def __init__(self, pods: list[dict]) -> None:
        self.pods = pods

    async def get(self, path: str, **params) -> dict:
        return {"apiVersion": "v1", "metadata": {"resourceVersion": "7"}, "items": copy.deepcopy(self.pods)}


async def test_the_audit_lists_slim_pods_that_still_compare_and_repair():
    from tfsched.extender.upkeep import LedgerAuditor, _slim

    state, _ = setup()
    missed = holder("missed")
    missed["metadata"]["labels"] = {"app": "x"}
    missed["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{" + "x" * 4000 + "}"
    client = _OnePage([missed, gpu_pod("plain-cpu", uid="c")])
    del client.pods[1]["metadata"]["annotations"]  # not a GPU pod: not listed
    listed = _slim(copy.deepcopy(client.pods[0]))
    assert listed["apiVersion"] == "v1" and "labels" not in listed["metadata"]
    assert "kubectl.kubernetes.io/last-applied-configuration" not in listed["metadata"]["annotations"]
    auditor = LedgerAuditor(client, state, lambda: "")
    reported = []
    state.problems.report = lambda kind, ref, reason, message: reported.append(ref) or True  # type: ignore[method-assign]
    assert await auditor.audit_once() == 0  # once: maybe a bind in flight
    assert await auditor.audit_once() == 1
    [ref] = reported  # the Event names the slim pod the pass kept for the suspect
    assert ref["metadata"]["uid"] == "missed" and "labels" not in ref["metadata"]
    assert state.ledger.allocations["missed"].tflops == 40_000
    assert await auditor.audit_once() == 0


def test_a_pass_holds_only_the_pods_the_previous_audit_suspected():
    _, auditor = setup()
    pods = [holder(f"p{i}") for i in range(5)]
    first = auditor.start()
    for pod in pods:
        first.take(pod)
    assert first.pods == {} and len(first.held) == 5
    first.finish()  # every one suspected: held GPUs the ledger did not count
    second = auditor.start()
    for pod in pods[:2]:
        second.take(pod)
    assert set(second.pods) == {"p0", "p1"}
    assert {d.uid for d in second.finish()} == {"p0", "p1"}
