"""The synthetic vGPU usage exporter: exposition text, control API, bad requests."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tfsched.autoscale.prometheus import TFLOPS_METRIC, VRAM_METRIC
from tfsched.devcluster.usage_exporter import CONTENT_TYPE, UsageStore, create_app, format_value

HEADER_TFLOPS = (
    "# HELP tensor_fusion_worker_compute_tflops TFLOPS a worker uses on one GPU.\n"
    "# TYPE tensor_fusion_worker_compute_tflops gauge\n"
)
HEADER_VRAM = (
    "# HELP tensor_fusion_worker_memory_bytes Bytes of GPU memory a worker uses on one GPU.\n"
    "# TYPE tensor_fusion_worker_memory_bytes gauge\n"
)


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    return await aiohttp_client(create_app())


async def metrics_text(client: Any) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    return await response.text()


async def put(client: Any, body: Any) -> Any:
    return await client.put("/usage", json=body)


async def test_empty_exporter_serves_only_the_metric_headers(client: Any) -> None:
    assert await metrics_text(client) == HEADER_TFLOPS + HEADER_VRAM


async def test_put_sets_both_gauges_with_namespace_pod_gpu_labels(client: Any) -> None:
    response = await put(client, {"namespace": "ml", "pod": "train-0", "gpu": "gpu-1", "tflops": 12.5, "vram": "2Gi"})
    assert response.status == 200
    assert await response.json() == {"set": 1}
    response = await put(client, {"namespace": "ml", "pod": "infer-0", "gpu": "gpu-0", "tflops": "500m", "vram": 1e9})
    assert response.status == 200

    assert await metrics_text(client) == (
        HEADER_TFLOPS
        + 'tensor_fusion_worker_compute_tflops{namespace="ml",pod="infer-0",gpu="gpu-0"} 0.5\n'
        + 'tensor_fusion_worker_compute_tflops{namespace="ml",pod="train-0",gpu="gpu-1"} 12.5\n'
        + HEADER_VRAM
        + 'tensor_fusion_worker_memory_bytes{namespace="ml",pod="infer-0",gpu="gpu-0"} 1000000000\n'
        + 'tensor_fusion_worker_memory_bytes{namespace="ml",pod="train-0",gpu="gpu-1"} 2147483648\n'
    )


async def test_output_parses_with_the_reference_parser(client: Any) -> None:
    await put(
        client,
        [
            {"namespace": "a", "pod": "p", "gpu": "0", "tflops": 1.25, "vram": 1024},
            {"namespace": "a", "pod": "p", "gpu": "1", "tflops": 3, "vram": 4096},
        ],
    )
    families = {f.name: f for f in text_string_to_metric_families(await metrics_text(client))}
    assert set(families) == {TFLOPS_METRIC, VRAM_METRIC}
    assert families[TFLOPS_METRIC].type == "gauge"
    got = {(s.labels["pod"], s.labels["gpu"]): s.value for s in families[TFLOPS_METRIC].samples}
    assert got == {("p", "0"): 1.25, ("p", "1"): 3.0}
    got = {(s.labels["pod"], s.labels["gpu"]): s.value for s in families[VRAM_METRIC].samples}
    assert got == {("p", "0"): 1024.0, ("p", "1"): 4096.0}


async def test_label_values_are_escaped(client: Any) -> None:
    response = await put(client, {"namespace": "n", "pod": 'we"ird\\pod\nx', "gpu": "g", "tflops": 1})
    assert response.status == 200
    text = await metrics_text(client)
    assert 'tensor_fusion_worker_compute_tflops{namespace="n",pod="we\\"ird\\\\pod\\nx",gpu="g"} 1\n' in text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == TFLOPS_METRIC]
    assert family.samples[0].labels["pod"] == 'we"ird\\pod\nx'


async def test_put_replaces_and_an_absent_value_is_not_exported(client: Any) -> None:
    await put(client, {"namespace": "n", "pod": "p", "gpu": "g", "tflops": 4, "vram": 100})
    await put(client, {"namespace": "n", "pod": "p", "gpu": "g", "tflops": 2})
    assert await metrics_text(client) == (
        HEADER_TFLOPS + 'tensor_fusion_worker_compute_tflops{namespace="n",pod="p",gpu="g"} 2\n' + HEADER_VRAM
    )
    listing = await (await client.get("/usage")).json()
    assert listing == {"series": [{"namespace": "n", "pod": "p", "gpu": "g", "tflops": 2.0, "vram": None}]}


async def test_delete_one_pod_one_gpu_or_everything(client: Any) -> None:
    await put(
        client,
        [
            {"namespace": "n", "pod": "a", "gpu": "0", "tflops": 1},
            {"namespace": "n", "pod": "a", "gpu": "1", "tflops": 1},
            {"namespace": "n", "pod": "b", "gpu": "0", "tflops": 1},
            {"namespace": "m", "pod": "a", "gpu": "0", "tflops": 1},
        ],
    )
    response = await client.delete("/usage", json={"namespace": "n", "pod": "a", "gpu": "1"})
    assert await response.json() == {"deleted": 1}
    response = await client.delete("/usage", json={"namespace": "n", "pod": "a"})
    assert await response.json() == {"deleted": 1}
    text = await metrics_text(client)
    assert 'namespace="n",pod="a"' not in text
    assert 'namespace="n",pod="b"' in text and 'namespace="m",pod="a"' in text

    response = await client.delete("/usage")
    assert response.status == 200
    assert await response.json() == {"deleted": 2}
    assert await metrics_text(client) == HEADER_TFLOPS + HEADER_VRAM


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "invalid JSON"),
        (b"", "body: required"),
        (b"42", "body: expected a JSON object"),
        (b'{"pod": "p", "gpu": "g", "tflops": 1}', "namespace: required"),
        (b'{"namespace": "n", "gpu": "g", "tflops": 1}', "pod: required"),
        (b'{"namespace": "n", "pod": "p", "tflops": 1}', "gpu: required"),
        (b'{"namespace": "", "pod": "p", "gpu": "g", "tflops": 1}', "namespace: expected a non-empty string"),
        (b'{"namespace": "n", "pod": 7, "gpu": "g", "tflops": 1}', "pod: expected a non-empty string"),
        (b'{"namespace": "n", "pod": "p", "gpu": "g"}', "tflops: required"),
        (b'{"namespace": "n", "pod": "p", "gpu": "g", "tflops": "lots"}', "tflops: invalid quantity"),
        (b'{"namespace": "n", "pod": "p", "gpu": "g", "vram": -1}', "vram: invalid quantity"),
        (b'{"namespace": "n", "pod": "p", "gpu": "g", "vram": true}', "vram: invalid quantity"),
        (b'{"namespace": "n", "pod": "p", "gpu": "g", "tflops": 1, "color": "red"}', "color: unknown field"),
        (b'[{"namespace": "n", "pod": "p", "gpu": "g", "tflops": 1}, {"namespace": "n"}]', "[1].pod: required"),
    ],
)
async def test_bad_put_gets_400_naming_the_field_and_changes_nothing(client: Any, body: bytes, field: str) -> None:
    response = await client.put("/usage", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert field in error
    assert await metrics_text(client) == HEADER_TFLOPS + HEADER_VRAM


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{}", "namespace: required"),
        (b'{"namespace": "n"}', "pod: required"),
        (b'{"namespace": "n", "pod": "p", "gpu": 3}', "gpu: expected a non-empty string"),
        (b'{"namespace": "n", "pod": "p", "node": "x"}', "node: unknown field"),
        (b"[1]", "body: expected a JSON object"),
        (b"nope", "invalid JSON"),
    ],
)
async def test_bad_delete_gets_400_and_deletes_nothing(client: Any, body: bytes, field: str) -> None:
    await put(client, {"namespace": "n", "pod": "p", "gpu": "g", "tflops": 1})
    response = await client.delete("/usage", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert field in (await response.json())["error"]
    assert 'pod="p"' in await metrics_text(client)


async def test_healthz(client: Any) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.text() == "ok"


async def test_a_shared_store_drives_the_app_in_process(aiohttp_client: Any) -> None:
    store = UsageStore()
    client = await aiohttp_client(create_app(store))
    store.set("n", "p", "g", None, 5.0)
    assert await metrics_text(client) == (
        HEADER_TFLOPS + HEADER_VRAM + 'tensor_fusion_worker_memory_bytes{namespace="n",pod="p",gpu="g"} 5\n'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (2.0**31, "2147483648"),
        (0.1, "0.1"),
        (1e300, "1e+300"),
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text
