"""Failover in the deployed topology: two (kube-scheduler + tfsched) pairs, each
tfsched following its own scheduler's leader Lease; the active pair is killed
mid-burst and the other takes over with no GPU share handed out twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from tfsched.devcluster import processes
from tfsched.devcluster.processes import ProcessRecord

from .conftest import Cluster, make_pod
from .test_scheduling import assert_no_overcommit, bound, gpu_ids

pytestmark = pytest.mark.e2e

LEASE = "e2e-scheduler"


@dataclass
class Pair:
    name: str
    url: str
    tfsched: ProcessRecord
    scheduler: ProcessRecord


def start_pair(cluster: Cluster, name: str) -> Pair:
    dev = cluster.dev
    port = processes.free_port()
    config = yaml.safe_load(dev.tfsched_config.read_text())
    config["autoscaling"] = {"enabled": False}
    config["leaderElection"] = {
        "followScheduler": {"namespace": "kube-system", "leaseName": LEASE, "identity": name, "pollEvery": "0.5s"}
    }
    path = dev.root / f"tfsched-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    tfsched = dev.start_extender(say=lambda *_: None, name=f"tfsched-{name}", port=port, config=path, lead=False)
    url = f"http://127.0.0.1:{port}"
    scheduler = dev.start_scheduler(
        say=lambda *_: None,
        name=f"kube-scheduler-{name}",
        extender_url=url,
        hostname=name,
        leader_election={
            "leaderElect": True,
            "leaseDuration": "4s",
            "renewDeadline": "3s",
            "retryPeriod": "1s",
            "resourceLock": "leases",
            "resourceName": LEASE,
            "resourceNamespace": "kube-system",
        },
    )
    return Pair(name, url, tfsched, scheduler)


@pytest.fixture
def pairs(cluster: Cluster) -> Iterator[list[Pair]]:
    dev = cluster.dev
    started: list[Pair] = []
    with cluster.without("tfsched", "kube-scheduler"):
        try:
            started = [start_pair(cluster, "pair-a"), start_pair(cluster, "pair-b")]
            cluster.wait(
                lambda: sum(dev.extender_leads(p.url) for p in started) == 1, timeout=60, what="one pair to lead"
            )
            yield started
        finally:
            for pair in started:
                processes.stop(pair.scheduler)
                processes.stop(pair.tfsched)


def create_burst(cluster: Cluster, namespace: str) -> None:
    for batch in range(10):
        cluster.apply(*(make_pod(f"burst-{batch}-{i}", namespace, tflops="10", vram="1Gi") for i in range(10)))
        time.sleep(1.0)


def test_killing_the_active_pair_mid_burst(cluster: Cluster, namespace: str, pairs: list[Pair]):
    active = next(p for p in pairs if cluster.dev.extender_leads(p.url))
    standby = next(p for p in pairs if p is not active)
    assert not cluster.dev.extender_leads(standby.url)
    # 100 pods of 10 TFLOPS / 1Gi: the cluster has room for all of them (16 GPUs, 204 such shares),
    # created 10 at a time so the kill lands mid-burst.
    burst = threading.Thread(target=create_burst, args=(cluster, namespace), daemon=True)
    burst.start()
    cluster.wait(lambda: len(bound(cluster.pods(namespace))) >= 15, timeout=120, what="the burst to be under way")
    for record in (active.scheduler, active.tfsched):
        os.kill(record.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    before = len(bound(cluster.pods(namespace)))
    burst.join(timeout=60)
    assert before < 100, "the burst ended before the kill; nothing was tested"
    cluster.wait(lambda: cluster.dev.extender_leads(standby.url), timeout=60, what="the standby to take over")
    pods = cluster.wait(
        lambda: (b := bound(cluster.pods(namespace))) and len(b) == 100 and b, timeout=240, what="all 100 pods bound"
    )
    print(f"failover: {before} bound at the kill, the rest in {time.monotonic() - killed_at:.1f}s after it")
    assert all(gpu_ids(p) for p in pods), [p["metadata"]["name"] for p in pods if not gpu_ids(p)]
    assert_no_overcommit(cluster)
