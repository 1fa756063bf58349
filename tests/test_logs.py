"""Log formats: ``--log-format json`` writes one JSON object per line, action fields included."""

from __future__ import annotations

import logging
import sys

import orjson
import yaml
from click.testing import CliRunner

from tfsched.cli import main
from tfsched.clustermodel.objects import gpu_object, gpu_pod, node_object
from tfsched.devcluster import processes
from tfsched.logs import JsonFormatter

from .extender.test_snapshot_serve import GiB, call


def test_json_lines_carry_the_action_fields_and_the_exception():
    record = logging.LogRecord("tfsched.autoscale.apply", logging.INFO, __file__, 1, "resized %s", ("w0",), None)
    record.action, record.workload, record.pod = "resize", "ns/wl", "w0"
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["message"] == "resized w0" and entry["level"] == "INFO"
    assert (entry["action"], entry["workload"], entry["pod"]) == ("resize", "ns/wl", "w0")
    assert entry["time"].endswith("+00:00") and "node" not in entry
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in orjson.loads(JsonFormatter().format(failed))["exception"]


def test_an_unknown_log_format_is_a_usage_error():
    result = CliRunner().invoke(main, ["--log-format", "xml", "version"])
    assert result.exit_code == 2
    assert "'xml' is not one of 'text', 'json'" in result.output


def test_serve_logs_json_lines_and_one_per_bind(tmp_path):
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            node_object("n0", gpus=1),
            gpu_object("n0", 0, tflops=100, vram=16 * GiB),
            gpu_pod("p", tflops="10", vram="1Gi", uid="u"),
        ],
    }
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text(yaml.safe_dump(doc))
    port = processes.free_port()
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "tfsched", "--log-format", "json", "serve", "--snapshot", str(snapshot)]
    record = processes.start_until_ready(
        "tfsched-json", [*argv, "--port", str(port)], log, f"http://127.0.0.1:{port}/readyz", timeout=60
    )
    try:
        status, result = call(port, "bind", {"PodName": "p", "PodNamespace": "default", "PodUID": "u", "Node": "n0"})
        assert status == 200 and result["Error"] == ""
    finally:
        processes.stop(record)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    entries = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    (bind,) = [e for e in entries if e.get("action") == "bind"]
    assert bind["pod"] == "default/p" and bind["node"] == "n0"
    assert bind["message"].startswith("bound default/p to n0 on ")
