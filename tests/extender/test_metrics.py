"""/metrics: the process's collectors, build info, filter denials by reason, binds, and
allocation per GPU and per node as the ledger holds it."""

from __future__ import annotations

import random

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import EventType, Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod

from .conftest import GiB, make_state
from .test_protocol import LAYOUT, args_names, post


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _scrape(client) -> dict:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return _samples(await resp.text())


async def test_process_platform_gc_collectors_and_build_info(make_client):
    got = await _scrape(await make_client(make_state(LAYOUT)))
    names = {name for name, _ in got}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert "python_gc_objects_collected_total" in names
    (build,) = [labels for name, labels in got if name == "tfsched_build_info"]
    assert dict(build)["version"] and dict(build)["python_version"].count(".") == 2
    for kind in ("allocation_without_pod", "pod_without_allocation", "allocation_mismatch", "gpu_overcommitted"):
        assert got[("tfsched_ledger_drift", (("kind", kind),))] == 0


async def test_filter_counts_nodes_and_denials_by_reason(make_client):
    client = await make_client(make_state(LAYOUT))
    pod = gpu_pod("p", tflops="10", vram="40Gi", uid="u")  # fits only "big"
    await post(client, "filter", args_names(pod, ["small", "big", "cpu-only", "nowhere"]))
    got = await _scrape(client)
    nodes = {
        dict(labels)["result"]: v for (name, labels), v in got.items() if name == "tfsched_extender_filter_nodes_total"
    }
    assert nodes == {"passed": 1, "failed": 0, "unresolvable": 3}  # small's 16Gi GPU can never hold 40Gi
    denials = {
        dict(labels)["reason"]: v
        for (name, labels), v in got.items()
        if name == "tfsched_extender_filter_denials_total"
    }
    assert {reason for reason, v in denials.items() if v} == {"insufficient_vram", "no_eligible_gpu", "unknown_node"}
    assert denials["insufficient_vram"] == denials["no_eligible_gpu"] == denials["unknown_node"] == 1
    assert denials["too_few_gpus"] == 0  # every known reason has a series from the start
    bad = gpu_pod("q", vram="lots", uid="q")
    await post(client, "filter", args_names(bad, ["small", "big"]))
    got = await _scrape(client)
    assert got[("tfsched_extender_filter_denials_total", (("reason", "invalid_request"),))] == 2


async def test_allocation_per_gpu_and_node_follows_binds(make_client):
    state = make_state(LAYOUT, pods=[gpu_pod("p", tflops="100", vram="8Gi", uid="u")])
    client = await make_client(state)
    _, result = await post(client, "bind", {"PodName": "p", "PodNamespace": "default", "PodUID": "u", "Node": "big"})
    assert result["Error"] == ""
    got = await _scrape(client)
    assert got[("tfsched_extender_binds_total", (("result", "bound"),))] == 1
    (gpu,) = state.ledger.allocations["u"].gpu_names
    labels = (("gpu", gpu), ("node", "big"))
    assert got[("tfsched_gpu_vram_allocated_bytes", labels)] == 8 * GiB
    assert got[("tfsched_gpu_vram_available_bytes", labels)] == 72 * GiB
    assert got[("tfsched_gpu_tflops_allocated", labels)] == 100
    assert got[("tfsched_gpu_tflops_available", labels)] == 212
    assert got[("tfsched_gpu_pods", labels)] == 1
    node = (("node", "big"),)
    assert got[("tfsched_node_vram_allocated_bytes", node)] == 8 * GiB
    assert got[("tfsched_node_vram_available_bytes", node)] == 152 * GiB
    assert got[("tfsched_node_tflops_available", node)] == 312 * 2 - 100
    assert got[("tfsched_node_gpu_pods", node)] == 1
    assert got[("tfsched_node_gpu_pods", (("node", "small"),))] == 0
    _, result = await post(client, "bind", {"PodName": "x", "PodNamespace": "default", "PodUID": "x", "Node": "big"})
    assert result["Error"]
    assert (await _scrape(client))[("tfsched_extender_binds_total", (("result", "failed"),))] == 1


