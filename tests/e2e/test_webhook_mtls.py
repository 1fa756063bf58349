"""The second-scheduler path on the real control plane: a GPU pod created with
no schedulerName is mutated by tfsched's webhook (registered with the real
kube-apiserver), scheduled by the `tfsched-scheduler` kube-scheduler through
the extender over mutual TLS, and lands on a GPU with room; a plain pod is
untouched; /bind without the scheduler's client certificate is refused."""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tfsched.devcluster import pki, processes

from .conftest import Cluster, make_pod
from .test_scheduling import assert_no_overcommit, gpu_ids, wait_bound

pytestmark = pytest.mark.e2e

SCHEDULER = "tfsched-scheduler"
LABEL = "tfsched-e2e-webhook"


@dataclass
class Topology:
    url: str
    ca: pki.KeyPair
    webhook_port: int


@pytest.fixture
def second_scheduler(cluster: Cluster, tmp_path: Path) -> Iterator[Topology]:
    dev = cluster.dev
    d = tmp_path / "pki"
    d.mkdir()
    ca = pki.make_ca(d, "tfsched-ca")
    serving = pki.issue(d, ca, "tfsched", server=True)
    client = pki.issue(d, ca, "kube-scheduler", server=False)
    port, webhook_port, health_port = (processes.free_port() for _ in range(3))
    config = yaml.safe_load(dev.tfsched_config.read_text())
    config["autoscaling"] = {"enabled": False}
    config["scheduling"]["schedulerNames"] = [SCHEDULER]
    config["webhook"] = {"schedulerName": SCHEDULER}
    path = tmp_path / "tfsched.yaml"
    path.write_text(yaml.safe_dump(config))
    webhook_name = f"{LABEL}-{webhook_port}"
    records = []
    # This instance is to be the one writer: the session's own tfsched stands down meanwhile.
    with cluster.without("tfsched"):
        try:
            args = [
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.cert}",
                f"--webhook-port={webhook_port}",
            ]
            record = dev.start_extender(
                say=lambda *_: None, name="tfsched-tls", port=port, config=path, args=args, health_port=health_port
            )
            records.append(record)
            url = f"https://127.0.0.1:{port}"
            records.append(
                dev.start_scheduler(
                    say=lambda *_: None,
                    name="kube-scheduler-tfsched",
                    extender_url=url,
                    scheduler_name=SCHEDULER,
                    extender_tls={"certFile": str(client.cert), "keyFile": str(client.key), "caFile": str(ca.cert)},
                )
            )
            cluster.apply(
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "MutatingWebhookConfiguration",
                    "metadata": {"name": webhook_name},
                    "webhooks": [
                        {
                            "name": "gpu-pods.tfsched.tensor-fusion.ai",
                            "clientConfig": {
                                "url": f"https://127.0.0.1:{webhook_port}/mutate",
                                "caBundle": base64.b64encode(ca.cert.read_bytes()).decode(),
                            },
                            "rules": [
                                {
                                    "operations": ["CREATE"],
                                    "apiGroups": [""],
                                    "apiVersions": ["v1"],
                                    "resources": ["pods"],
                                }
                            ],
                            "namespaceSelector": {"matchLabels": {LABEL: "on"}},
                            "failurePolicy": "Fail",
                            "sideEffects": "None",
                            "admissionReviewVersions": ["v1"],
                        }
                    ],
                }
            )
            yield Topology(url, ca, webhook_port)
        finally:
            cluster.kubectl("delete", "mutatingwebhookconfiguration", webhook_name, "--ignore-not-found", check=False)
            for record in reversed(records):
                processes.stop(record)


def test_webhook_second_scheduler_and_mtls(cluster: Cluster, namespace: str, second_scheduler: Topology):
    cluster.kubectl("label", "namespace", namespace, f"{LABEL}=on")
    gpu = make_pod("gpu", namespace, tflops="20", vram="2Gi")
    del gpu["spec"]["containers"][0]["resources"]  # the webhook adds the managed resource
    plain = make_pod("plain", namespace)
    plain["metadata"]["annotations"] = {}
    plain["spec"]["containers"][0]["resources"] = {}
    cluster.apply(gpu, plain)
    pods = {p["metadata"]["name"]: p for p in cluster.pods(namespace)}
    assert pods["gpu"]["spec"]["schedulerName"] == SCHEDULER
    assert pods["gpu"]["spec"]["containers"][0]["resources"]["limits"] == {"tensor-fusion.ai/gpu": "1"}
    assert pods["plain"]["spec"]["schedulerName"] == "default-scheduler"
    assert not pods["plain"]["spec"]["containers"][0].get("resources")
    [bound] = [p for p in wait_bound(cluster, namespace, 1) if p["metadata"]["name"] == "gpu"]
    assert gpu_ids(bound)
    assert_no_overcommit(cluster)
    # Only the scheduler's client certificate opens /bind.
    body = b'{"PodName": "plain", "PodNamespace": "%s", "Node": "small-0"}' % namespace.encode()
    for context in (None, ssl.create_default_context(cafile=str(second_scheduler.ca.cert))):
        url = second_scheduler.url if context else second_scheduler.url.replace("https", "http")
        request = urllib.request.Request(f"{url}/bind", data=body)
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(request, timeout=10, context=context)
