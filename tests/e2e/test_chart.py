"""The Helm chart against the real control plane.

- Every rendered manifest (default and non-default values) passes
  ``kubectl apply --dry-run=server``: the real API server's validation.
- ``helm install`` and ``helm upgrade`` for real: the generated certificates are
  kept on upgrade (the chart looks the Secret up).
- RBAC: ``kubectl auth can-i --list`` as tfsched's ServiceAccount allows what
  the code calls and denies the rest.
- The chart's secondScheduler pod (``devcluster.deployed``): a GPU pod created
  with no schedulerName is mutated by the webhook, scheduled by
  ``tfsched-scheduler`` through the extender over mutual TLS with the chart's
  generated certificates and bound with ``gpu-ids``; each process authenticates
  as its ServiceAccount, so the chart's RBAC is all it has. A plain pod is
  untouched; /bind over HTTP or without the client certificate is refused.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tfsched.clustermodel import annotations as ann
from tfsched.devcluster import chart, deployed, processes
from tfsched.devcluster.cluster import numba_cache_dir

from .conftest import Cluster, make_pod
from .test_scheduling import assert_no_overcommit, gpu_ids, wait_bound

pytestmark = pytest.mark.e2e

LABEL = "tfsched-e2e-webhook"
# Kinds whose CRDs (cert-manager, Prometheus operator) this control plane does not have.
FOREIGN_KINDS = {"Certificate", "Issuer", "ServiceMonitor"}
VALUE_SETS = {
    "default": {},
    "extendScheduler": {"topology": "extendScheduler"},
    "no-webhook-ignore": {"webhook": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
    "custom": {
        "scheduler": {"name": "gpu-scheduler", "image": {"tag": "v1.36.0"}},
        "webhook": {"failurePolicy": "Ignore", "objectSelector": {"matchLabels": {"gpu": "yes"}}},
        "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        "tfsched": {"config": {"scheduling": {"placementMode": "CompactFirst"}}},
        "replicas": 3,
    },
    "certManager": {"tls": {"mode": "certManager"}, "serviceMonitor": {"enabled": True}},
}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_manifests_pass_server_side_dry_run(cluster: Cluster, tmp_path: Path, name: str):
    docs = chart.render(VALUE_SETS[name], namespace="default")
    kinds = {d["kind"] for d in docs}
    assert {"ClusterRole", "ConfigMap", "Service"} <= kinds
    if name == "certManager":
        assert {"Certificate", "Issuer", "ServiceMonitor"} <= kinds
    checked = [d for d in docs if d["kind"] not in FOREIGN_KINDS]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(checked))
    done = cluster.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(checked)


def _helm(cluster: Cluster, *args: str):
    return chart.helm(*args, "--kubeconfig", str(cluster.dev.kubeconfig))


def test_helm_install_and_upgrade_keep_the_generated_certificates(cluster: Cluster):
    release, namespace = "chart-e2e", "tfsched-chart-e2e"
    secret = f"{release}-tfsched-tls"
    # No namespace matches the webhook, and nothing runs the Deployment's pods' containers
    # here (no kubelet): pod creation elsewhere must not wait on a webhook that cannot answer.
    values = ["--set", "webhook.namespaceSelector.matchLabels.tfsched-e2e-never=x", "--set", "replicas=1"]
    try:
        _helm(cluster, "install", release, str(chart.CHART), "-n", namespace, "--create-namespace", *values)
        first = cluster.get_json("secret", secret, "-n", namespace)["data"]
        hook = cluster.get_json("mutatingwebhookconfiguration", f"{release}-tfsched")
        assert hook["webhooks"][0]["clientConfig"]["caBundle"] == first["ca.crt"]
        debug = ["--set", "tfsched.logLevel=DEBUG"]
        _helm(cluster, "upgrade", release, str(chart.CHART), "-n", namespace, *values, *debug)
        assert cluster.get_json("secret", secret, "-n", namespace)["data"] == first
        hook = cluster.get_json("mutatingwebhookconfiguration", f"{release}-tfsched")
        assert hook["webhooks"][0]["clientConfig"]["caBundle"] == first["ca.crt"]
        deployment = cluster.get_json("deployment", f"{release}-tfsched-scheduler", "-n", namespace)
        (tfsched,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "tfsched"]
        assert "--log-level=DEBUG" in tfsched["command"]
    finally:
        chart.helm("uninstall", release, "-n", namespace, "--kubeconfig", str(cluster.dev.kubeconfig), check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_an_unreachable_webhook_holds_back_gpu_pods_only(cluster: Cluster, namespace: str):
    """The chart installed with failurePolicy Fail and nothing serving its webhook (no kubelet
    runs its pods here): the real API server still creates a plain pod in a selected
    namespace (matchConditions keep it from the webhook) and refuses a GPU pod."""
    release, release_ns, label = "chart-e2e-down", "tfsched-chart-e2e-down", "tfsched-e2e-webhook-down"
    values = ["--set", f"webhook.namespaceSelector.matchLabels.{label}=on", "--set", "replicas=1"]
    try:
        _helm(cluster, "install", release, str(chart.CHART), "-n", release_ns, "--create-namespace", *values)
        hook = cluster.get_json("mutatingwebhookconfiguration", f"{release}-tfsched")["webhooks"][0]
        assert hook["failurePolicy"] == "Fail" and hook["matchConditions"]
        cluster.kubectl("label", "namespace", namespace, f"{label}=on")
        plain = make_pod("plain", namespace)
        plain["metadata"]["annotations"] = {"example.com/note": "not a GPU pod"}
        cluster.apply(plain)
        gpu = make_pod("gpu", namespace, tflops="20", vram="2Gi")
        refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(gpu), check=False)
        assert refused.returncode != 0 and "failed calling webhook" in refused.stderr, refused.stderr
        assert [p["metadata"]["name"] for p in cluster.pods(namespace)] == ["plain"]
    finally:
        chart.helm("uninstall", release, "-n", release_ns, "--kubeconfig", str(cluster.dev.kubeconfig), check=False)
        cluster.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)


# What tfsched's code calls (kubeapi, extender, autoscale): resource -> verbs.
MUST_ALLOW = {
    "nodes": {"list", "watch"},
    "pods": {"get", "list", "watch", "patch"},
    "pods/binding": {"create"},
    "pods/eviction": {"create"},
    "events": {"create"},
    "gpus.tensor-fusion.ai": {"list", "watch"},
    "gpus.tensor-fusion.ai/status": {"patch"},
    "tensorfusionworkloads.tensor-fusion.ai": {"list", "watch", "create"},
    "tensorfusionworkloads.tensor-fusion.ai/status": {"patch"},
    "workloadprofiles.tensor-fusion.ai": {"list", "watch"},
    "replicasets.apps": {"get"},
    "deployments.apps/scale": {"get", "patch"},
    "statefulsets.apps/scale": {"get", "patch"},
}
MUST_DENY = [
    ("delete", "pods"),
    ("update", "pods"),
    ("create", "pods"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("patch", "events"),
    ("update", "events"),
    ("list", "deployments.apps"),
    ("watch", "replicasets.apps"),
    ("update", "deployments.apps/scale"),
    ("patch", "nodes"),
    ("update", "gpus.tensor-fusion.ai"),
    ("delete", "tensorfusionworkloads.tensor-fusion.ai"),
    ("list", "leases.coordination.k8s.io"),
    ("create", "leases.coordination.k8s.io"),
    ("update", "leases.coordination.k8s.io/kube-scheduler", "kube-system"),
    ("update", "leases.coordination.k8s.io/kube-controller-manager", "kube-system"),
    ("get", "leases.coordination.k8s.io/kube-scheduler", "kube-system"),
    ("update", "leases.coordination.k8s.io/tfsched-scheduler"),
]


def _can_i_list(cluster: Cluster, user: str, namespace: str) -> dict[str, set[str]]:
    """``kubectl auth can-i --list`` read from its table: resource[/name] -> verbs."""
    lines = cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout.splitlines()
    header = lines[0]
    urls, names, verbs = (header.index(h) for h in ("Non-Resource URLs", "Resource Names", "Verbs"))
    rules: dict[str, set[str]] = {}
    for line in lines[1:]:
        resource = line[:urls].strip()
        if not resource:  # a non-resource URL (/healthz, /version...): every account has those
            continue
        granted = set(line[verbs:].strip(" []").split())
        for name in line[names:verbs].strip(" []").split() or ["*"]:
            rules.setdefault(resource if name == "*" else f"{resource}/{name}", set()).update(granted)
    return rules


@pytest.fixture(scope="module")
def pair(cluster: Cluster, tmp_path_factory) -> Iterator[deployed.DeployedPair]:
    dev = cluster.dev
    port, health_port, webhook_port = (processes.free_port() for _ in range(3))
    values = deployed.pair_values(
        port=port,
        health_port=health_port,
        webhook_port=webhook_port,
        prometheus_url=dev.prometheus_url,
        extra={
            "webhook": {"namespaceSelector": {"matchLabels": {LABEL: "on"}}},
            "tfsched": {"config": {"autoscaling": {"enabled": False}}},
            "scheduler": {"leaderElection": {"leaseDuration": "6s", "renewDeadline": "4s", "retryPeriod": "1s"}},
        },
    )
    # The chart's pair is to be the one writer: the session's own tfsched stands down meanwhile.
    with cluster.without("tfsched"):
        started = deployed.start_pair(
            dev, tmp_path_factory.mktemp("chart-pair"), values, numba_cache=numba_cache_dir(), say=lambda *_: None
        )
        try:
            yield started
        finally:
            deployed.stop_pair(dev, started)


def test_rbac_allows_what_the_code_calls_and_nothing_more(cluster: Cluster, pair: deployed.DeployedPair):
    user = f"system:serviceaccount:{chart.NAMESPACE}:{chart.RELEASE}"
    rules = _can_i_list(cluster, user, chart.NAMESPACE)
    missing = {r: v - rules.get(r, set()) for r, v in MUST_ALLOW.items() if v - rules.get(r, set())}
    assert missing == {}
    # The scheduler's Lease, read-only, in the release namespace: all it has on leases.
    assert rules.get("leases.coordination.k8s.io/tfsched-scheduler") == {"get"}
    for verb, resource, *where in MUST_DENY:
        ns = where[0] if where else chart.NAMESPACE
        done = cluster.kubectl("auth", "can-i", verb, resource, f"--as={user}", "-n", ns, check=False)
        assert done.stdout.strip() == "no", f"{user} may {verb} {resource} in {ns}"
    # Nothing beyond the list above (and what every authenticated user may do).
    granted = {r for r in rules if not r.startswith(("selfsubject", "leases"))}
    assert granted <= set(MUST_ALLOW), granted - set(MUST_ALLOW)
    # The probe can say yes: kube-scheduler's own account (which preempts) may delete pods,
    # which is why it is a separate identity from tfsched's.
    scheduler = f"system:serviceaccount:{chart.NAMESPACE}:{chart.RELEASE}-scheduler"
    done = cluster.kubectl("auth", "can-i", "delete", "pods", f"--as={scheduler}", "-n", "default", check=False)
    assert done.stdout.strip() == "yes"


def test_webhook_second_scheduler_and_mtls(cluster: Cluster, namespace: str, pair: deployed.DeployedPair):
    cluster.wait(lambda: cluster.dev.extender_leads(pair.health_url), timeout=60, what="the chart's tfsched to lead")
    cluster.kubectl("label", "namespace", namespace, f"{LABEL}=on")
    gpu = make_pod("gpu", namespace, tflops="20", vram="2Gi")
    del gpu["spec"]["containers"][0]["resources"]  # the webhook adds the managed resource
    plain = make_pod("plain", namespace)
    plain["metadata"]["annotations"] = {}
    plain["spec"]["containers"][0]["resources"] = {}
    cluster.apply(gpu, plain)
    pods = {p["metadata"]["name"]: p for p in cluster.pods(namespace)}
    assert pods["gpu"]["spec"]["schedulerName"] == "tfsched-scheduler"
    assert pods["gpu"]["spec"]["containers"][0]["resources"]["limits"] == {
        ann.MANAGED_RESOURCE: ann.MANAGED_RESOURCE_QUANTITY
    }
    assert pods["plain"]["spec"]["schedulerName"] == "default-scheduler"
    assert not pods["plain"]["spec"]["containers"][0].get("resources")
    [bound] = [p for p in wait_bound(cluster, namespace, 1) if p["metadata"]["name"] == "gpu"]
    assert gpu_ids(bound)
    assert_no_overcommit(cluster)
    # Only kube-scheduler's client certificate opens /bind.
    body = b'{"PodName": "plain", "PodNamespace": "%s", "Node": "small-0"}' % namespace.encode()
    trusting = ssl.create_default_context(cafile=str(pair.ca_file))
    for url, context in ((pair.verbs_url.replace("https", "http"), None), (pair.verbs_url, trusting)):
        request = urllib.request.Request(f"{url}/bind", data=body)
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(request, timeout=10, context=context)
    # With it, the server's certificate (issued by the chart for 127.0.0.1) verifies.
    trusting.load_cert_chain(pair.client_cert, pair.client_key)
    request = urllib.request.Request(f"{pair.verbs_url}/filter", data=b"{}")
    try:
        urllib.request.urlopen(request, timeout=10, context=trusting)
    except urllib.error.HTTPError as exc:
        assert exc.code == 400  # reached the verbs: an empty body is a 400 with a JSON message


def test_devcluster_up_runs_the_charts_default_topology(tmp_path: Path):
    """`tfsched devcluster up --topology secondScheduler`: the chart's pair in place of the
    devcluster's tfsched; a GPU pod created without schedulerName is bound through it."""
    import subprocess
    import sys
    import time

    from tfsched.devcluster.binaries import ensure_binaries

    root, spec = tmp_path / "dc", tmp_path / "spec.yaml"
    spec.write_text("nodes:\n- namePrefix: gpu\n  count: 2\n  gpus: {count: 2, tflops: 100, vram: 16Gi}\n")
    tfsched = [sys.executable, "-m", "tfsched", "devcluster"]
    up = subprocess.run(
        [*tfsched, "up", "--dir", str(root), "--spec", str(spec), "--topology", "secondScheduler"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        kubectl = [str(ensure_binaries() / "kubectl"), "--kubeconfig", str(root / "kubeconfig")]
        pod = make_pod("gpu", "default", tflops="30", vram="4Gi")
        del pod["spec"]["containers"][0]["resources"]
        apply = [*kubectl, "apply", "-f", "-"]
        subprocess.run(apply, input=yaml.safe_dump(pod), check=True, capture_output=True, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = yaml.safe_load(
                subprocess.run([*kubectl, "get", "pod", "gpu", "-o", "yaml"], capture_output=True).stdout
            )
            if got["spec"].get("nodeName") and gpu_ids(got):
                break
            time.sleep(0.5)
        assert got["spec"]["schedulerName"] == "tfsched-scheduler"
        assert got["spec"].get("nodeName") and gpu_ids(got), got.get("status")
        status = subprocess.run([*tfsched, "status", "--dir", str(root)], capture_output=True, text=True).stdout
        assert "tfsched-tfsched " in status and "tfsched-kube-scheduler " in status
        assert "exited" not in status, status
    finally:
        subprocess.run([*tfsched, "down", "--dir", str(root)], capture_output=True, timeout=120)
