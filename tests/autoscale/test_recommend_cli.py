"""`tfsched recommend` on synthetic traces: the seed's recommendation and message, and clean errors."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tfsched.autoscale.cli import recommend_command
from tfsched.autoscale.trace import TraceError, parse_trace, read_trace
from tfsched.cli import main
from tfsched.clustermodel.quantity import format_bytes, format_tflops, whole_mebibytes

GI = 2**30
T0 = datetime(2025, 10, 7, tzinfo=UTC)


def bucket_end(value: float, first: float) -> float:
    """End of the ×1.05 bucket holding ``value``, computed independently of the code under test."""
    bucket = int(math.log(value * 0.05 / first + 1) / math.log(1.05))
    return first * (1.05 ** (bucket + 1) - 1) / 0.05


def expected_bounds(value: float, first: float, unit: float, conf: float) -> tuple[int, int, int]:
    """(lower, target, upper) integer amounts for constant usage ``value`` with confidence ``conf``."""
    base = int(bucket_end(value, first) * unit)
    with_margin = base + int(base * 0.15)
    return int(with_margin * (1 + 0.001 / conf) ** -2), with_margin, int(with_margin * (1 + 1 / conf))


def write_trace(path: Path, tflops: float, vram: int, days: int = 2, workers: int = 2) -> Path:
    lines = ["timestamp,worker,tflops,vram"]
    for minute in range(days * 1440):
        stamp = (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines += [f"{stamp},worker-{w},{tflops},{vram}" for w in range(workers)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def low_usage_trace(tmp_path: Path) -> Path:
    # Two workers using 10 TFLOPS and 8Gi for two days, far below a 100 TFLOPS / 40Gi request.
    return write_trace(tmp_path / "usage.csv", 10.0, 8 * GI)


def test_usage_well_below_request_scales_down(low_usage_trace: Path) -> None:
    result = CliRunner().invoke(
        main, ["recommend", "--usage", str(low_usage_trace), "--current", "tflops=100/200,vram=40Gi/80Gi", "--json"]
    )
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    # 2 × 2880 samples over 2 days minus a minute: confidence = min(2879/1440, 5760/1440).
    conf = 2879 / 1440
    t_lower, t_target, t_upper = expected_bounds(10.0, 0.1, 1000.0, conf)
    v_lower, v_target, v_upper = expected_bounds(8 * GI, 1e7, 1.0, conf)
    assert status["estimates"]["tflops"] == {
        "target": format_tflops(t_target / 1000),
        "lowerBound": format_tflops(t_lower / 1000),
        "upperBound": format_tflops(t_upper / 1000),
    }
    assert status["estimates"]["vram"] == {
        "target": format_bytes(v_target),
        "lowerBound": format_bytes(v_lower),
        "upperBound": format_bytes(v_upper),
    }
    assert status["recommendation"] == {
        "requests": {"tflops": format_tflops(t_target / 1000), "vram": format_bytes(whole_mebibytes(v_target))},
        "limits": {"tflops": format_tflops(2 * t_target / 1000), "vram": format_bytes(whole_mebibytes(2 * v_target))},
    }
    # Concretely: target 11.686 TFLOPS, i.e. 10 TFLOPS of usage plus bucket rounding and the 15% margin.
    assert status["recommendation"]["requests"]["tflops"] == "11686m"
    assert status["conditions"] == [
        {
            "type": "RecommendationProvided",
            "status": "True",
            "reason": "OutOfEstimatedBound",
            "message": (
                f"TFLOPS scaled down due to (100) above upper bound ({format_tflops(t_upper / 1000)}), "
                f"VRAM scaled down due to (40Gi) above upper bound ({format_bytes(v_upper, exact=False)})"
            ),
            "lastTransitionTime": "2025-10-08T23:59:00Z",
        }
    ]
    assert status["activeCronScalingRule"] is None
    assert status["history"]["totalSamplesCount"] == 5760


def test_seed_style_scale_up(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "busy.csv", 2.0, GI, days=1, workers=1)
    result = CliRunner().invoke(
        recommend_command, ["--usage", str(trace), "--current", "tflops=1/1,vram=512Mi/1Gi", "--json"]
    )
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    conf = 1439 / 1440
    t_lower, t_target, _ = expected_bounds(2.0, 0.1, 1000.0, conf)
    v_lower, v_target, _ = expected_bounds(GI, 1e7, 1.0, conf)
    assert status["conditions"][0]["message"] == (
        f"TFLOPS scaled up due to (1) below lower bound ({format_tflops(t_lower / 1000)}), "
        f"VRAM scaled up due to (512Mi) below lower bound ({format_bytes(v_lower, exact=False)})"
    )
    assert status["recommendation"]["requests"]["tflops"] == format_tflops(t_target / 1000)
    assert status["recommendation"]["limits"]["vram"] == format_bytes(whole_mebibytes(v_target * 2))


def test_table_output(low_usage_trace: Path) -> None:
    result = CliRunner().invoke(
        recommend_command, ["--usage", str(low_usage_trace), "--current", "tflops=100/200,vram=40Gi/80Gi"]
    )
    assert result.exit_code == 0, result.output
    assert "Usage estimates" in result.output
    assert "11686m" in result.output
    assert "Recommendation: requests tflops=11686m" in result.output
    assert "Mode: recommend only" in result.output
    assert "OutOfEstimatedBound" in result.output


def test_config_file_with_workload_and_replicas(tmp_path: Path, low_usage_trace: Path) -> None:
    config = tmp_path / "workload.yaml"
    config.write_text(
        """
