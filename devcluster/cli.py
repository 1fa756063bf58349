"""``tfsched devcluster up|down|status|env`` and ``tfsched demo``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from tfsched.devcluster.binaries import REPO

DEFAULT_DIR = Path(os.environ.get("TFSCHED_DEVCLUSTER_DIR", ".devcluster"))
DEFAULT_SPEC = REPO / "examples" / "cluster.yaml"
DEMO_MANIFEST = REPO / "examples" / "demo-workload.yaml"

dir_option = click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="State folder: kubeconfig, logs, certificates, state.json.",
)


def _say(message: str) -> None:
    click.echo(f"devcluster: {message}", err=True)


def _up(root: Path, spec_path: Path, autoscale_interval: str = "1m", topology: str = "extendScheduler") -> None:
    from tfsched.clustermodel.yamlfile import YamlFileError
    from tfsched.devcluster.binaries import BinariesError, ensure_binaries
    from tfsched.devcluster.cluster import DevCluster, DevClusterError
    from tfsched.devcluster.spec import load_spec

    try:
        spec = load_spec(spec_path)
    except YamlFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--spec") from None
    try:
        bin_dir = ensure_binaries()
    except BinariesError as exc:
        raise click.ClickException(str(exc)) from None
    cluster = DevCluster(root=root.resolve(), bin_dir=bin_dir)
    try:
        started = time.monotonic()
        cluster.up(autoscale_interval=autoscale_interval, say=_say)
        nodes, gpus = spec.objects()
        _say(f"creating {len(nodes)} fake GPU nodes with {len(gpus)} GPUs")
        cluster.add_nodes(nodes, gpus)
        if topology == "secondScheduler":
            from tfsched.devcluster.cluster import numba_cache_dir
            from tfsched.devcluster.deployed import run_second_scheduler

            pair = run_second_scheduler(cluster, numba_cache=numba_cache_dir(), say=_say)
            _say(f"GPU pods go to tfsched-scheduler; tfsched's metrics on {pair.health_url}/metrics")
    except (DevClusterError, RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    _say(f"up in {time.monotonic() - started:.1f}s; logs in {cluster.root / 'logs'}")
    click.echo(cluster.env(), nl=False)


@click.group()
def devcluster() -> None:
    """A local control plane (etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler, tfsched) on 127.0.0.1 with fake GPU nodes."""


@devcluster.command()
@dir_option
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_SPEC,
    show_default=True,
    help="Cluster spec: groups of fake GPU nodes.",
)
@click.option(
    "--topology",
    type=click.Choice(["extendScheduler", "secondScheduler"]),
    default="extendScheduler",
    show_default=True,
    help="As the Helm chart's value: kube-scheduler calls tfsched, or the chart's second "
    "scheduler with mutual TLS and the webhook (GPU pods go to tfsched-scheduler).",
)
def up(root: Path, spec_path: Path, topology: str) -> None:
    """Build or reuse the binaries and start the cluster; prints shell exports."""
    _up(root, spec_path, topology=topology)


@devcluster.command()
@dir_option
def down(root: Path) -> None:
    """Stop exactly the processes 'up' started and remove the state folder.

    Idempotent: with no cluster, or one whose processes all exited, it says so and succeeds."""
    from tfsched.devcluster.cluster import DevCluster, DevClusterError

    root = root.resolve()
    if not (root / "state.json").exists():
        _say(f"nothing was running: no devcluster in {root}")
        return
    try:
        cluster = DevCluster.load(root)
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from None
    if not cluster.down(say=_say):
        _say(f"nothing was running: every process of the devcluster in {root} had exited; removed its state")


@devcluster.command()
@dir_option
def status(root: Path) -> None:
    """Which processes run, with their log files."""
    from tfsched.devcluster.cluster import DevCluster, DevClusterError

    try:
        cluster = DevCluster.load(root.resolve())
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from None
    for name, state in cluster.status().items():
        click.echo(f"{name:<24} {state}")


@devcluster.command()
@dir_option
def env(root: Path) -> None:
    """Shell exports for kubectl against the cluster: eval "$(tfsched devcluster env)"."""
    from tfsched.devcluster.cluster import DevCluster, DevClusterError

    try:
        click.echo(DevCluster.load(root.resolve()).env(), nl=False)
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from None


def _put_usage(url: str, pods: list[str], usage: dict[str, float], namespace: str = "default") -> None:
    import json
    import urllib.request

    body = [{"namespace": namespace, "pod": pod, "gpu": "0", **usage} for pod in pods]
    request = urllib.request.Request(
        f"{url}/usage", data=json.dumps(body).encode(), method="PUT", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def closing_hint(root: Path, command: str) -> str:
    """How to reach the cluster the demo leaves running, with a ``tfsched`` the shell can find."""
    lines = [
        f'The cluster keeps running: eval "$({command} devcluster env --dir {root})" to use kubectl;',
        f"{command} devcluster down --dir {root} stops it.",
    ]
    if command != "tfsched":  # not on PATH: say how to make the bare name work
        lines.append(f"To run plain `tfsched`: export PATH={Path(command).resolve().parent}:$PATH")
    return "\n".join(lines)


@click.command()
@dir_option
@click.option("--timeout", default=180, show_default=True, help="Seconds to wait for each step of the demo.")
def demo(root: Path, timeout: int) -> None:
    """Bring the devcluster up (if needed), apply the demo workloads, show where
    each pod landed and on which GPUs, then feed synthetic GPU usage and show the
    autoscaler's recommendation being applied.  Exits non-zero, saying which,
    when a step does not happen within --timeout."""
    from tfsched.devcluster.cluster import DevCluster, DevClusterError
    from tfsched.devcluster.demo import DemoFailed, run_demo, tfsched_command, use_colour
    from tfsched.devcluster.processes import wait_until

    root = root.resolve()
    if not (root / "state.json").exists():
        _up(root, DEFAULT_SPEC, autoscale_interval="10s")
    try:
        cluster = DevCluster.load(root)
        cluster.kubectl("apply", "-f", str(DEMO_MANIFEST))
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from None

    class Live:
        kubectl = staticmethod(cluster.kubectl)

        @staticmethod
        def put_usage(pods: list[str], usage: dict[str, float]) -> None:
            _put_usage(cluster.usage_url, pods, usage)

    def wait(check, seconds: float, what: str) -> None:
        wait_until(check, timeout=seconds, what=what, interval=0.5)

    try:
        run_demo(Live(), timeout=timeout, wait=wait, echo=click.echo, say=_say, colour=use_colour())
    except (DemoFailed, DevClusterError) as exc:
        click.echo(closing_hint(root, tfsched_command()))
        raise click.ClickException(f"demo failed: {exc}") from None
    click.echo(closing_hint(root, tfsched_command()))
