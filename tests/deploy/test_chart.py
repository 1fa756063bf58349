"""The Helm chart, with the real helm (lint, template) and without a cluster.

What a cluster would check is in tests/e2e/test_chart.py (server-side dry run,
install/upgrade, RBAC, the secondScheduler pod on the real control plane).
Here: lint; every value set renders; the schema refuses what it should; the
rendered configurations are ones kube-scheduler and ``tfsched serve`` accept;
config/scheduler-config.yaml is the current extendScheduler rendering.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tfsched.cli import main as cli_main
from tfsched.clustermodel import annotations as ann
from tfsched.config import ServeConfig
from tfsched.devcluster import chart
from tfsched.devcluster.cluster import token_kubeconfig

from ..test_manifests import SCHEDULER_CONFIG, scheduler_config_errors

Obj = dict[str, Any]


def _render(values: Obj | None = None) -> list[Obj]:
    return chart.render(values or {})


def _pod(docs: list[Obj]) -> Obj:
    (workload,) = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    return workload["spec"]["template"]["spec"]


def _command(docs: list[Obj], name: str) -> list[str]:
    (c,) = [c for c in _pod(docs)["containers"] if c["name"] == name]
    return c["command"]


def test_helm_lint_passes_strict() -> None:
    out = chart.helm("lint", "--strict", str(chart.CHART), "--kube-version", chart.kube_version())
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_the_default_is_a_second_scheduler_with_mtls_and_the_webhook() -> None:
    docs = _render()
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("Deployment", "MutatingWebhookConfiguration", "PodDisruptionBudget", "NetworkPolicy", "Service"):
        assert kind in kinds
    assert "ServiceMonitor" not in kinds and "DaemonSet" not in kinds
    deployment = chart.find(docs, "Deployment", "tfsched-scheduler")
    assert deployment["spec"]["replicas"] == 2
    pod = _pod(docs)
    assert [c["name"] for c in pod["containers"]] == ["kube-scheduler", "tfsched"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    scheduler = chart.scheduler_config(docs)
    assert scheduler_config_errors(scheduler, in_cluster=True) == []
    assert [p["schedulerName"] for p in scheduler["profiles"]] == ["tfsched-scheduler"]
    lease = scheduler["leaderElection"]
    assert (lease["leaderElect"], lease["resourceNamespace"], lease["resourceName"]) == (
        True,
        chart.NAMESPACE,
        "tfsched-scheduler",
    )
    (ext,) = scheduler["extenders"]
    assert ext["urlPrefix"] == "https://127.0.0.1:8888" and ext["enableHTTPS"] is True
    assert ext["managedResources"] == [{"name": ann.MANAGED_RESOURCE, "ignoredByScheduler": True}]
    tls = ext["tlsConfig"]
    # The files kube-scheduler reads are the client Secret's, mounted where the config says.
    (c,) = [c for c in pod["containers"] if c["name"] == "kube-scheduler"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for key in ("certFile", "keyFile", "caFile"):
        folder, file = tls[key].rsplit("/", 1)
        assert volumes[mounts[folder]]["secret"]["secretName"] == "tfsched-scheduler-client-tls"
        assert file in {"tls.crt", "tls.key", "ca.crt"}
    # kube-scheduler authenticates as its own account, from its token Secret.
    assert volumes[mounts["/var/run/secrets/kubernetes.io/serviceaccount"]]["secret"]["secretName"] == (
        "tfsched-scheduler-token"
    )
    assert pod["serviceAccountName"] == "tfsched"


def test_the_tfsched_command_line_and_config_are_ones_serve_accepts(tmp_path: Path) -> None:
    for values in ({}, {"topology": "extendScheduler"}, {"webhook": {"enabled": False}}):
        docs = _render(values)
        command = _command(docs, "tfsched")
        assert command[0] == "tfsched"
        # click parses it as `tfsched ... serve ...` would (files are checked at run time).
        params = _serve_params(command[1:], tmp_path)
        assert params["host"] == "127.0.0.1"  # the verbs on loopback only
        assert params["health_host"] == "0.0.0.0"
        config = ServeConfig.model_validate(chart.tfsched_config(docs))
        follow = config.leader_election.follow_scheduler
        assert follow is not None
        second = values.get("topology") != "extendScheduler"
        assert (follow.namespace, follow.lease_name) == (
            (chart.NAMESPACE, "tfsched-scheduler") if second else ("kube-system", "kube-scheduler")
        )
        assert config.scheduling.scheduler_names == (["tfsched-scheduler"] if second else ["default-scheduler"])
        webhook = "--webhook-port=9443" in command
        assert webhook == (second and values.get("webhook", {}).get("enabled", True))
        assert (params["client_ca_file"] is not None) == second


def test_user_config_merges_over_the_charts() -> None:
    docs = _render(
        {"tfsched": {"config": {"scheduling": {"placementMode": "CompactFirst"}}, "prometheusURL": "http://p:9090"}}
    )
    config = chart.tfsched_config(docs)
    assert config["scheduling"] == {"placementMode": "CompactFirst", "schedulerNames": ["tfsched-scheduler"]}
    assert config["autoscaling"]["metrics"]["prometheusURL"] == "http://p:9090"
    ServeConfig.model_validate(config)


def test_the_status_pace_and_per_gpu_metrics_reach_tfsched() -> None:
    docs = _render({"tfsched": {"config": {"gpuStatus": {"qps": 5, "burst": 10}, "metrics": {"perGPU": False}}}})
    config = ServeConfig.model_validate(chart.tfsched_config(docs))
    assert (config.gpu_status.qps, config.gpu_status.burst) == (5, 10)
    assert config.metrics.per_gpu is False


def test_extend_scheduler_runs_on_the_control_plane_hosts_network() -> None:
    docs = _render({"topology": "extendScheduler"})
    kinds = {d["kind"] for d in docs}
    assert "DaemonSet" in kinds and "Deployment" not in kinds
    assert "MutatingWebhookConfiguration" not in kinds and "Secret" not in kinds
    pod = _pod(docs)
    assert pod["hostNetwork"] is True
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert [c["name"] for c in pod["containers"]] == ["tfsched"]
    command = _command(docs, "tfsched")
    scheduler = chart.scheduler_config(docs)
    assert scheduler_config_errors(scheduler) == []
    (ext,) = scheduler["extenders"]
    assert ext["urlPrefix"] == f"http://127.0.0.1:{command[command.index('--port=8888')].split('=')[1]}"


def test_config_scheduler_config_is_the_current_extend_rendering() -> None:
    assert SCHEDULER_CONFIG.read_text() == chart.extend_scheduler_config_text(), (
        "config/scheduler-config.yaml is stale: run .venv/bin/python -m tfsched.devcluster.chart "
        "> config/scheduler-config.yaml"
    )


def test_generated_certificates_name_loopback_and_the_service(tmp_path: Path) -> None:
    docs = _render()
    serving = chart.find(docs, "Secret", "tfsched-tls")["data"]
    client = chart.find(docs, "Secret", "tfsched-scheduler-client-tls")["data"]
    assert serving["ca.crt"] == client["ca.crt"]
    hook = chart.find(docs, "MutatingWebhookConfiguration", "tfsched")["webhooks"][0]
    assert hook["clientConfig"]["caBundle"] == serving["ca.crt"]
    files = {}
    for name, data in (("serving", serving), ("client", client)):
        for key in ("tls.crt", "tls.key", "ca.crt"):
            path = tmp_path / f"{name}-{key}"
            path.write_bytes(base64.b64decode(data[key]))
            files[name, key] = path
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(files["serving", "tls.crt"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in (
        "IP Address:127.0.0.1",
        "DNS:tfsched.tfsched-system.svc",
        "DNS:tfsched.tfsched-system.svc.cluster.local",
    ):
        assert name in text
    # The pair loads as a server context that requires the client's certificate.
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files["serving", "ca.crt"]))
    server.load_cert_chain(files["serving", "tls.crt"], files["serving", "tls.key"])
    client_context = ssl.create_default_context(cafile=str(files["client", "ca.crt"]))
    client_context.load_cert_chain(files["client", "tls.crt"], files["client", "tls.key"])


def test_cert_manager_mode_issues_the_same_secrets() -> None:
    docs = _render({"tls": {"mode": "certManager"}})
    certificates = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Certificate"}
    assert certificates["tfsched-tls"]["spec"]["secretName"] == "tfsched-tls"
    assert certificates["tfsched-tls"]["spec"]["ipAddresses"] == ["127.0.0.1"]
    assert certificates["tfsched-scheduler-client-tls"]["spec"]["usages"][0] == "client auth"
    assert not [d for d in docs if d["kind"] == "Secret" and d["type"] == "kubernetes.io/tls"]
    hook = chart.find(docs, "MutatingWebhookConfiguration", "tfsched")
    assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{chart.NAMESPACE}/tfsched-tls"
    assert "caBundle" not in hook["webhooks"][0]["clientConfig"]
    issued = _render(
        {"tls": {"mode": "certManager", "certManager": {"issuerRef": {"name": "corp", "kind": "ClusterIssuer"}}}}
    )
    assert not [d for d in issued if d["kind"] == "Issuer"]


def test_webhook_never_selects_the_control_plane_or_its_own_namespace() -> None:
    docs = _render({"webhook": {"namespaceSelector": {"matchLabels": {"gpu": "on"}}, "failurePolicy": "Ignore"}})
    (hook,) = chart.find(docs, "MutatingWebhookConfiguration", "tfsched")["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["namespaceSelector"]["matchLabels"] == {"gpu": "on"}
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [chart.NAMESPACE]} in hook[
        "namespaceSelector"
    ]["matchExpressions"]
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["sideEffects"] == "None"


def test_webhook_is_sent_gpu_pods_only_by_the_annotations_tfsched_reads() -> None:
    (hook,) = chart.find(_render(), "MutatingWebhookConfiguration", "tfsched")["webhooks"]
    (condition,) = hook["matchConditions"]
    expression = condition["expression"]
    assert expression.startswith("has(object.metadata.annotations) && [")
    assert expression.endswith("].exists(k, k in object.metadata.annotations)")
    listed = re.findall(r"'([^']+)'", expression)
    assert sorted(listed) == sorted(ann.GPU_POD_ANNOTATIONS)  # what is_gpu_pod looks for, no more


def test_scheduler_image_follows_the_cluster_version() -> None:
    assert f"registry.k8s.io/kube-scheduler:{chart.kube_version()}" in yaml.safe_dump(_render())
    pinned = _render({"scheduler": {"image": {"tag": "v1.35.1"}}})
    (c,) = [c for c in _pod(pinned)["containers"] if c["name"] == "kube-scheduler"]
    assert c["image"] == "registry.k8s.io/kube-scheduler:v1.35.1"


def test_optional_objects_follow_their_switches() -> None:
    docs = _render({"serviceMonitor": {"enabled": True}, "podDisruptionBudget": {"enabled": False}})
    kinds = {d["kind"] for d in docs}
    assert "ServiceMonitor" in kinds and "PodDisruptionBudget" not in kinds
    assert "NetworkPolicy" not in {d["kind"] for d in _render({"networkPolicy": {"enabled": False}})}


def test_alerts_and_dashboard_ship_as_the_files_say() -> None:
    assert not {d["kind"] for d in _render()} & {"PrometheusRule"}
    docs = _render(
        {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}, "grafanaDashboard": {"enabled": True}}
    )
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    files = chart.CHART / "files"
    assert rule["spec"] == yaml.safe_load((files / "alerts.yaml").read_text())
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert "{{ $labels.kind }}" in str(rule["spec"])  # Prometheus' templates, left to Prometheus
    (dashboard,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["tfsched.json"]) == json.loads((files / "dashboard.json").read_text())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"topology": "kind"}, "topology"),
        ({"prometheusRule": {"enabled": True, "rules": []}}, "rules"),
        ({"grafanaDashboard": {"enable": True}}, "enable"),
        ({"replicas": 0}, "replicas"),
        ({"unknown": 1}, "unknown"),
        ({"tfsched": {"config": {"leaderElection": {"enabled": False}}}}, "leaderElection"),
        ({"tfsched": {"port": 70000}}, "port"),
        ({"webhook": {"failurePolicy": "Maybe"}}, "failurePolicy"),
        ({"scheduler": {"name": "Not_A_Name"}}, "name"),
        ({"scheduler": {"leaderElection": {"leaseDuration": "15 seconds"}}}, "leaseDuration"),
        ({"tls": {"mode": "vault"}}, "mode"),
        ({"tfsched": {"config": {"webhook": {"schedulerName": "other"}}}}, "webhook"),
        ({"tfsched": {"config": {"gpuStatus": {"qps": 0}}}}, "qps"),
        ({"tfsched": {"config": {"gpuStatus": {"burst": 0.5}}}}, "burst"),
        ({"tfsched": {"config": {"metrics": {"perGpu": False}}}}, "perGpu"),
        ({"scheduler": {"percentageOfNodesToScore": 0}}, "percentageOfNodesToScore"),
        ({"scheduler": {"percentageOfNodesToScore": 101}}, "percentageOfNodesToScore"),
        ({"scheduler": {"percentageOfNodesToScore": 42.5}}, "percentageOfNodesToScore"),
    ],
)
def test_the_schema_refuses_bad_values(values: Obj, message: str) -> None:
    with pytest.raises(chart.ChartError) as caught:
        _render(values)
    assert "values don't meet the specifications of the schema" in str(caught.value)
    assert message in str(caught.value)


def _serve_params(args: list[str], files: Path) -> dict[str, Any]:
    """The parameters click gives ``serve`` for this command line (the pod's files stand-ins here)."""
    local = []
    for arg in args:
        flag, _, value = arg.partition("=")
        if value.startswith("/etc/"):
            stand_in = files / value.strip("/").replace("/", "_")
            stand_in.touch()
            arg = f"{flag}={stand_in}"
        local.append(arg)
    at = local.index("serve")
    with cli_main.make_context("tfsched", [*local[:at], "serve"]) as group:
        serve = cli_main.get_command(group, "serve")
        assert serve is not None
        return serve.make_context("serve", local[at + 1 :], parent=group).params


def test_click_is_what_parses_the_command(tmp_path: Path) -> None:
    # The command-line check above means something only if a bad flag fails it.
    with pytest.raises(click.NoSuchOption):
        _serve_params(["--log-level=INFO", "serve", "--no-such-flag"], tmp_path)


def test_score_in_filter_drops_the_prioritize_verb_and_tells_tfsched() -> None:
    for topology in ("secondScheduler", "extendScheduler"):
        # Set in tfsched's own config too, even against a value saying otherwise: the two must agree.
        values = {"topology": topology, "scheduler": {"scoreInFilter": True}}
        values["tfsched"] = {"config": {"scheduling": {"scoreInFilter": False}}}
        docs = _render(values)
        config = chart.scheduler_config(docs)
        assert scheduler_config_errors(config, in_cluster=topology == "secondScheduler") == []
        (gpu,) = config["extenders"]
        assert "prioritizeVerb" not in gpu and gpu["filterVerb"] == "filter" and gpu["bindVerb"] == "bind"
        assert chart.tfsched_config(docs)["scheduling"]["scoreInFilter"] is True
    default = _render({"topology": "extendScheduler"})
    assert chart.scheduler_config(default)["extenders"][0]["prioritizeVerb"] == "prioritize"
    assert "scoreInFilter" not in chart.tfsched_config(default)["scheduling"]


def test_score_all_pods_adds_an_ignorable_prioritize_only_extender() -> None:
    for topology in ("secondScheduler", "extendScheduler"):
        docs = _render({"topology": topology, "scheduler": {"scoreAllPods": True}})
        config = chart.scheduler_config(docs)
        assert scheduler_config_errors(config, in_cluster=topology == "secondScheduler") == []
        gpu, every = config["extenders"]
        # GPU pods: filter and bind by the first, scores by the second (not twice).
        assert "prioritizeVerb" not in gpu and gpu["bindVerb"] == "bind"
        assert every["prioritizeVerb"] == "prioritize" and "managedResources" not in every
        assert every["ignorable"] is True and "filterVerb" not in every and "bindVerb" not in every
        assert every["urlPrefix"] == gpu["urlPrefix"] and every.get("tlsConfig") == gpu.get("tlsConfig")
        # kube-scheduler's own CPU/memory spreading is off where tfsched scores every pod; filters stay.
        (profile,) = config["profiles"]
        disabled = {p["name"] for p in profile["plugins"]["score"]["disabled"]}
        assert disabled == {"NodeResourcesFit", "NodeResourcesBalancedAllocation"}
        assert set(profile["plugins"]) == {"score"}
    for topology in ("secondScheduler", "extendScheduler"):
        (profile,) = chart.scheduler_config(_render({"topology": topology}))["profiles"]
        assert "plugins" not in profile


def test_percentage_of_nodes_to_score_reaches_the_tfsched_profile_only_when_set() -> None:
    for topology in ("secondScheduler", "extendScheduler"):
        config = chart.scheduler_config(_render({"topology": topology, "scheduler": {"percentageOfNodesToScore": 10}}))
        assert scheduler_config_errors(config, in_cluster=topology == "secondScheduler") == []
        (profile,) = config["profiles"]
        assert profile["percentageOfNodesToScore"] == 10
        assert "percentageOfNodesToScore" not in config  # the profile's, not every profile's
        (default,) = chart.scheduler_config(_render({"topology": topology}))["profiles"]
        assert "percentageOfNodesToScore" not in default  # kube-scheduler's adaptive figure


def _run_kube_scheduler(values: Obj, tmp_path: Path, spoil: bool = False) -> tuple[bool, str, int]:
    """kube-scheduler on a rendering (certificates written where the config names them),
    against an API server that is not there, until it has built the extenders or exited.
    Returns (still running, its log, extenders in the configuration)."""
    import time

    from tfsched.devcluster.binaries import ensure_binaries

    docs = _render(values)
    config = chart.scheduler_config(docs)
    client = chart.find(docs, "Secret", "tfsched-scheduler-client-tls")["data"] if "topology" not in values else {}
    for key, b64 in client.items():
        (tmp_path / key).write_bytes(base64.b64decode(b64))
    for ext in config["extenders"]:
        for field, path in (ext.get("tlsConfig") or {}).items():
            ext["tlsConfig"][field] = str(tmp_path / Path(path).name)
    if spoil:
        config["extenders"][0]["urlprefix"] = config["extenders"][0].pop("urlPrefix")
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1", "t", "u")  # nothing listens
    config["clientConnection"] = {"kubeconfig": str(kubeconfig)}
    path = tmp_path / "scheduler-config.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [str(ensure_binaries() / "kube-scheduler"), f"--config={path}", "--secure-port=0", "--v=2"]
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen([*argv, "--authentication-skip-lookup"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if log.read_text().count('"Creating extender"') == len(config["extenders"]):
                break
            time.sleep(0.2)
        return proc.poll() is None, log.read_text(), len(config["extenders"])
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"topology": "extendScheduler"},
        {"scheduler": {"scoreAllPods": True}},
        {"scheduler": {"percentageOfNodesToScore": 100}},
    ],
    ids=["secondScheduler", "extendScheduler", "scoreAllPods", "percentageOfNodesToScore"],
)
def test_the_real_kube_scheduler_accepts_each_rendered_configuration(values: Obj, tmp_path: Path) -> None:
    """kube-scheduler decodes its configuration strictly and builds the extenders at start."""
    running, log, extenders = _run_kube_scheduler(values, tmp_path)
    assert running, log[-2000:]
    assert log.count('"Creating extender"') == extenders, log[-2000:]


def test_the_kube_scheduler_check_fails_on_a_bad_configuration(tmp_path: Path) -> None:
    running, log, _ = _run_kube_scheduler({"topology": "extendScheduler"}, tmp_path, spoil=True)
    assert not running and "urlprefix" in log
