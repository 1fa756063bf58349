"""The chart's secondScheduler pod, run on the local control plane.

There is no kubelet here, so this plays its part for the one pod that matters:
it renders the chart (``helm template``), creates in the real API server what
the API server keeps (namespace, ServiceAccounts and the scheduler's token
Secret, RBAC, ConfigMaps, the generated TLS Secrets, the webhook), then starts
the Deployment's two containers as processes with their own command lines,
each volume written to a folder (ConfigMap and Secret data as files) and the
mount paths in the arguments pointed at those folders.  Each container talks
to the API server as its ServiceAccount does in a cluster: tfsched with a token
of the pod's account, kube-scheduler with its own account's token Secret, so
the chart's RBAC is what they get.  Only two things differ from a cluster, both
because there is no pod network: the webhook is registered by URL
(``https://127.0.0.1:<port>``, which the generated certificate names) instead
of through the Service, and the numba cache is the devcluster's.
"""

from __future__ import annotations

import base64
import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tfsched.devcluster import chart, processes
from tfsched.devcluster.cluster import token_kubeconfig
from tfsched.devcluster.fakes import merge_patch
from tfsched.devcluster.processes import ProcessRecord

# What a cluster stores (and so this creates); the Deployment's pod is run here instead.
STORED_KINDS = (
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "MutatingWebhookConfiguration",
)
TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

Obj = dict[str, Any]


@dataclass
class DeployedPair:
    docs: list[Obj]
    work: Path
    verbs_url: str  # https://127.0.0.1:<port>, client certificate required
    health_url: str
    webhook_port: int
    ca_file: Path  # the chart's CA: the webhook's caBundle, and the verbs' server and client CA
    client_cert: Path  # kube-scheduler's client certificate and key
    client_key: Path
    records: list[ProcessRecord] = field(default_factory=list)


def pair_values(
    *, port: int, health_port: int, webhook_port: int, prometheus_url: str, extra: Obj | None = None
) -> Obj:
    """The chart's values for a pair on this machine's free ports."""
    values: Obj = {
        "tfsched": {
            "port": port,
            "healthPort": health_port,
            "webhookPort": webhook_port,
            "prometheusURL": prometheus_url,
        }
    }
    return merge_patch(values, extra or {})


def _secret_data(dev: Any, namespace: str, name: str, timeout: float = 60) -> dict[str, str]:
    """A Secret's data as the API server has it: a service-account token Secret is
    filled by the token controller after it is created, so wait for its token."""
    deadline = time.monotonic() + timeout
    while True:
        got = dev.kubectl("-n", namespace, "get", "secret", name, "-o", "json", check=False)
        if got.returncode == 0:
            secret = json.loads(got.stdout)
            data = secret.get("data") or {}
            if secret.get("type") != "kubernetes.io/service-account-token" or data.get("token"):
                return data
        if time.monotonic() > deadline:
            raise chart.ChartError(f"Secret {namespace}/{name} has no data after {timeout:.0f}s")
        time.sleep(0.5)


