"""`tfsched demo`: a step that does not happen fails the demo, saying which; the before/after table.

The cluster is a fake (pods and a workload status behind ``kubectl``), the waiting is the
real ``wait_until`` with a short timeout, and the command is the real CLI.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tfsched.cli import main
from tfsched.clustermodel.annotations import GPU_IDS, TFLOPS_REQUEST, VRAM_REQUEST
from tfsched.devcluster import cli as devcluster_cli
from tfsched.devcluster import cluster as cluster_module
from tfsched.devcluster.demo import (
    DemoFailed,
    Placement,
    placement_table,
    run_demo,
    tfsched_command,
    use_colour,
)
from tfsched.devcluster.processes import wait_until


def _pod(name: str, app: str, node: str = "", gpus: str = "", tflops: str = "20", vram: str = "10Gi") -> dict:
    notes = {TFLOPS_REQUEST: tflops, VRAM_REQUEST: vram}
    if gpus:
        notes[GPU_IDS] = gpus
    return {"metadata": {"name": name, "labels": {"app": app}, "annotations": notes}, "spec": {"nodeName": node}}


class FakeCluster:
    """Demo pods and the demo workload's status; ``autoscaler`` says whether usage leads to a resize."""

    def __init__(self, *, placed: bool = True, autoscaler: bool = True) -> None:
        node = "gpu-0" if placed else ""
        self.pods = [
            _pod("demo-inference-a", "demo-inference", node, "gpu-0-0" if placed else ""),
            _pod("demo-inference-b", "demo-inference", node, "gpu-0-1" if placed else ""),
            _pod("demo-training-a", "demo-training", node, "gpu-0-2,gpu-0-3" if placed else "", tflops="40"),
        ]
        self.status: dict[str, str] = {}
        self.autoscaler = autoscaler
        self.usage: list[str] = []
        self.applied = ""

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        if args[:2] == ("apply", "-f"):
            self.applied = args[2]
            out = ""
        elif args[:2] == ("get", "pods"):
            out = json.dumps({"items": self.pods})
        elif args[:3] == ("get", "tfw", "demo-inference"):
            path = args[-1].removeprefix("jsonpath={").removesuffix("}")
            key = "message" if "conditions" in path else "applied"
            out = self.status.get(key, "")
        else:
            raise AssertionError(f"unexpected kubectl {args}")
        return subprocess.CompletedProcess(["kubectl", *args], 0, out, "")

    def put_usage(self, pods: list[str], usage: dict[str, float]) -> None:
        self.usage = pods
        if self.autoscaler:  # what the real autoscaler does: resize in place, then report
            for pod in self.pods:
                if pod["metadata"]["name"] in pods:
                    pod["metadata"]["annotations"][TFLOPS_REQUEST] = "4764m"
                    pod["metadata"]["annotations"][VRAM_REQUEST] = "2210Mi"
            self.status = {"message": "TFLOPS scaled down due to (20) above upper bound (9)", "applied": str(len(pods))}


def _run(cluster: FakeCluster) -> list[str]:
    out: list[str] = []

    def wait(check, seconds: float, what: str) -> None:
        wait_until(check, timeout=seconds, what=what, interval=0.01)

    run_demo(cluster, timeout=0.1, wait=wait, echo=out.append, say=lambda _: None, colour=False)
    return out


def test_the_demo_shows_before_and_after_when_every_step_happens():
    cluster = FakeCluster()
    out = "\n".join(_run(cluster))
    assert cluster.usage == ["demo-inference-a", "demo-inference-b"]  # only the autoscaled workload's pods
    after = out.split("Before → after the autoscaler:\n", 1)[1].splitlines()
    assert after[0].split() == ["POD", "NODE", "GPUS", "TFLOPS", "VRAM"]
    assert after[1].split() == ["demo-inference-a", "gpu-0", "gpu-0-0", "20", "→", "4764m", "10Gi", "→", "2210Mi"]
    assert after[3].split() == ["demo-training-a", "gpu-0", "gpu-0-2,gpu-0-3", "40", "10Gi"]  # untouched
    assert "RecommendationProvided: TFLOPS scaled down due to (20) above upper bound (9)" in out


def test_pods_never_placed_fail_the_demo_saying_so():
    with pytest.raises(DemoFailed, match=r"the demo pods were not placed within 0s \(0 of 3 on a node\)"):
        _run(FakeCluster(placed=False))


def test_no_recommendation_applied_fails_the_demo_saying_so():
    with pytest.raises(DemoFailed) as info:
        _run(FakeCluster(autoscaler=False))
    assert str(info.value) == (
        "the autoscaler did not apply a recommendation within 0s (appliedRecommendedReplicas 0 of 2; "
        "no RecommendationProvided condition); see `kubectl describe tfw demo-inference` and the tfsched log"
    )


def test_the_demo_command_exits_non_zero_on_a_timeout(tmp_path: Path, monkeypatch):
    (tmp_path / "state.json").write_text("{}")  # 'up' already ran: the command skips it
    fake = FakeCluster(autoscaler=False)
    fake.usage_url = "http://unused"
    monkeypatch.setattr(cluster_module.DevCluster, "load", classmethod(lambda cls, root: fake))
    monkeypatch.setattr(devcluster_cli, "_put_usage", lambda url, pods, usage: fake.put_usage(pods, usage))
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path), "--timeout", "1"])
    assert result.exit_code == 1, result.output
    assert fake.applied.endswith("examples/demo-workload.yaml")
    assert "Placed by kube-scheduler through tfsched:" in result.output
    assert "Error: demo failed: the autoscaler did not apply a recommendation within 1s" in result.output
    assert f"devcluster down --dir {tmp_path} stops it." in result.output
    assert "Traceback" not in result.output


def test_colour_marks_only_changes_and_keeps_columns_aligned():
    before = [Placement("p", "demo-inference", "n", "g", "20", "10Gi")]
    after = [Placement("p", "demo-inference", "n", "g", "4764m", "10Gi")]
    plain = placement_table(before, after, colour=False)
    coloured = placement_table(before, after, colour=True)
    assert "\x1b" not in plain
    assert coloured.count("\x1b[1;32m") == 1 and "\x1b[1;32m20 → 4764m\x1b[0m" in coloured
    assert coloured.replace("\x1b[1;32m", "").replace("\x1b[0m", "") == plain


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(_Stream(True)) and not use_colour(_Stream(False))
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(_Stream(True))


def test_the_closing_hint_names_a_command_that_runs(tmp_path: Path, monkeypatch):
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    script = venv_bin / "tfsched"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert tfsched_command(str(script), cwd=tmp_path) == ".venv/bin/tfsched"
    hint = devcluster_cli.closing_hint(tmp_path / "dc", ".venv/bin/tfsched")
    assert f'eval "$(.venv/bin/tfsched devcluster env --dir {tmp_path / "dc"})"' in hint
    assert f"export PATH={Path.cwd() / '.venv' / 'bin'}:$PATH" in hint
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert tfsched_command(str(script), cwd=tmp_path) == "tfsched"
    assert "export PATH" not in devcluster_cli.closing_hint(tmp_path / "dc", "tfsched")
