"""``tfsched devcluster``: bring a real control plane up on 127.0.0.1 and down again.

State lives in one folder (default ``./.devcluster``): certificates and keys,
the admin kubeconfig, the rendered scheduler configuration, one log file per
process and ``state.json`` recording the processes and ports.

One module on purpose: it is one process supervisor (certificates, configs,
start order, readiness and teardown of the same set of processes).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tfsched.clustermodel.crds import crd_dir
from tfsched.devcluster import processes
from tfsched.devcluster.binaries import REPO
from tfsched.devcluster.processes import ProcessRecord

SCHEDULER_CONFIG = REPO / "config" / "scheduler-config.yaml"
SERVICE_CIDR = "10.0.0.0/24"

# Controllers that need a kubelet or a cloud are off; node lifecycle would
# taint and evict kubelet-less nodes.
CONTROLLERS = (
    "*,-node-lifecycle-controller,-node-ipam-controller,-cloud-node-lifecycle-controller,"
    "-node-route-controller,-service-lb-controller,-persistentvolume-attach-detach-controller"
)

# Order matters for start-up; down stops in reverse.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "usage-exporter",
    "prometheus",
    "tfsched",
    "kube-scheduler",
    "fake-kubelet",
)


MANUAL_SCHEDULER = "tfsched-test-manual"


def token_kubeconfig(path: Path, server: str, token: str, user: str) -> Path:
    """A kubeconfig (mode 0600) for ``user`` with a bearer ``token`` on ``server``
    (the devcluster's self-signed API server: not verified)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": user}}],
        "current-context": "devcluster",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class DevClusterError(RuntimeError):
    pass


@dataclass
class DevCluster:
    root: Path
    bin_dir: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    records: dict[str, ProcessRecord] = field(default_factory=dict)
    token: str = ""
    extender_args: list[str] = field(default_factory=list)

    # -- paths -----------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def bin(self, name: str) -> str:
        assert self.bin_dir is not None, "bin_dir is needed to start processes"
        return str(self.bin_dir / name)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def extender_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['extender']}"

    # -- state -----------------------------------------------------------------

    def save(self) -> None:
        state = {
            "ports": self.ports,
            "token": self.token,
            "binDir": str(self.bin_dir) if self.bin_dir else None,
            "extenderArgs": self.extender_args,
            "processes": {name: rec.to_json() for name, rec in self.records.items()},
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, root: Path) -> DevCluster:
        state_file = root / "state.json"
        if not state_file.exists():
            raise DevClusterError(f"no devcluster in {root} (no state.json); run 'tfsched devcluster up' first")
        try:
            state = json.loads(state_file.read_text())
            cluster = cls(root=root, bin_dir=Path(state["binDir"]) if state.get("binDir") else None)
            cluster.ports = state["ports"]
            cluster.token = state["token"]
            cluster.extender_args = state.get("extenderArgs", [])
            cluster.records = {name: ProcessRecord(**rec) for name, rec in state["processes"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DevClusterError(f"cannot read {state_file}: {exc!r}; 'up' did not write it") from None
        return cluster

    # -- HTTP checks -------------------------------------------------------------

    def _get(self, url: str, timeout: float = 2.0) -> tuple[int, bytes]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _ok(self, url: str) -> bool:
        return self._get(url)[0] == 200

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.bin("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise DevClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    # -- up ----------------------------------------------------------------------

    def up(
        self,
        *,
        extender_args: list[str] | None = None,
        autoscale_interval: str = "1m",
        say=print,
    ) -> None:
        """Start everything.  The autoscaler reads usage from a Prometheus that
        scrapes the synthetic usage exporter (``usage_url``), every second."""
        if self.state_file.exists():
            raise DevClusterError(f"a devcluster already runs from {self.root}; run 'tfsched devcluster down' first")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        names = ("etcd", "etcd-peer", "apiserver", "extender", "exporter", "prometheus")
        self.ports = {name: processes.free_port() for name in names}
        self.token = secrets.token_hex(16)
        self.extender_args = list(extender_args or [])
        try:
            self._start_etcd(say)
            self._start_apiserver(say)
            self._write_kubeconfig()
            self._install_crds(say)
            self._start_controller_manager(say)
            self._start_metrics(say)
            self._write_tfsched_config(autoscale_interval)
            self.start_extender(say=say)
            self._start_scheduler(say)
            self._start_fake_kubelet(say)
        except BaseException:
            self.save()
            self.down(say=lambda *_: None)
            raise
        self.save()

    def start_process(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ProcessRecord:
        """Start a process of this cluster (logged, recorded, stopped by ``down``)."""
        return self._start(name, argv, env)

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ProcessRecord:
        record = processes.start(name, argv, self.log(name), env)
        self.records[name] = record
        self.save()
        return record

    def _start_etcd(self, say) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        say(f"starting etcd on {client}")
        record = self._start(
            "etcd",
            [
                self.bin("etcd"),
                "--name=devcluster",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=devcluster={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        processes.wait_until(lambda: self._ok(f"{client}/health"), timeout=60, what="etcd health", record=record)

    def _start_apiserver(self, say) -> None:
        self.start_apiserver(say=say)

    def start_apiserver(self, *, say=print) -> None:
        """Start (or restart, on the same etcd, port and token) kube-apiserver."""
        pki = self.root / "pki"
        pki.mkdir(exist_ok=True)
        key, pub = pki / "sa.key", pki / "sa.pub"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True
        )
        tokens = pki / "tokens.csv"
        tokens.write_text(f"{self.token},admin,admin,system:masters\n")
        tokens.chmod(0o600)
        say(f"starting kube-apiserver on {self.server}")
        record = self._start(
            "kube-apiserver",
            [
                self.bin("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                f"--cert-dir={pki}",
                f"--secure-port={self.ports['apiserver']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={tokens}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pub}",
                f"--service-account-signing-key-file={key}",
                "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
                "--allow-privileged=true",
                # 127.0.0.1 is not a valid endpoint for the kubernetes Service; nothing here needs it.
                "--endpoint-reconciler-type=none",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
            ],
        )
        processes.wait_until(
            lambda: self._ok(f"{self.server}/readyz"), timeout=120, what="kube-apiserver /readyz", record=record
        )

    def _write_kubeconfig(self) -> None:
        token_kubeconfig(self.kubeconfig, self.server, self.token, "admin")

    def _install_crds(self, say) -> None:
        say("installing CRDs")
        self.kubectl("apply", "-f", str(crd_dir()))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    def _start_controller_manager(self, say) -> None:
        say("starting kube-controller-manager")
        self._start(
            "kube-controller-manager",
            [
                self.bin("kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--controllers={CONTROLLERS}",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={self.root / 'pki' / 'sa.key'}",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-deployment-syncs=10",
            ],
        )

    @property
    def usage_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['exporter']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    @property
    def tfsched_config(self) -> Path:
        return self.root / "tfsched.yaml"

    def _start_metrics(self, say) -> None:
        from tfsched.devcluster.usage_exporter import start_usage_exporter

        say(f"starting the usage exporter on {self.usage_url} and Prometheus on {self.prometheus_url}")
        self.records["usage-exporter"] = start_usage_exporter(self.ports["exporter"], self.log("usage-exporter"))
        self.save()
        self.start_prometheus()

    def start_prometheus(self) -> None:
        """Start (or restart, keeping its data) Prometheus scraping the usage exporter every second."""
        from tfsched.devcluster.prometheus import start_prometheus

        self.records["prometheus"] = start_prometheus(
            self.root,
            [f"127.0.0.1:{self.ports['exporter']}"],
            port=self.ports["prometheus"],
            scrape_interval="1s",
            log=self.log("prometheus"),
        )
        self.save()

    def _write_tfsched_config(self, interval: str) -> None:
        config = {
            "autoscaling": {
                "interval": interval,
                "metrics": {"prometheusURL": self.prometheus_url, "step": "1s", "historyLength": "1h"},
                "evictionInterval": "1s",
            },
            # Pods naming MANUAL_SCHEDULER are left alone by kube-scheduler: tests bind them through /bind.
            "scheduling": {"auditInterval": "3s", "schedulerNames": ["default-scheduler", MANUAL_SCHEDULER]},
            # One writer; short so tests that kill the leader see the takeover quickly.
            "leaderElection": {"leaseDuration": "6s", "renewEvery": "2s"},
        }
        self.tfsched_config.write_text(yaml.safe_dump(config))

    def start_extender(
        self,
        *,
        say=print,
        name: str = "tfsched",
        port: int | None = None,
        config: Path | None = None,
        lead: bool = True,
        args: list[str] | None = None,
        health_port: int | None = None,
    ) -> ProcessRecord:
        """Start (or restart) a ``tfsched serve``: by default the cluster's own, on
        the extender port; tests start more (another ``name``, ``port``, ``config``,
        extra ``args`` such as TLS flags, with probes on ``health_port``).
        With ``lead``, wait until it is the one writer, not only ready."""
        port = port or self.ports["extender"]
        url = f"http://127.0.0.1:{health_port or port}"
        say(f"starting tfsched serve on {url}")
        record = self._start(
            name,
            [
                sys.executable,
                "-m",
                "tfsched",
                "serve",
                f"--kubeconfig={self.kubeconfig}",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--config={config or self.tfsched_config}",
                *self.extender_args,
                *(args or []),
                *([f"--health-port={health_port}"] if health_port else []),
            ],
            env={"NUMBA_CACHE_DIR": str(numba_cache_dir())},
        )
        processes.wait_until(lambda: self._ok(f"{url}/readyz"), timeout=120, what=f"{name} /readyz", record=record)
        if lead:
            # The one writer: binds are refused until it holds the lease and has fenced.
            processes.wait_until(lambda: self.extender_leads(url), timeout=60, what=f"{name} to lead", record=record)
        return record

    def extender_leads(self, url: str | None = None) -> bool:
        status, body = self._get(f"{url or self.extender_url}/metrics")
        return status == 200 and b"\ntfsched_writer_active 1.0" in body

    def stop_component(self, name: str) -> None:
        record = self.records.get(name)
        if record is not None:
            processes.stop(record)

    def _start_scheduler(self, say) -> None:
        self.start_scheduler(say=say)

    def start_scheduler(
        self,
        *,
        say=print,
        name: str = "kube-scheduler",
        extender_url: str | None = None,
        leader_election: dict[str, Any] | None = None,
        hostname: str | None = None,
        scheduler_name: str | None = None,
        extender_tls: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        secure_port: int = 0,
    ) -> ProcessRecord:
        """Start a kube-scheduler with config/scheduler-config.yaml (or another
        rendering of the chart's, ``config``) calling ``extender_url``.

        ``secure_port`` serves its /metrics and /debug/pprof (0: none), for the
        benchmarks' profiles; the admin token is allowed there (delegated authn/authz).

        ``hostname`` runs it in a UTS namespace of its own, as a pod would be,
        so its leader identity (``<hostname>_<uuid>``) tells it apart from
        another on this machine (needs root or unprivileged user namespaces).
        ``scheduler_name`` names its profile (a second scheduler);
        ``extender_tls`` is the extender's ``tlsConfig`` (HTTPS, client certificate)."""
        config = copy.deepcopy(config) if config is not None else yaml.safe_load(SCHEDULER_CONFIG.read_text())
        config["clientConnection"]["kubeconfig"] = str(self.kubeconfig)
        for extender in config["extenders"]:
            extender["urlPrefix"] = extender_url or self.extender_url
            if extender_tls is not None:
                extender["enableHTTPS"] = True
                extender["tlsConfig"] = extender_tls
        if scheduler_name is not None:
            config["profiles"] = [{"schedulerName": scheduler_name}]
        # The chart's leader election is on; here one kube-scheduler runs unless a test
        # says otherwise, and one stopped for another would hold the lease for 15 s.
        config["leaderElection"] = leader_election if leader_election is not None else {"leaderElect": False}
        rendered = self.root / f"{name}-config.yaml"
        rendered.write_text(yaml.safe_dump(config, sort_keys=False))
        say(f"starting {name}")
        argv = [
            self.bin("kube-scheduler"),
            f"--config={rendered}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--secure-port={secure_port}",
        ]
        if hostname is not None:
            user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
            argv = ["unshare", *user, "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]
        return self._start(name, argv)

    def _start_fake_kubelet(self, say) -> None:
        say("starting the fake kubelet")
        self._start(
            "fake-kubelet",
            [sys.executable, "-m", "tfsched.devcluster.kubelet", f"--kubeconfig={self.kubeconfig}"],
        )

    # -- nodes -------------------------------------------------------------------

    def add_nodes(self, nodes: list[dict[str, Any]], gpus: list[dict[str, Any]]) -> None:
        """Create fake nodes and their GPU objects (status included)."""
        import asyncio

        from tfsched.devcluster.nodes import create_nodes_and_gpus

        asyncio.run(create_nodes_and_gpus(str(self.kubeconfig), nodes, gpus))

    # -- down / status -------------------------------------------------------------

    def down(self, *, say=print) -> list[str]:
        """Stop what is still running and remove the state folder; returns the names stopped."""
        extra = [name for name in self.records if name not in COMPONENTS]  # what tests started besides
        stopped = []
        for name in [*reversed(extra), *reversed(COMPONENTS)]:
            record = self.records.get(name)
            if record is not None and record.process() is not None:
                say(f"stopping {name} (pid {record.pid})")
                processes.stop(record)
                stopped.append(name)
        shutil.rmtree(self.root, ignore_errors=True)
        return stopped

    def status(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in [*COMPONENTS, *(n for n in self.records if n not in COMPONENTS)]:
            record = self.records.get(name)
            if record is None:
                out[name] = "not started"
            elif record.process() is None:
                out[name] = f"exited (log {record.log})"
            else:
                out[name] = f"running (pid {record.pid}, log {record.log})"
        return out

    def env(self) -> str:
        return f"export KUBECONFIG={self.kubeconfig}\nexport PATH={self.bin_dir}:$PATH\n"


def numba_cache_dir() -> Path:
    """numba's on-disk kernel cache, outside the repo and writable."""
    base = Path(os.environ.get("TFSCHED_CACHE", Path.home() / ".cache" / "tfsched"))
    path = base / "numba"
    path.mkdir(parents=True, exist_ok=True)
    return path
