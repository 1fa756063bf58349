"""A real Prometheus (Debian's binary, our process) scraping a real usage exporter process.

Prometheus 2.42 hands static targets to the scrape loop after its 5 s
discovery throttle, so the first sample lands ~6 s after start; the test
polls rather than sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml

from tfsched.autoscale.ports import REASON_UNREACHABLE, MetricsUnavailable
from tfsched.autoscale.prometheus import MetricsConfig, PrometheusSource
from tfsched.devcluster import processes
from tfsched.devcluster.processes import ProcessRecord
from tfsched.devcluster.prometheus import prometheus_binary, start_prometheus, write_config
from tfsched.devcluster.usage_exporter import start_usage_exporter

GI = 2**30


@dataclass
class Stack:
    exporter_url: str
    prometheus_url: str
    prometheus: ProcessRecord
    started_in: float


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    records: list[ProcessRecord] = []
    try:
        exporter_port = processes.free_port()
        records.append(start_usage_exporter(exporter_port, tmp_path / "exporter.log"))
        prometheus_port = processes.free_port()
        began = time.monotonic()
        prometheus = start_prometheus(
            tmp_path, [f"127.0.0.1:{exporter_port}"], port=prometheus_port, log=tmp_path / "prometheus.log"
        )
        records.append(prometheus)
        yield Stack(
            f"http://127.0.0.1:{exporter_port}",
            f"http://127.0.0.1:{prometheus_port}",
            prometheus,
            time.monotonic() - began,
        )
    finally:
        for record in reversed(records):
            processes.stop(record)


def test_prometheus_binary_is_found() -> None:
    binary = prometheus_binary()
    assert binary.is_file() and os.access(binary, os.X_OK)


async def test_usage_flows_from_exporter_through_prometheus_and_stops_with_it(stack: Stack) -> None:
    assert stack.started_in < 10, f"prometheus took {stack.started_in:.1f}s to get ready"
    series = [
        # Pod a holds two GPUs: TFLOPS averaged across them, VRAM of the busiest.
        {"namespace": "ml", "pod": "a", "gpu": "gpu-0", "tflops": 10, "vram": "1Gi"},
        {"namespace": "ml", "pod": "a", "gpu": "gpu-1", "tflops": 20, "vram": "3Gi"},
        {"namespace": "ml", "pod": "b", "gpu": "gpu-0", "tflops": "2500m", "vram": 2 * GI},
    ]
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{stack.exporter_url}/usage", json=series) as response:
            assert response.status == 200, await response.text()

        config = MetricsConfig(prometheusURL=stack.prometheus_url, step="1s", timeout="5s")
        async with PrometheusSource(config, http) as source:
            began = datetime.now(UTC)
            deadline = time.monotonic() + 15
            # (namespace, pod, time_ns, tflops, vram) rows
            per_pod: dict[str, list[tuple[str, str, int, float | None, float | None]]] = {}
            while time.monotonic() < deadline:
                got = await source.samples(began - timedelta(seconds=5), datetime.now(UTC))
                per_pod = {}
                for row in got.rows():
                    per_pod.setdefault(row[1], []).append(row)
                if set(per_pod) == {"a", "b"} and all(len(rows) >= 3 for rows in per_pod.values()):
                    break
                await asyncio.sleep(0.5)
            counts = {name: len(rows) for name, rows in per_pod.items()}
            assert set(per_pod) == {"a", "b"} and min(counts.values()) >= 3, f"samples per pod after 15 s: {counts}"

            for namespace, _, _, tflops, vram in per_pod["a"]:
                assert (namespace, tflops, vram) == ("ml", 15.0, 3.0 * GI)
            for namespace, _, _, tflops, vram in per_pod["b"]:
                assert (namespace, tflops, vram) == ("ml", 2.5, 2.0 * GI)
            times = [row[2] for row in per_pod["a"]]
            # Unix nanoseconds of this run (so UTC), one step apart.
            assert times == sorted(times) and times[0] >= (began - timedelta(seconds=6)).timestamp() * 1e9
            assert all(later - earlier == 1_000_000_000 for earlier, later in itertools.pairwise(times))

            processes.stop(stack.prometheus)
            with pytest.raises(MetricsUnavailable) as info:
                await source.samples(began, datetime.now(UTC))
            assert info.value.reason == REASON_UNREACHABLE
            assert str(info.value) == f"cannot connect to Prometheus at {stack.prometheus_url}: Connection refused"


def test_a_prometheus_that_cannot_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(RuntimeError) as info:
            start_prometheus(tmp_path, ["127.0.0.1:1"], port=port, log=tmp_path / "prometheus.log")
    assert time.monotonic() - began < 10
    message = str(info.value)
    assert "prometheus exited while waiting for prometheus" in message
    assert "address already in use" in message


def test_the_written_configuration(tmp_path: Path) -> None:
    write_config(tmp_path / "p.yml", ["127.0.0.1:9100", "127.0.0.1:9101"], "2s")
    assert yaml.safe_load((tmp_path / "p.yml").read_text()) == {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            {
                "job_name": "tfsched-usage",
                "honor_labels": True,
                "static_configs": [{"targets": ["127.0.0.1:9100", "127.0.0.1:9101"]}],
            }
        ],
    }
