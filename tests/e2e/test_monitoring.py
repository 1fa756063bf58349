"""The chart's dashboard and alert rules against a real Prometheus scraping the running tfsched.

Prometheus loads ``files/alerts.yaml`` as a rule file (every rule must load and
evaluate without error) and scrapes the local control plane's tfsched; every
dashboard query must parse and return series, and every metric an alert watches
must exist. Traffic first: a workload's pods scheduled through the real
kube-scheduler and one autoscale interval, so the series have values.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tfsched.devcluster import processes
from tfsched.devcluster.prometheus import start_prometheus

from .conftest import Cluster, set_usage, tick
from .test_autoscale import DECLARED, deployment, running, workload

pytestmark = pytest.mark.e2e

FILES = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tfsched" / "files"
PROMQL_FUNCTIONS_AND_KEYWORDS = {"vector"}


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _query(prometheus: str, expr: str) -> dict:
    return _get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((FILES / "dashboard.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((FILES / "alerts.yaml").read_text())["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metrics an expression reads (names such as tfsched_... and process_...)."""
    return set(re.findall(r"\b((?:tfsched|process|python)_[a-z_]+)\b", expr)) - PROMQL_FUNCTIONS_AND_KEYWORDS


def test_every_dashboard_query_and_alert_rule_works_on_real_prometheus(cluster: Cluster, namespace: str, tmp_path):
    cluster.apply(
        workload(namespace, "mon", target=""),
        deployment(namespace, "mon", 2, DECLARED),
    )
    pods = running(cluster, namespace, 2)
    for pod in pods:
        set_usage(cluster, namespace, pod["metadata"]["name"], tflops=10, vram=2 * 2**30)
    extender = urllib.parse.urlparse(cluster.dev.extender_url).netloc
    port = processes.free_port()
    prometheus = f"http://127.0.0.1:{port}"
    record = start_prometheus(
        tmp_path,
        [],
        port=port,
        jobs={"tfsched": [extender]},
        rule_files=[FILES / "alerts.yaml"],
        log=tmp_path / "prometheus.log",
    )
    try:
        tick(cluster)  # an autoscale interval: the autoscaler's series get values
        queries = dashboard_queries()
        rules = alert_rules()
        assert len(queries) >= 20 and len(rules) >= 8

        def scraped_twice() -> bool:
            # rate() needs two samples of each series; the autoscaler's ran once already.
            result = _query(prometheus, "count_over_time(tfsched_build_info[1m])")["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) >= 3

        cluster.wait(scraped_twice, timeout=30, what="Prometheus to scrape tfsched three times")
        tick(cluster)  # seconds after the first: its usage query is due (the first may not have been)
        workload_series = f'tfsched_autoscaler_workload_metrics_available{{namespace="{namespace}"}}'
        cluster.wait(
            lambda: _query(prometheus, workload_series)["data"]["result"],
            timeout=30,
            what="Prometheus to scrape the workload's metrics-availability series",
        )

        def rules_evaluated() -> list[dict] | None:
            loaded = [r for g in _get(f"{prometheus}/api/v1/rules")["data"]["groups"] for r in g["rules"]]
            return (
                loaded
                if len(loaded) == len(rules)
                and all(
                    r.get("lastEvaluation", "").startswith("2") and not r["lastEvaluation"].startswith("0001")
                    for r in loaded
                )
                else None
            )

        loaded = cluster.wait(rules_evaluated, timeout=30, what="every alert rule to be evaluated")
        assert {r["name"] for r in loaded} == {r["alert"] for r in rules}
        assert [(r["name"], r["lastError"]) for r in loaded if r["health"] != "ok"] == []

        empty = []
        for title, expr in queries:
            answer = _query(prometheus, expr)
            assert answer["status"] == "success", (title, expr, answer)
            if not answer["data"]["result"]:
                empty.append((title, expr))
        assert empty == [], "dashboard queries with no series"

        missing = []
        for rule in rules:
            assert _query(prometheus, rule["expr"])["status"] == "success", rule["alert"]
            for name in metric_names(rule["expr"]):
                if not _query(prometheus, f'count({{__name__="{name}"}})')["data"]["result"]:
                    missing.append((rule["alert"], name))
        assert missing == [], "alerts watching metrics tfsched does not export"

        # The healthy cluster fires none of the critical alerts.
        firing = _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
        assert [a["labels"]["alertname"] for a in firing if a["labels"].get("severity") == "critical"] == []
    finally:
        processes.stop(record)
