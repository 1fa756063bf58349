"""The ``tfsched`` command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from tfsched.logs import LOG_FORMATS, configure

# Python's named levels; anything else made logging.basicConfig raise.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@click.group()
@click.version_option(package_name="tfsched", prog_name="tfsched")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Python logging level.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="text, or json: one JSON object per line (time, level, logger, message, action fields).",
)
def main(log_level: str, log_format: str) -> None:
    """GPU-aware kube-scheduler extender and autoscaler (TensorFusion compatible)."""
    configure(log_level, log_format)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of the verbs' listener.")
@click.option("--port", default=8888, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    help="As kubectl: default $KUBECONFIG, then the pod's service account, then ~/.kube/config.",
)
@click.option("--context", help="The kubeconfig context to use (default: its current-context).")
@click.option(
    "--snapshot",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve offline from objects in a YAML/JSON file (kubectl get ... -o yaml); binds stay in memory.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="tfsched config YAML (sections: scheduling, autoscaling).",
)
@click.option("--no-autoscale", is_flag=True, help="Serve the extender only; run no autoscale loop.")
@click.option(
    "--tls-cert-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve HTTPS with this certificate (PEM; re-read when it changes).",
)
@click.option(
    "--tls-private-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate's private key (PEM).",
)
@click.option(
    "--client-ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Require client certificates signed by this CA (kube-scheduler's extender tlsConfig) for every call.",
)
@click.option(
    "--webhook-port",
    type=click.IntRange(0, 65535),
    help="Serve the mutating admission webhook (POST /mutate) here, over HTTPS with --tls-cert-file.",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    help="Serve /healthz, /readyz and /metrics on this port (plain HTTP), apart from the verbs.",
)
@click.option(
    "--health-host",
    help="Address of the health listener (default: --host): 0.0.0.0 for the kubelet, verbs still on 127.0.0.1.",
)
@click.option("--webhook-host", help="Address of the webhook listener (default: --host).")
@click.option(
    "--enable-test-hooks",
    is_flag=True,
    hidden=True,
    help="Expose /debug/clock and /debug/autoscale/tick (end-to-end tests only).",
)
def serve(
    host: str,
    port: int,
    kubeconfig: str | None,
    context: str | None,
    snapshot: Path | None,
    config_path: Path | None,
    no_autoscale: bool,
    tls_cert_file: Path | None,
    tls_private_key_file: Path | None,
    client_ca_file: Path | None,
    webhook_port: int | None,
    health_port: int | None,
    health_host: str | None,
    webhook_host: str | None,
    enable_test_hooks: bool,
) -> None:
    """Serve the scheduler extender (filter, prioritize, bind) and, against a
    cluster, the autoscale loop (on the leader)."""
    from tfsched.clustermodel.cache import SnapshotError
    from tfsched.clustermodel.yamlfile import YamlFileError
    from tfsched.config import load_config
    from tfsched.kubeapi.client import KubeConfigError
    from tfsched.server import Listener, build_server, serve_forever

    try:
        config = load_config(config_path)
    except YamlFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    if no_autoscale:
        config.autoscaling.enabled = False
    if (tls_cert_file is None) != (tls_private_key_file is None):
        raise click.UsageError("--tls-cert-file and --tls-private-key-file go together")
    if webhook_port is not None and tls_cert_file is None:
        raise click.UsageError("--webhook-port needs --tls-cert-file and --tls-private-key-file")
    if client_ca_file is not None and tls_cert_file is None:
        raise click.UsageError("--client-ca-file needs --tls-cert-file and --tls-private-key-file")
    tls = None
    if tls_cert_file is not None and tls_private_key_file is not None:
        from tfsched.extender.tls import TLSConfigError, TLSFiles, server_context

        tls = TLSFiles(tls_cert_file, tls_private_key_file, client_ca_file)
        try:
            server_context(tls)  # fail now, naming the file, rather than after the caches sync
        except TLSConfigError as exc:
            raise click.UsageError(str(exc)) from None

    async def run() -> None:
        try:
            server = await build_server(
                config, snapshot=snapshot, kubeconfig=kubeconfig, context=context, test_hooks=enable_test_hooks
            )
        except SnapshotError as exc:
            raise click.BadParameter(str(exc), param_hint="--snapshot") from None
        except KubeConfigError as exc:
            raise click.UsageError(str(exc)) from None
        await serve_forever(
            server,
            host,
            port,
            tls=tls,
            health=Listener(health_host or host, health_port) if health_port is not None else None,
            webhook=Listener(webhook_host or host, webhook_port) if webhook_port is not None else None,
        )

    asyncio.run(run())


def _add_commands() -> None:
    """Commands whose modules live in other packages."""
    from tfsched.devcluster.cli import demo, devcluster

    main.add_command(devcluster)
    main.add_command(demo)
    from tfsched.autoscale.cli import recommend_command

    main.add_command(recommend_command, "recommend")


_add_commands()
