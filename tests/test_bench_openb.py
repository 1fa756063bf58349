"""bench/bench_openb.py's pieces that do not need a server: the published rows, the
profile each mode is replayed under, the arrivals, and the PNG it writes."""

from __future__ import annotations

import sys
from pathlib import Path

from tfsched.devcluster.binaries import REPO

sys.path.insert(0, str(REPO / "bench"))
import bench_openb as openb


def test_published_rows_are_medians_per_policy(tmp_path: Path, monkeypatch) -> None:
    header = "workload,sc_policy,tune,seed,total_gpus," + ",".join(str(k) for k in range(131))
    rows = [
        f"openb_pod_list_default,06-FGD,1.3,{seed},6212," + ",".join(str(v + k) for k in range(131))
        for seed, v in ((42, 1.0), (43, 3.0), (44, 2.0))
    ]
    rows.append("openb_pod_list_gpuspec33,06-FGD,1.3,42,6212," + ",".join("0" for _ in range(131)))
    (tmp_path / "expected_analysis_allo_discrete.csv").write_text("\n".join([header, *rows]) + "\n")
    monkeypatch.setattr(openb, "DATA", tmp_path)
    table = openb.published("default")
    assert list(table) == ["FGD"]
    assert table["FGD"][0] == 2.0 and table["FGD"][130] == 132.0


def test_the_fragmentation_aware_mode_is_replayed_with_the_score_all_pods_profile() -> None:
    assert openb.profile_for("LeastFragmentation", "auto") == openb.SCORE_ALL_PODS
    assert openb.profile_for("CompactFirst", "auto") == openb.DEFAULT_PROFILE
    assert openb.profile_for("CompactFirst", openb.SCORE_ALL_PODS) == openb.SCORE_ALL_PODS


def test_arrivals_shuffle_then_inflate_to_130_percent() -> None:
    pods = openb.load_pods(openb.DATA / "openb_pod_list_default.csv")
    capacity = 6212 * openb.GPU_MILLI
    order = openb.arrivals(pods, capacity, 42)
    assert order[: len(pods)] != pods and sorted(p.name for p in order[: len(pods)]) == sorted(p.name for p in pods)
    asked = sum(p.gpu_request for p in order)
    assert openb.TUNE * capacity <= asked < openb.TUNE * capacity + 8 * openb.GPU_MILLI
    assert [p.name for p in openb.arrivals(pods, capacity, 42)] == [p.name for p in order]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    table = {"tfsched LeastFragmentation (scoreAllPods)": [min(k, 96.0) for k in range(131)]}
    table["published FGD"] = [min(k, 95.0) for k in range(131)]
    path = tmp_path / "openb.png"
    openb.plot(table, "openb default", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
