"""``tfsched serve --snapshot`` as a real process, driven over real HTTP."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import orjson
import pytest
import yaml

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.objects import gpu_object, gpu_pod, node_object
from tfsched.devcluster import processes

GiB = 2**30


def call(port: int, verb: str, body) -> tuple[int, object]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/{verb}", data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


@pytest.fixture(scope="module")
def snapshot_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("snap")
    nodes = [node_object(f"n{i}", gpus=2) for i in range(3)]
    gpus = [gpu_object(f"n{i}", j, tflops=100, vram=16 * GiB) for i in range(3) for j in range(2)]
    pods = [gpu_pod(f"p{i}", tflops="40", vram="8Gi", uid=f"u{i}") for i in range(20)]
    # A kubectl-style List with the YAML of several kinds, as `kubectl get ... -o yaml` writes it.
    doc = {"apiVersion": "v1", "kind": "List", "items": nodes + gpus + pods, "metadata": {"resourceVersion": ""}}
    path = tmp / "snapshot.yaml"
    path.write_text(yaml.safe_dump(doc))
    port = processes.free_port()
    record = processes.start_until_ready(
        "tfsched-snapshot",
        [sys.executable, "-m", "tfsched", "serve", "--snapshot", str(path), "--port", str(port)],
        tmp / "server.log",
        f"http://127.0.0.1:{port}/readyz",
        timeout=60,
    )
    yield port, pods
    processes.stop(record)


def test_snapshot_server_places_and_never_overcommits(snapshot_server):
    port, pods = snapshot_server
    names = ["n0", "n1", "n2"]
    placed: dict[str, int] = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        _, filtered = call(port, "filter", {"Pod": pod, "NodeNames": names, "Nodes": None})
        if not filtered["NodeNames"]:
            assert all("insufficient" in r for r in filtered["FailedNodes"].values())
            continue
        _, scores = call(port, "prioritize", {"Pod": pod, "NodeNames": filtered["NodeNames"], "Nodes": None})
        by_host = {s["Host"]: s["Score"] for s in scores}  # an absent host scores 0
        best = max(filtered["NodeNames"], key=lambda n: by_host.get(n, 0))
        body = {"PodName": name, "PodNamespace": "default", "PodUID": pod["metadata"]["uid"], "Node": best}
        status, result = call(port, "bind", body)
        assert status == 200 and result["Error"] == ""
        placed[name] = 1
    # 6 GPUs × 2 pods of 40 TFLOPS / 8Gi each = 12
    assert len(placed) == 12


def test_snapshot_server_rejects_bad_input_and_keeps_serving(snapshot_server):
    port, _ = snapshot_server
    status, body = call(port, "filter", {"Pod": None})
    assert status == 400 and "Pod" in body["error"]
    bad = gpu_pod("bad", vram="-1Gi")
    status, body = call(port, "filter", {"Pod": bad, "NodeNames": ["n0"]})
    assert status == 200 and ann.VRAM_REQUEST in body["FailedAndUnresolvableNodes"]["n0"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        assert resp.status == 200


def test_unreadable_snapshot_is_a_clear_cli_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: List\nitems:\n  - kind: Node\n    metadata: {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tfsched", "serve", "--snapshot", str(bad), "--port", str(processes.free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--snapshot" in proc.stderr and "metadata.name" in proc.stderr
    assert "Traceback" not in proc.stderr