apiVersion: tensor-fusion.ai/v1
kind: TensorFusionWorkload
spec:
  resources:
    requests: {tflops: "100", vram: 40Gi}
    limits: {tflops: "200", vram: 80Gi}
  autoScalingConfig:
    autoSetResources: {enable: true, targetResource: tflops}
    autoSetReplicas: {enable: true, targetTFlopsOfLimits: 20, evaluationPeriod: 10m}
"""
    )
    result = CliRunner().invoke(recommend_command, ["--usage", str(low_usage_trace), "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["recommendation"]["requests"] == {"tflops": "11686m", "vram": "40Gi"}
    # 10 TFLOPS of a 200 TFLOPS limit is 5% against a 20% target: ceil(2 × 0.25) = 1 replica.
    assert status["desiredReplicas"] == 1


def test_jsonl_trace_with_unix_seconds_and_quantities(tmp_path: Path) -> None:
    trace = tmp_path / "usage.jsonl"
    start = int(T0.timestamp())
    rows = [
        json.dumps({"timestamp": start + 60 * m, "worker": "w", "tflops": "2500m", "vram": "1Gi"}) for m in range(600)
    ]
    trace.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(recommend_command, ["--usage", str(trace), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    # No --current: the recommendation is the target itself, with no condition.
    assert status["recommendation"]["requests"]["tflops"] == status["estimates"]["tflops"]["target"]
    assert status["conditions"] == []


def test_now_ignores_later_samples(low_usage_trace: Path) -> None:
    result = CliRunner().invoke(
        recommend_command, ["--usage", str(low_usage_trace), "--now", "2025-10-07T00:09:30Z", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["history"]["totalSamplesCount"] == 20


def test_bad_rows_are_reported_with_line_numbers(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(
        "timestamp,worker,tflops,vram\n"
        "2025-10-07T00:00:00Z,w,1,1Gi\n"
        "yesterday,w,1,1Gi\n"
        "2025-10-07T00:02:00Z,,1,1Gi\n"
        "2025-10-07T00:03:00Z,w,fast,1Gi\n"
        "2025-10-07T00:04:00,w,1,1Gi\n"
        "2025-10-07T00:05:00Z,w,1\n"
    )
    result = CliRunner().invoke(recommend_command, ["--usage", str(trace)])
    assert result.exit_code == 2
    reported = {
        int(row.split(":")[0].split()[1]): row for row in result.output.splitlines() if row.strip().startswith("line ")
    }
    expected = {3: "bad timestamp", 4: "missing worker", 5: "bad tflops", 6: "needs a zone", 7: "expected 4 fields"}
    assert set(reported) == set(expected)
    for line, text in expected.items():
        assert text in reported[line]
    with pytest.raises(TraceError) as info:
        read_trace(trace)
    assert [line for line, _ in info.value.errors] == [3, 4, 5, 6, 7]


def test_bad_jsonl_rows(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as info:
        parse_trace('{"timestamp": 1, "worker": "w", "tflops": 1, "vram": 1}\nnot json\n[1]\n', fmt="jsonl")
    assert [line for line, _ in info.value.errors] == [2, 3]


def test_missing_header_columns(tmp_path: Path) -> None:
    trace = tmp_path / "x.csv"
    trace.write_text("time,worker,tflops\n1,w,1\n")
    result = CliRunner().invoke(recommend_command, ["--usage", str(trace)])
    assert result.exit_code == 2
    assert "line 1: CSV header must name" in result.output and "missing timestamp, vram" in result.output


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(recommend_command, ["--usage", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "cannot read" in result.output and "No such file" in result.output
    assert "Traceback" not in result.output
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,worker,tflops,vram\n")
    result = CliRunner().invoke(recommend_command, ["--usage", str(empty)])
    assert result.exit_code == 2 and "no samples" in result.output
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = CliRunner().invoke(recommend_command, ["--usage", str(binary)])
    assert result.exit_code == 2 and "not UTF-8" in result.output


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--current", "tflops=abc/1"], "tflops: invalid quantity"),
        (["--current", "gpu=1/1"], "expected tflops=REQ/LIM"),
        (["--now", "tomorrow"], "bad timestamp"),
    ],
)
def test_bad_options_name_the_problem(low_usage_trace: Path, args: list[str], text: str) -> None:
    result = CliRunner().invoke(recommend_command, ["--usage", str(low_usage_trace), *args])
    assert result.exit_code == 2
    assert text in result.output


def test_bad_config_names_the_field(tmp_path: Path, low_usage_trace: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("autoScalingConfig:\n  autoSetResources:\n    targetVramPercentile: 2\n")
    result = CliRunner().invoke(recommend_command, ["--usage", str(low_usage_trace), "--config", str(config)])
    assert result.exit_code == 2
    assert (
        "autoScalingConfig.autoSetResources.targetVramPercentile: percentile 2 must be between 0 and 1" in result.output
    )
    config.write_text("autoSetResources: [1, 2\n")
    result = CliRunner().invoke(recommend_command, ["--usage", str(low_usage_trace), "--config", str(config)])
    assert result.exit_code == 2 and f"{config}:2:1: invalid YAML: while parsing a flow sequence" in result.output


def _recommend(trace: Path, config: Path):
    return CliRunner().invoke(main, ["recommend", "--usage", str(trace), "--config", str(config)])


def test_misspelt_config_keys_are_errors_listing_the_accepted_ones(tmp_path: Path, low_usage_trace: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "autoScalingConfig:\n  autoSetResources:\n    targetTflopsPercentil: 0.8\n    targetVramPercentile: 2\n"
        "  cronScalingRules:\n  - {name: x, strat: '0 9 * * *'}\nresourcse: {}\n"
    )
    result = _recommend(low_usage_trace, config)
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.splitlines()
    assert "Error: Invalid value for --config: 4 problems:" in lines
    assert f"{config}: resourcse: unknown field; accepted: autoScalingConfig, resources" in lines
    assert (
        f"{config}: autoScalingConfig.autoSetResources.targetVramPercentile: percentile 2 must be between 0 and 1"
        in lines
    )
    assert any(
        line.startswith(
            f"{config}: autoScalingConfig.autoSetResources.targetTflopsPercentil: unknown field; accepted: "
        )
        and "targetTflopsPercentile" in line
        for line in lines
    )
    assert f"{config}: autoScalingConfig.cronScalingRules.0.strat: unknown field; accepted: " in result.output
    # A whole workload: its other spec fields are the workload's, but the autoscaling config is still checked.
    config.write_text("kind: TensorFusionWorkload\nspec:\n  replicas: 2\n  autoScalingConfig: {autoSetReplica: {}}\n")
    result = _recommend(low_usage_trace, config)
    assert result.exit_code == 2
    assert (
        f"{config}: spec.autoScalingConfig.autoSetReplica: unknown field; accepted: autoSetResources," in result.output
    )


def test_newer_tensorfusion_names_are_synonyms(tmp_path: Path, low_usage_trace: Path) -> None:
    ours, theirs = tmp_path / "ours.yaml", tmp_path / "theirs.yaml"
    ours.write_text("autoSetResources: {targetTflopsPercentile: 0.5, requestMarginFraction: 0.3}\n")
    theirs.write_text("autoSetResources: {targetComputePercentile: '0.5', marginFraction: '0.3'}\n")
    a = CliRunner().invoke(main, ["recommend", "--usage", str(low_usage_trace), "--config", str(ours), "--json"])
    b = CliRunner().invoke(main, ["recommend", "--usage", str(low_usage_trace), "--config", str(theirs), "--json"])
    assert a.exit_code == 0 and b.exit_code == 0
    assert json.loads(a.output)["estimates"] == json.loads(b.output)["estimates"]
    default = CliRunner().invoke(main, ["recommend", "--usage", str(low_usage_trace), "--json"])
    assert json.loads(default.output)["estimates"] != json.loads(b.output)["estimates"]  # the synonyms took effect
    theirs.write_text("autoSetResources: {marginFraction: 0.3, requestMarginFraction: 0.2}\n")
    result = _recommend(low_usage_trace, theirs)
    assert result.exit_code == 2
    assert (
        f"{theirs}: autoSetResources: 'marginFraction' and 'requestMarginFraction' both set requestMarginFraction: "
        "give one" in result.output
    )


def test_table_fits_80_columns_with_vram_in_mi_and_notes_short_history(tmp_path: Path) -> None:
    lines = ["timestamp,worker,tflops,vram"]
    lines += [f"2025-10-07T00:{m:02d}:00Z,w0,10,8589934592" for m in range(10)]
    trace = tmp_path / "short.csv"
    trace.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        main, ["recommend", "--usage", str(trace), "--current", "tflops=100/200,vram=40Gi/80Gi"]
    )
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "…" not in result.output  # nothing cut
    vram_row = next(line for line in result.output.splitlines() if "VRAM" in line and "│" in line)
    cells = [cell.strip() for cell in vram_row.split("│")[1:-1]]
    assert cells[1] == "40Gi" and all(cell.endswith("Mi") for cell in cells[2:5])
    # The note is one logical sentence, wrapped at 80.
    note = " ".join(result.output.split("Note: ", 1)[1].split())
    assert note == (
        "only 9m of history (10 TFLOPS samples) for confidenceInterval 24h (confidence 0.0063 < 1): "
        "the bounds are wide and the recommendation is not confident yet."
    )


def test_no_note_once_history_covers_the_confidence_interval(low_usage_trace: Path) -> None:
    result = CliRunner().invoke(main, ["recommend", "--usage", str(low_usage_trace)])
    assert result.exit_code == 0 and "Note:" not in result.output
