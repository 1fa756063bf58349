"""Run a real Prometheus for the end-to-end tests: our own process, not Debian's service.

Debian's ``prometheus`` package (installed by ``scripts/bootstrap.sh``) gives
the binary; we write a minimal configuration that scrapes the synthetic usage
exporter and keep the TSDB under the devcluster folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tfsched.devcluster import processes
from tfsched.devcluster.processes import ProcessRecord

JOB_NAME = "tfsched-usage"
DEBIAN_BINARY = Path("/usr/bin/prometheus")


class PrometheusMissing(RuntimeError):
    pass


def prometheus_binary() -> Path:
    """``prometheus`` on PATH, else Debian's ``/usr/bin/prometheus``."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    if DEBIAN_BINARY.is_file():
        return DEBIAN_BINARY
    raise PrometheusMissing(
        "prometheus not found on PATH or at /usr/bin/prometheus: run scripts/bootstrap.sh "
        "or install Debian's package (apt-get install -y prometheus)"
    )


def write_config(
    path: Path,
    targets: list[str],
    scrape_interval: str,
    *,
    jobs: dict[str, list[str]] | None = None,
    rule_files: list[Path] | None = None,
) -> None:
    """``targets`` in the exporter's job; ``jobs``: more jobs by name; ``rule_files``: alert rules to load."""
    config: dict = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": JOB_NAME,
                # Keep the exporter's namespace/pod labels even if a target label ever clashes.
                "honor_labels": True,
                "static_configs": [{"targets": list(targets)}],
            },
            *({"job_name": name, "static_configs": [{"targets": list(hosts)}]} for name, hosts in (jobs or {}).items()),
        ],
    }
    if rule_files:
        config["rule_files"] = [str(f) for f in rule_files]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def start_prometheus(
    root: Path,
    targets: list[str],
    *,
    port: int,
    scrape_interval: str = "1s",
    log: Path,
    timeout: float = 30.0,
    jobs: dict[str, list[str]] | None = None,
    rule_files: list[Path] | None = None,
) -> ProcessRecord:
    """Start Prometheus on ``127.0.0.1:port`` scraping ``targets`` (``host:port``) and ``jobs``, with
    ``rule_files`` loaded; return once it is ready."""
    binary = prometheus_binary()
    config_file = root / "prometheus.yml"
    write_config(config_file, targets, scrape_interval, jobs=jobs, rule_files=rule_files)
    argv = [
        str(binary),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={root / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
    ]
    return processes.start_until_ready("prometheus", argv, log, f"http://127.0.0.1:{port}/-/ready", timeout=timeout)
