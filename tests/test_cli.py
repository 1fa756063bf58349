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
