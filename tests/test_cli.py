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
    assert result.exit_code == 2 and f"kubeconfig {missing} does not exist" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    monkeypatch.setenv("KUBECONFIG", f"{missing}:{broken}")  # the first file that exists, as kubectl
    result = CliRunner().invoke(main, ["serve", "--no-autoscale", "--port", "0", "--context", "nope"])
    assert result.exit_code == 2 and f"kubeconfig {broken}:" in result.output
    assert "Traceback" not in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("tfsched, version ")
