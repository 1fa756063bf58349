"""The ``tfsched`` command line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click
import yaml
from pydantic import ValidationError


def _load_scheduling_config(path: Path | None):
    from extender.config import SchedulingConfig

    if path is None:
        return SchedulingConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--config") from None
    section = raw.get("scheduling", {}) if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        raise click.BadParameter("the 'scheduling' section must be a mapping", param_hint="--config")
    try:
        return SchedulingConfig.model_validate(section)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "scheduling." + ".".join(str(p) for p in first["loc"])
        raise click.BadParameter(f"{field}: {first['msg']}", param_hint="--config") from None


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
def main(log_level: str) -> None:
    """GPU-aware kube-scheduler extender and autoscaler (TensorFusion compatible)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8888, show_default=True, type=click.IntRange(0, 65535))
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="Default: in-cluster config.")
@click.option(
    "--snapshot",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve offline from objects in a YAML/JSON file (kubectl get ... -o yaml); binds stay in memory.",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="tfsched config YAML.")
def serve(host: str, port: int, kubeconfig: str | None, snapshot: Path | None, config_path: Path | None) -> None:
    """Serve the scheduler extender (filter, prioritize, bind)."""
    from clustermodel.cache import SnapshotError
    from extender.serve import build_server, serve_forever

    config = _load_scheduling_config(config_path)

    async def run() -> None:
        try:
            server = await build_server(config, snapshot=snapshot, kubeconfig=kubeconfig)
        except SnapshotError as exc:
            raise click.BadParameter(str(exc), param_hint="--snapshot") from None
        await serve_forever(server, host, port)

    asyncio.run(run())


def _add_commands() -> None:
    """Commands whose modules live in other packages."""
    from devcluster.cli import demo, devcluster

    main.add_command(devcluster)
    main.add_command(demo)
    from autoscale.cli import recommend_command

    main.add_command(recommend_command, "recommend")


_add_commands()
