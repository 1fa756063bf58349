"""scoreInFilter through the real kube-scheduler: rendered by the chart without the
prioritize verb, tfsched's filter alone decides among the nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tfsched.devcluster import chart

from .conftest import Cluster, make_pod
from .test_scheduling import assert_no_overcommit, wait_bound

pytestmark = pytest.mark.e2e

PRIORITIZE_CALLS = "tfsched_extender_request_duration_seconds_count"


def test_filter_alone_packs_pods_when_prioritize_is_not_configured(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    dev = cluster.dev
    rendering = chart.scheduler_config(
        chart.render({"topology": "extendScheduler", "scheduler": {"scoreInFilter": True}})
    )
    assert [set(e) & {"filterVerb", "prioritizeVerb", "bindVerb"} for e in rendering["extenders"]] == [
        {"filterVerb", "bindVerb"}
    ]
    config = yaml.safe_load(dev.tfsched_config.read_text())
    config["scheduling"]["scoreInFilter"] = True
    path = tmp_path / "tfsched-score-in-filter.yaml"
    path.write_text(yaml.safe_dump(config))
    quiet = dict(say=lambda *_: None)
    with cluster.without("tfsched", "kube-scheduler"):
        started = [dev.start_extender(**quiet, name="tfsched-score-in-filter", config=path)]
        try:
            started.append(dev.start_scheduler(**quiet, name="kube-scheduler-score-in-filter", config=rendering))
            before = cluster.extender_metric(PRIORITIZE_CALLS, 'verb="prioritize"')
            filters = cluster.extender_metric(PRIORITIZE_CALLS, 'verb="filter"')
            nodes = []
            for i in range(4):
                # One at a time: each sees the previous one's GPUs in use.
                cluster.apply(make_pod(f"small-{i}", namespace, tflops="10", vram="2Gi"))
                pods = wait_bound(cluster, namespace, i + 1)
                nodes.append({p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}[f"small-{i}"])
            # The default mode is compact at node level: once the first is placed, its node
            # ranks first for the rest. kube-scheduler's own scores alone would spread them.
            assert len(set(nodes)) == 1, nodes
            assert cluster.extender_metric(PRIORITIZE_CALLS, 'verb="prioritize"') == before
            assert cluster.extender_metric(PRIORITIZE_CALLS, 'verb="filter"') >= filters + 4
            assert_no_overcommit(cluster)
        finally:
            for record in reversed(started):
                dev.stop_component(record.name)