async def test_per_gpu_series_can_be_switched_off(app_client):
    from tests.serving import memory_app

    state = make_state(LAYOUT)
    client = await app_client(memory_app(state, metrics_per_gpu=False))
    names = {name for name, _ in await _scrape(client)}
    assert "tfsched_node_vram_available_bytes" in names
    assert not {n for n in names if n.startswith("tfsched_gpu_")}


@pytest.mark.parametrize("seed", range(5))
def test_holders_per_gpu_follow_the_ledger_through_binds_deletes_and_gpu_moves(seed: int) -> None:
    """inventory.holders (tfsched_gpu_pods) equals a recount of the ledger's allocations."""
    rng = random.Random(seed)
    nodes = ["a", "b", "c"]
    state = make_state({n: [(100, 16 * GiB), (100, 16 * GiB)] for n in nodes})
    live: list[dict] = []
    for k in range(150):
        step = rng.choice(["bind", "bind", "delete", "move", "gpu"])
        if step == "bind":
            node = rng.choice(nodes)
            ids = [gpu_name(node, i) for i in rng.sample([0, 1], rng.choice([1, 2]))]
            pod = gpu_pod(f"p{k}", tflops="5", vram="1Gi", uid=f"u{k}", node=node, gpu_ids=ids)
            live.append(pod)
            state.cache.apply(Kind.POD, EventType.ADDED, pod)
        elif step == "delete" and live:
            state.cache.apply(Kind.POD, EventType.DELETED, live.pop(rng.randrange(len(live))))
        elif step == "move":  # a GPU object re-reported on another node
            node, other = rng.sample(nodes, 2)
            gpu = gpu_object(node, rng.randrange(2), tflops=100, vram=16 * GiB)
            gpu["status"]["nodeSelector"] = {ann.HOSTNAME_LABEL: other}
            state.cache.apply(Kind.GPU, EventType.MODIFIED, gpu)
        else:
            state.cache.apply(
                Kind.GPU, EventType.MODIFIED, gpu_object(rng.choice(nodes), rng.randrange(2), tflops=100, vram=16 * GiB)
            )
        inv, ledger = state.inventory, state.ledger
        for name, g in inv.gpu_index.items():
            want = sum(1 for uid in ledger.by_gpu.get(name, ()) if ledger._counts_on(ledger.allocations[uid], g))
            assert inv.holders[g] == want, (k, step, name)


def test_serve_config_metrics_per_gpu_false_reaches_metrics(tmp_path):
    """``metrics: {perGPU: false}`` in the serve config, through a real ``tfsched serve``."""
    import sys
    import urllib.request

    import yaml

    from tfsched.clustermodel.objects import node_object
    from tfsched.devcluster import processes

    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [node_object("n0", gpus=1), gpu_object("n0", 0, tflops=100, vram=16 * GiB)],
    }
    snapshot, config = tmp_path / "snapshot.yaml", tmp_path / "tfsched.yaml"
    snapshot.write_text(yaml.safe_dump(doc))
    config.write_text("metrics:\n  perGPU: false\n")
    port = processes.free_port()
    argv = [sys.executable, "-m", "tfsched", "serve", "--snapshot", str(snapshot), "--config", str(config)]
    record = processes.start_until_ready(
        "tfsched-metrics",
        [*argv, "--port", str(port)],
        tmp_path / "serve.log",
        f"http://127.0.0.1:{port}/readyz",
        timeout=60,
    )
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            names = {name for name, _ in _samples(resp.read().decode())}
    finally:
        processes.stop(record)
    assert "tfsched_node_vram_available_bytes" in names
    assert not {n for n in names if n.startswith("tfsched_gpu_")}
