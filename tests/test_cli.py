"""The command line: bad files get a message naming the file and the field, never a traceback."""

from __future__ import annotations

from click.testing import CliRunner

from tfsched.cli import main


def test_serve_rejects_a_bad_config_naming_the_field(tmp_path):
    bad = tmp_path / "tfsched.yaml"
    bad.write_text("scheduling:\n  placementMode: Sideways\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(bad), "--snapshot", str(bad)])
    assert result.exit_code == 2
    assert "scheduling.placementMode" in result.output
    assert "Traceback" not in result.output


def test_serve_rejects_unknown_autoscaling_fields(tmp_path):
    bad = tmp_path / "tfsched.yaml"
    bad.write_text("autoscaling:\n  metrics:\n    prometheusURL: http://x\n    stepp: 1s\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(bad), "--snapshot", str(bad)])
    assert result.exit_code == 2
    assert "autoscaling.metrics.stepp" in result.output


def test_serve_rejects_a_gpu_status_pace_that_could_never_write(tmp_path):
    bad = tmp_path / "tfsched.yaml"
    bad.write_text("gpuStatus:\n  qps: 0\n  burst: 0\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(bad), "--snapshot", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{bad}: gpuStatus.qps: Input should be greater than 0" in result.output
    assert f"{bad}: gpuStatus.burst: Input should be greater than or equal to 1" in result.output


def test_devcluster_up_rejects_a_bad_spec_before_starting_anything(tmp_path):
    spec = tmp_path / "cluster.yaml"
    spec.write_text("nodes:\n- namePrefix: gpu\n  count: 0\n  gpus: {count: 1, tflops: 1, vram: 1Gi}\n")
    result = CliRunner().invoke(main, ["devcluster", "up", "--dir", str(tmp_path / "state"), "--spec", str(spec)])
    assert result.exit_code == 2
    assert "nodes.0.count" in result.output
    assert not (tmp_path / "state").exists()


def _serve_without_a_cluster(tmp_path, monkeypatch, *args: str):
    """``tfsched serve`` in a process with no kubeconfig anywhere and not in a pod."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return CliRunner().invoke(main, ["serve", "--no-autoscale", "--port", "0", *args])


def test_serve_outside_any_cluster_says_so_in_one_line(tmp_path, monkeypatch):
    result = _serve_without_a_cluster(tmp_path, monkeypatch)
    assert result.exit_code == 2
    assert "no Kubernetes configuration: pass --kubeconfig, set $KUBECONFIG" in result.output
    assert "Traceback" not in result.output and "Service host/port" not in result.output


def test_serve_reads_kubeconfig_from_the_environment(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere.yaml"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(missing))
    result = CliRunner().invoke(main, ["serve", "--no-autoscale", "--port", "0"])
    assert result.exit_code == 2 and f"$KUBECONFIG names no file that exists: {missing}" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    monkeypatch.setenv("KUBECONFIG", f"{missing}:{broken}")  # missing files skipped, as kubectl
    result = CliRunner().invoke(main, ["serve", "--no-autoscale", "--port", "0", "--context", "nope"])
    assert result.exit_code == 2 and f"kubeconfig {broken}:" in result.output
    assert "Traceback" not in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("tfsched, version ")


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_an_unknown_log_level_is_a_usage_error_listing_the_levels():
    result = _invoke("--log-level", "LOUD", "serve")
    assert result.exit_code == 2
    assert "Invalid value for '--log-level': 'LOUD' is not one of" in result.output
    for level in ("debug", "info", "warning", "error", "critical"):
        assert f"'{level}'" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_serve_config_reports_every_problem_one_line_each(tmp_path):
    bad = tmp_path / "tfsched.yaml"
    bad.write_text(
        "scheduling:\n  placementMode: Sideways\n"
        "autoscaling:\n  timeZone: Mars/Base\n  intervall: 1m\n  metrics: {stepp: 1s}\n"
    )
    result = _invoke("serve", "--config", str(bad), "--snapshot", str(bad))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "4 problems:" in result.output
    lines = result.output.splitlines()
    assert (
        f"{bad}: scheduling.placementMode: Input should be 'CompactFirst', 'LowLoadFirst', "
        "'NodeCompactGPULowLoad' or 'LeastFragmentation'" in lines
    )
    assert (
        f"{bad}: autoscaling.timeZone: unknown time zone 'Mars/Base': "
        "expected an IANA name such as UTC or Europe/Berlin" in lines
    )
    assert (
        f"{bad}: autoscaling.intervall: unknown field; accepted: enabled, interval, checkpointInterval, "
        "evictionInterval, timeZone, metrics" in lines
    )
    stepp = f"{bad}: autoscaling.metrics.stepp: unknown field; accepted: prometheusURL"
    assert any(line.startswith(stepp) for line in lines)


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    bad = tmp_path / "tfsched.yaml"
    bad.write_text("scheduling:\n  a: [1\n b: 2\n")
    result = _invoke("serve", "--config", str(bad), "--snapshot", str(bad))
    assert result.exit_code == 2
    assert f"{bad}:3:3: invalid YAML: while parsing a flow sequence: expected ',' or ']'" in result.output
    assert "<unicode string>" not in result.output and "Traceback" not in result.output


def test_an_unreadable_config_names_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text("")
    result = _invoke("serve", "--config", str(missing), "--snapshot", str(snapshot))
    assert result.exit_code == 2
    assert f"{missing}: cannot read: No such file or directory" in result.output


def test_devcluster_down_without_a_cluster_succeeds_saying_nothing_ran(tmp_path):
    root = tmp_path / "nowhere"
    result = _invoke("devcluster", "down", "--dir", str(root))
    assert result.exit_code == 0, result.output
    assert f"devcluster: nothing was running: no devcluster in {root}" in result.output


def test_devcluster_down_on_a_stopped_cluster_removes_its_state(tmp_path):
    import json
    import subprocess
    import sys

    import psutil

    # A real process that has exited: its pid and start time are what 'up' would have recorded.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    root = tmp_path / "dev"
    root.mkdir()
    record = {"name": "etcd", "pid": proc.pid, "started": started, "argv": ["etcd"], "log": str(root / "etcd.log")}
    state = {"binDir": None, "ports": {}, "token": "t", "processes": {"etcd": record}}
    (root / "state.json").write_text(json.dumps(state))
    result = _invoke("devcluster", "down", "--dir", str(root))
    assert result.exit_code == 0, result.output
    assert "nothing was running: every process of the devcluster" in result.output
    assert not root.exists()
    # Twice is fine too.
    assert _invoke("devcluster", "down", "--dir", str(root)).exit_code == 0


def test_devcluster_status_on_a_broken_state_file_is_one_line(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    result = _invoke("devcluster", "status", "--dir", str(tmp_path))
    assert result.exit_code == 1 and f"cannot read {tmp_path / 'state.json'}" in result.output
    assert "Traceback" not in result.output
