"""The autoscaler's metrics and its one log line per action, against the fake API."""

from __future__ import annotations

import logging
from datetime import timedelta

from tfsched.clustermodel.cache import Kind
from tfsched.kubeapi.client import KubeApiError

from .test_controller import GiB, _setup, _usage


def _value(loop, name: str, **labels: str) -> float:
    value = loop.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_resize_in_place_is_counted_timed_and_logged(caplog):
    state, _kube, source, loop, _ = _setup()
    source.pending = _usage(4, 2 * GiB)
    with caplog.at_level(logging.INFO, logger="tfsched.autoscale"):
        await loop.tick()
    assert _value(loop, "tfsched_autoscaler_resizes_total", result="applied") == 2
    assert _value(loop, "tfsched_autoscaler_recommendations_total", changed="true") == 1
    assert _value(loop, "tfsched_autoscaler_intervals_total", result="ok") == 1
    assert _value(loop, "tfsched_autoscaler_workload_metrics_available", namespace="ns", workload="wl") == 1
    for step in ("discover", "fetch", "estimate", "reconcile", "checkpoint"):
        assert _value(loop, "tfsched_autoscaler_step_duration_seconds_count", step=step) == 1, step
    new_vram = state.cache.get(Kind.POD, "ns", "w0")["metadata"]["annotations"]["tensor-fusion.ai/vram-request"]
    lines = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("workload ns/wl: resized pod w0: TFLOPS 40 -> ")
    assert f"VRAM 8Gi -> {new_vram} (in place)" in lines[0]
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("autoscale interval:")]
    assert summary and summary[0].startswith("autoscale interval: 1 workloads, 0 failed")


async def test_no_fit_then_eviction_is_counted_and_logged(caplog):
    _state, _kube, source, loop, _ = _setup(gpu_vram="20Gi", filler_vram="10Gi")
    source.pending = _usage(40, 11 * GiB)
    with caplog.at_level(logging.INFO, logger="tfsched.autoscale"):
        await loop.tick()
    assert _value(loop, "tfsched_autoscaler_resizes_total", result="no_fit") == 1
    assert _value(loop, "tfsched_autoscaler_evictions_total", result="evicted") == 1
    assert any("pod w0 evicted to be rescheduled" in r.getMessage() for r in caplog.records)


async def test_an_eviction_a_disruption_budget_refuses_is_counted_as_refused():
    _state, kube, source, loop, _ = _setup(gpu_vram="20Gi", filler_vram="10Gi")
    create = kube.create

    async def refuse_evictions(path, body):
        if path.endswith("/eviction"):
            raise KubeApiError(
                429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget."
            )
        return await create(path, body)

    kube.create = refuse_evictions
    source.pending = _usage(40, 11 * GiB)
    await loop.tick()
    assert _value(loop, "tfsched_autoscaler_evictions_total", result="refused") == 1
    assert _value(loop, "tfsched_autoscaler_evictions_total", result="evicted") == 0


async def test_a_prometheus_outage_is_counted_and_marks_the_workload():
    _state, _kube, source, loop, clock = _setup()
    source.pending = _usage(4, 2 * GiB)
    await loop.tick()
    clock.moment += timedelta(minutes=5)  # the next fetch is due
    source.error = "cannot connect to Prometheus at http://x: Connection refused"
    await loop.tick()
    assert _value(loop, "tfsched_autoscaler_prometheus_errors_total") == 1
    assert _value(loop, "tfsched_autoscaler_workload_metrics_available", namespace="ns", workload="wl") == 0


def test_gone_workloads_lose_their_series():
    from tfsched.autoscale.metrics import AutoscaleMetrics

    metrics = AutoscaleMetrics()
    metrics.workloads_seen({("ns", "a"), ("ns", "b")})
    metrics.workload_metrics.labels("ns", "a").set(1)
    metrics.workload_metrics.labels("ns", "b").set(0)
    metrics.workloads_seen({("ns", "a")})
    assert (
        metrics.registry.get_sample_value(
            "tfsched_autoscaler_workload_metrics_available", {"namespace": "ns", "workload": "b"}
        )
        is None
    )
    assert (
        metrics.registry.get_sample_value(
            "tfsched_autoscaler_workload_metrics_available", {"namespace": "ns", "workload": "a"}
        )
        == 1
    )