def _write_volume(dev: Any, volume: Obj, docs: list[Obj], folder: Path) -> None:
    """A volume's files, as the kubelet would project them (emptyDir: an empty folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    if "configMap" in volume:
        for key, text in chart.find(docs, "ConfigMap", volume["configMap"]["name"])["data"].items():
            (folder / key).write_text(text)
    elif "secret" in volume:
        for key, b64 in _secret_data(dev, chart.NAMESPACE, volume["secret"]["secretName"]).items():
            (folder / key).write_bytes(base64.b64decode(b64))
            (folder / key).chmod(0o600)


def _localize(value: str, mounts: dict[str, Path]) -> str:
    # Longest mount path first, so /etc/a/b is not rewritten as /etc/a + /b.
    for mount in sorted(mounts, key=len, reverse=True):
        if mount in value:
            return value.replace(mount, str(mounts[mount]))
    return value


def _localize_all(value: Any, mounts: dict[str, Path]) -> Any:
    """Every string in a parsed file, with mount paths pointed at their folders."""
    if isinstance(value, dict):
        return {k: _localize_all(v, mounts) for k, v in value.items()}
    if isinstance(value, list):
        return [_localize_all(v, mounts) for v in value]
    return _localize(value, mounts) if isinstance(value, str) else value


def start_pair(dev: Any, work: Path, values: Obj, *, numba_cache: Path, say=print) -> DeployedPair:
    """Render the chart with ``values``, store its objects and run its pod's containers."""
    namespace, release = chart.NAMESPACE, chart.RELEASE
    docs = chart.render(values)
    work.mkdir(parents=True, exist_ok=True)
    dev.kubectl("create", "namespace", namespace, check=False)
    stored = [copy.deepcopy(d) for d in docs if d["kind"] in STORED_KINDS]
    for doc in stored:
        if doc["kind"] == "MutatingWebhookConfiguration":
            port = values["tfsched"]["webhookPort"]
            for hook in doc["webhooks"]:
                service = hook["clientConfig"].pop("service")
                hook["clientConfig"]["url"] = f"https://127.0.0.1:{port}{service['path']}"
    manifest = work / "stored.yaml"
    manifest.write_text(yaml.safe_dump_all(stored))
    dev.kubectl("apply", "--server-side", "--field-manager=devcluster", "-f", str(manifest))

    deployment = chart.find(docs, "Deployment", f"{release}-scheduler")
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    pod_account = pod["serviceAccountName"]
    tfsched_token = dev.kubectl("-n", namespace, "create", "token", pod_account, "--duration=24h").stdout.strip()

    pair = DeployedPair(
        docs=docs,
        work=work,
        verbs_url=f"https://127.0.0.1:{values['tfsched']['port']}",
        health_url=f"http://127.0.0.1:{values['tfsched']['healthPort']}",
        webhook_port=values["tfsched"]["webhookPort"],
        ca_file=work / "volumes" / "serving-tls" / "ca.crt",
        client_cert=work / "volumes" / "client-tls" / "tls.crt",
        client_key=work / "volumes" / "client-tls" / "tls.key",
    )
    # tfsched first: kube-scheduler's filter calls fail (ignorable: false) until it is ready.
    by_name = {c["name"]: c for c in pod["containers"]}
    try:
        for name in ("tfsched", "kube-scheduler"):
            c = by_name[name]
            mounts: dict[str, Path] = {}
            for mount in c.get("volumeMounts", []):
                folder = work / "volumes" / mount["name"]
                _write_volume(dev, volumes[mount["name"]], docs, folder)
                mounts[mount["mountPath"]] = folder
            argv = [_localize(arg, mounts) for arg in c["command"]]
            env = {e["name"]: _localize(e["value"], mounts) for e in c.get("env", [])}
            if name == "tfsched":
                kubeconfig = token_kubeconfig(work / "tfsched.kubeconfig", dev.server, tfsched_token, pod_account)
                argv = [sys.executable, "-m", "tfsched", *argv[1:], f"--kubeconfig={kubeconfig}"]
                env["NUMBA_CACHE_DIR"] = str(numba_cache)  # the initContainer's copy of the baked cache
                say(f"starting the chart's tfsched on {pair.verbs_url}")
                record = dev.start_process(f"{release}-tfsched", argv, env)
                pair.records.append(record)
                processes.wait_until(
                    lambda: dev._ok(f"{pair.health_url}/readyz"), timeout=120, what="tfsched /readyz", record=record
                )
            else:
                token_dir = mounts[TOKEN_MOUNT]
                token = (token_dir / "token").read_text()
                kubeconfig = token_kubeconfig(work / "scheduler.kubeconfig", dev.server, token, "kube-scheduler")
                config_arg = next(a for a in argv if a.startswith("--config="))
                config_path = Path(config_arg.split("=", 1)[1])
                config = _localize_all(yaml.safe_load(config_path.read_text()), mounts)
                # In a pod it uses the in-cluster configuration, i.e. the token mounted above.
                config["clientConnection"] = {"kubeconfig": str(kubeconfig)}
                config_path.write_text(yaml.safe_dump(config, sort_keys=False))
                argv = [
                    dev.bin("kube-scheduler"),
                    *[a for a in argv[1:] if not a.startswith("--secure-port=")],
                    f"--secure-port={processes.free_port()}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                ]
                say("starting the chart's kube-scheduler")
                pair.records.append(dev.start_process(f"{release}-kube-scheduler", argv, env))
    except BaseException:
        stop_pair(dev, pair)
        raise
    return pair


def stop_pair(dev: Any, pair: DeployedPair) -> None:
    for record in reversed(pair.records):
        processes.stop(record)
    stored = pair.work / "stored.yaml"
    if stored.exists():
        dev.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(stored), check=False)


def run_second_scheduler(dev: Any, *, numba_cache: Path, say=print) -> DeployedPair:
    """Make a running devcluster the chart's default topology: the chart's pair
    (second kube-scheduler, tfsched over mutual TLS, the webhook sending GPU pods
    to it) in place of the devcluster's own tfsched. The devcluster's kube-scheduler
    stays, as a managed cluster's default scheduler, for every other pod."""
    own = yaml.safe_load(dev.tfsched_config.read_text())
    own.pop("leaderElection", None)  # the chart's: follow the pair's kube-scheduler
    names = [n for n in own.get("scheduling", {}).get("schedulerNames", []) if n != "default-scheduler"]
    own.setdefault("scheduling", {})["schedulerNames"] = ["tfsched-scheduler", *names]
    values = pair_values(
        port=processes.free_port(),
        health_port=processes.free_port(),
        webhook_port=processes.free_port(),
        prometheus_url=dev.prometheus_url,
        extra={"tfsched": {"config": own}},
    )
    dev.stop_component("tfsched")
    dev.records.pop("tfsched", None)  # replaced, not failed: `status` lists the pair instead
    pair = start_pair(dev, dev.root / "chart-pair", values, numba_cache=numba_cache, say=say)
    dev.save()
    return pair
