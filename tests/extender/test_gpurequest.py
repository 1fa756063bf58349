from __future__ import annotations

import pytest

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.gpurequest import (
    RequestError,
    apply_override,
    is_gpu_pod,
    parse_gpu_request,
)
from tfsched.clustermodel.workload import workload_override

GiB = 2**30


def test_request_defaults_to_limit_and_back():
    r = parse_gpu_request({ann.TFLOPS_LIMIT: "40", ann.VRAM_REQUEST: "10Gi"})
    assert (r.tflops_request, r.tflops_limit) == (40, 40)
    assert (r.vram_request, r.vram_limit) == (10 * GiB, 10 * GiB)
    assert r.gpu_count == 1


def test_tflops_wins_over_compute_percent():
    r = parse_gpu_request({ann.TFLOPS_REQUEST: "20", ann.COMPUTE_PERCENT_REQUEST: "50"})
    assert r.tflops_request == 20 and r.percent_request == 0


def test_compute_percent_alone():
    r = parse_gpu_request({ann.COMPUTE_PERCENT_REQUEST: "25", ann.VRAM_REQUEST: "1Gi"})
    assert r.percent_request == 25 and r.tflops_on(312) == pytest.approx(78)


@pytest.mark.parametrize(
    ("annotations", "names"),
    [
        ({ann.VRAM_REQUEST: "ten"}, ann.VRAM_REQUEST),
        ({ann.TFLOPS_REQUEST: "-3"}, ann.TFLOPS_REQUEST),
        ({ann.GPU_COUNT: "0", ann.VRAM_REQUEST: "1Gi"}, ann.GPU_COUNT),
        ({ann.GPU_COUNT: "129", ann.VRAM_REQUEST: "1Gi"}, ann.GPU_COUNT),
        ({ann.GPU_COUNT: "two", ann.VRAM_REQUEST: "1Gi"}, ann.GPU_COUNT),
        ({ann.TFLOPS_REQUEST: "50", ann.TFLOPS_LIMIT: "40"}, ann.TFLOPS_REQUEST),
        ({ann.COMPUTE_PERCENT_LIMIT: "150"}, ann.COMPUTE_PERCENT_LIMIT),
        ({ann.GPU_INDICES: "0,x", ann.VRAM_REQUEST: "1Gi"}, ann.GPU_INDICES),
    ],
)
def test_bad_annotations_name_the_annotation(annotations, names):
    with pytest.raises(RequestError, match=names):
        parse_gpu_request(annotations)


def test_is_gpu_pod():
    assert not is_gpu_pod(None)
    assert not is_gpu_pod({"app": "x", ann.WORKLOAD: "w"})
    assert is_gpu_pod({ann.VRAM_LIMIT: "1Gi"})


def _workload(target="all", enable=True, rec=None, cron=None):
    wl = {
        "spec": {"autoScalingConfig": {"autoSetResources": {"enable": enable, "targetResource": target}}},
        "status": {},
    }
    if rec:
        wl["status"]["recommendation"] = rec
    if cron:
        wl["status"]["activeCronScalingRule"] = cron
    return wl


REC = {"requests": {"tflops": "13", "vram": "1Gi"}, "limits": {"tflops": "26", "vram": "2Gi"}}


def test_recommendation_applies_to_targeted_resources_only():
    declared = parse_gpu_request({ann.TFLOPS_REQUEST: "40", ann.VRAM_REQUEST: "10Gi"})
    eff = apply_override(declared, workload_override(_workload("tflops", rec=REC), {}))
    assert eff.tflops_request == 13 and eff.tflops_limit == 26
    assert eff.vram_request == 10 * GiB
    eff_all = apply_override(declared, workload_override(_workload("all", rec=REC), {}))
    assert eff_all.vram_request == GiB and eff_all.vram_limit == 2 * GiB


def test_recommend_only_changes_nothing():
    declared = parse_gpu_request({ann.TFLOPS_REQUEST: "40", ann.VRAM_REQUEST: "10Gi"})
    for wl in (_workload("", rec=REC), _workload("all", enable=False, rec=REC)):
        assert apply_override(declared, workload_override(wl, {})) == declared


def test_pod_annotations_enable_when_workload_has_no_config():
    declared = parse_gpu_request({ann.TFLOPS_REQUEST: "40", ann.VRAM_REQUEST: "10Gi"})
    wl = {"status": {"recommendation": REC}}
    pod_ann = {ann.AUTO_RESOURCES: "true", ann.AUTO_SCALE_TARGET_RESOURCE: "vram"}
    eff = apply_override(declared, workload_override(wl, pod_ann))
    assert eff.vram_request == GiB and eff.tflops_request == 40


def test_cron_rule_is_a_floor_over_the_recommendation():
    declared = parse_gpu_request({ann.TFLOPS_REQUEST: "40", ann.VRAM_REQUEST: "10Gi"})
    cron = {
        "name": "peak",
        "desiredResources": {"requests": {"tflops": "44", "vram": "5Gi"}, "limits": {"tflops": "99", "vram": "10Gi"}},
    }
    eff = apply_override(declared, workload_override(_workload("all", rec=REC, cron=cron), {}))
    assert (eff.tflops_request, eff.vram_request) == (44, 5 * GiB)
    assert (eff.tflops_limit, eff.vram_limit) == (99, 10 * GiB)


@pytest.mark.parametrize(
    ("raw", "models"),
    [
        ("", ()),
        ("A100", ("A100",)),
        ("V100M16,V100M32", ("V100M16", "V100M32")),
        (" V100M16 , V100M32 ,, V100M16 ", ("V100M16", "V100M32")),
    ],
)
def test_gpu_model_is_one_model_or_a_comma_separated_list(raw, models):
    assert parse_gpu_request({ann.VRAM_REQUEST: "1Gi", ann.GPU_MODEL: raw}).gpu_models == models


def test_a_gpu_model_list_is_bounded():
    with pytest.raises(RequestError, match=ann.GPU_MODEL):
        parse_gpu_request({ann.VRAM_REQUEST: "1Gi", ann.GPU_MODEL: ",".join(["A100"] * 100)})


def test_equal_annotations_are_read_once_and_share_their_request():
    notes = {ann.TFLOPS_REQUEST: "10", ann.VRAM_REQUEST: "4Gi", ann.GPU_IDS: "a-gpu-0", "other": "x"}
    first = parse_gpu_request(notes)
    again = parse_gpu_request({**notes, ann.GPU_IDS: "b-gpu-1", "other": "y"})  # keys it does not read
    assert again is first
    assert parse_gpu_request({**notes, ann.VRAM_REQUEST: "8Gi"}).vram_request == 8 * 2**30


def test_a_cached_read_answers_as_an_uncached_one():
    # Null values, defaults and long values (never cached) read as before.
    assert parse_gpu_request({ann.TFLOPS_REQUEST: "10", ann.GPU_COUNT: None, ann.DEDICATED_GPU: None}) == (
        parse_gpu_request({ann.TFLOPS_REQUEST: "10"})
    )
    long_name = "w" * 300
    assert parse_gpu_request({ann.TFLOPS_REQUEST: "10", ann.WORKLOAD: long_name}).workload == long_name
    for _ in range(2):  # errors are raised every time, never cached away
        with pytest.raises(RequestError, match="gpu-count"):
            parse_gpu_request({ann.TFLOPS_REQUEST: "10", ann.GPU_COUNT: "0"})
