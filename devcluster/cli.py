"""``tfsched devcluster up|down|status|env`` and ``tfsched demo``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from devcluster.binaries import REPO

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


def _up(root: Path, spec_path: Path) -> None:
    from clustermodel.yamlfile import YamlFileError
    from devcluster.binaries import BinariesError, ensure_binaries
    from devcluster.cluster import DevCluster, DevClusterError
    from devcluster.spec import load_spec

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
        cluster.up(say=_say)
        nodes, gpus = spec.objects()
        _say(f"creating {len(nodes)} fake GPU nodes with {len(gpus)} GPUs")
        cluster.add_nodes(nodes, gpus)
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
def up(root: Path, spec_path: Path) -> None:
    """Build or reuse the binaries and start the cluster; prints shell exports."""
    _up(root, spec_path)


@devcluster.command()
@dir_option
def down(root: Path) -> None:
    """Stop exactly the processes 'up' started and remove the state folder."""
    from devcluster.cluster import DevCluster, DevClusterError

    try:
        cluster = DevCluster.load(root.resolve())
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from None
    cluster.down(say=_say)


@devcluster.command()
@dir_option
def status(root: Path) -> None:
    """Which processes run, with their log files."""
    from devcluster.cluster import DevCluster, DevClusterError

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
    from devcluster.cluster import DevCluster, DevClusterError

    try:
        click.echo(DevCluster.load(root.resolve()).env(), nl=False)
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@dir_option
@click.option("--timeout", default=120, show_default=True, help="Seconds to wait for the demo pods to be placed.")
def demo(root: Path, timeout: int) -> None:
    """Bring the devcluster up (if needed), apply the demo workloads and show
    where each pod landed and on which GPUs."""
    from devcluster.cluster import DevCluster, DevClusterError, wait_for

    root = root.resolve()
    if not (root / "state.json").exists():
        _up(root, DEFAULT_SPEC)
    cluster = DevCluster.load(root)
    try:
        cluster.kubectl("apply", "-f", str(DEMO_MANIFEST))
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from None

    def all_placed() -> bool:
        out = cluster.kubectl("get", "pods", "-l", "tfsched-demo=true", "-o", "jsonpath={.items[*].spec.nodeName}")
        names = out.stdout.split()
        pods = cluster.kubectl("get", "pods", "-l", "tfsched-demo=true", "-o", "name").stdout.split()
        return bool(pods) and len(names) == len(pods)

    _say("waiting for the demo pods to be placed")
    wait_for(all_placed, timeout)
    columns = (
        "NAME:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,"
        "GPUS:.metadata.annotations.tensor-fusion\\.ai/gpu-ids,"
        "TFLOPS:.metadata.annotations.tensor-fusion\\.ai/tflops-request,"
        "VRAM:.metadata.annotations.tensor-fusion\\.ai/vram-request"
    )
    click.echo(cluster.kubectl("get", "pods", "-l", "tfsched-demo=true", "-o", f"custom-columns={columns}").stdout)
    click.echo(cluster.kubectl("get", "tensorfusionworkloads", "-A").stdout)
    click.echo(f'The cluster keeps running: eval "$(tfsched devcluster env --dir {root})" to use kubectl;')
    click.echo(f"tfsched devcluster down --dir {root} stops it.")
