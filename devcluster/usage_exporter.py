"""A synthetic vGPU usage exporter for the end-to-end tests and the demo.

Serves the two gauges a vGPU exporter reports, one series per (namespace,
pod, GPU), with the names :mod:`tfsched.autoscale.prometheus` queries:

* ``GET /metrics`` — Prometheus text exposition format (0.0.4);
* ``PUT /usage`` — set one series, or a list of them:
  ``{"namespace": "ns", "pod": "p", "gpu": "gpu-0", "tflops": 1.5, "vram": "2Gi"}``.
  ``tflops``/``vram`` are numbers or quantities; an absent or ``null`` one is
  not exported for that series (at least one is required).  A PUT replaces
  the series' values;
* ``DELETE /usage`` — with ``{"namespace", "pod"}`` (and optionally ``gpu``)
  clears that pod's (or GPU's) series; with no body clears everything;
* ``GET /usage`` — the current series as JSON; ``GET /healthz`` — ``ok``.

Bad requests get HTTP 400 with ``{"error": ...}`` naming the field.

Run: ``python -m tfsched.devcluster.usage_exporter --port P [--host 127.0.0.1]``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tfsched.autoscale.matrix import GPU_LABEL, NAMESPACE_LABEL, POD_LABEL
from tfsched.autoscale.prometheus import TFLOPS_METRIC, VRAM_METRIC
from tfsched.clustermodel.quantity import QuantityError, parse_quantity
from tfsched.devcluster import processes
from tfsched.devcluster.processes import ProcessRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TFLOPS_HELP = "TFLOPS a worker uses on one GPU."
VRAM_HELP = "Bytes of GPU memory a worker uses on one GPU."
LABELS = (NAMESPACE_LABEL, POD_LABEL, GPU_LABEL)

SeriesKey = tuple[str, str, str]  # namespace, pod, gpu


@dataclass(frozen=True)
class Usage:
    tflops: float | None
    vram: float | None


class RequestError(ValueError):
    """A bad control request; the message names the field."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """Go-parsable sample value; whole numbers without a fraction (VRAM bytes read naturally)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class UsageStore:
    """The usage the exporter reports; tests in the same process may drive it directly."""

    def __init__(self) -> None:
        self._series: dict[SeriesKey, Usage] = {}

    def set(self, namespace: str, pod: str, gpu: str, tflops: float | None, vram: float | None) -> None:
        self._series[(namespace, pod, gpu)] = Usage(tflops, vram)

    def delete(self, namespace: str | None = None, pod: str | None = None, gpu: str | None = None) -> int:
        """Remove matching series (``None`` matches anything); returns how many."""
        doomed = [
            key
            for key in self._series
            if (namespace is None or key[0] == namespace)
            and (pod is None or key[1] == pod)
            and (gpu is None or key[2] == gpu)
        ]
        for key in doomed:
            del self._series[key]
        return len(doomed)

    def items(self) -> list[tuple[SeriesKey, Usage]]:
        return sorted(self._series.items())

    def render(self) -> str:
        """Both gauges in the text exposition format, series sorted by labels."""
        lines: list[str] = []
        items = self.items()
        for metric, help_text, field in (
            (TFLOPS_METRIC, TFLOPS_HELP, "tflops"),
            (VRAM_METRIC, VRAM_HELP, "vram"),
        ):
            lines.append(f"# HELP {metric} {help_text}")
            lines.append(f"# TYPE {metric} gauge")
            for key, usage in items:
                value = getattr(usage, field)
                if value is None:
                    continue
                labels = ",".join(f'{name}="{_escape(part)}"' for name, part in zip(LABELS, key, strict=True))
                lines.append(f"{metric}{{{labels}}} {format_value(value)}")
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Request validation
# ---------------------------------------------------------------------------


def _optional_label(entry: dict[str, Any], name: str, where: str) -> str | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise RequestError(f"{where}{name}: expected a non-empty string, got {value!r}")
    return value


def _label(entry: dict[str, Any], name: str, where: str) -> str:
    value = _optional_label(entry, name, where)
    if value is None:
        raise RequestError(f"{where}{name}: required")
    return value


def _amount(entry: dict[str, Any], name: str, where: str) -> float | None:
    value = entry.get(name)
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except QuantityError as exc:
        raise RequestError(f"{where}{name}: {exc}") from None


def _parse_entry(entry: Any, where: str) -> tuple[SeriesKey, Usage]:
    if not isinstance(entry, dict):
        raise RequestError(f"{where}body: expected a JSON object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - {NAMESPACE_LABEL, POD_LABEL, GPU_LABEL, "tflops", "vram"})
    if unknown:
        raise RequestError(f"{where}{unknown[0]}: unknown field")
    namespace = _label(entry, NAMESPACE_LABEL, where)
    pod = _label(entry, POD_LABEL, where)
    gpu = _label(entry, GPU_LABEL, where)
    tflops = _amount(entry, "tflops", where)
    vram = _amount(entry, "vram", where)
    if tflops is None and vram is None:
        raise RequestError(f"{where}tflops: required (or vram); at least one of them")
    return (namespace, pod, gpu), Usage(tflops, vram)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"body: invalid JSON: {exc}") from None


def _bad_request(exc: RequestError) -> web.Response:
    return web.json_response({"error": str(exc)}, status=400)


# ---------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------

STORE_KEY: web.AppKey[UsageStore] = web.AppKey("usage_store", UsageStore)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STORE_KEY].render().encode()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _put_usage(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    try:
        body = await _json_body(request)
        if body is None:
            raise RequestError("body: required")
        # Validate everything first: a bad entry in a list changes nothing.
        if isinstance(body, list):
            parsed = [_parse_entry(entry, f"[{index}].") for index, entry in enumerate(body)]
        else:
            parsed = [_parse_entry(body, "")]
    except RequestError as exc:
        return _bad_request(exc)
    for (namespace, pod, gpu), usage in parsed:
        store.set(namespace, pod, gpu, usage.tflops, usage.vram)
    return web.json_response({"set": len(parsed)})


async def _delete_usage(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    try:
        body = await _json_body(request)
        if body is None:
            return web.json_response({"deleted": store.delete()})
        if not isinstance(body, dict):
            raise RequestError(f"body: expected a JSON object, got {type(body).__name__}")
        unknown = sorted(set(body) - {NAMESPACE_LABEL, POD_LABEL, GPU_LABEL})
        if unknown:
            raise RequestError(f"{unknown[0]}: unknown field")
        namespace = _label(body, NAMESPACE_LABEL, "")
        pod = _label(body, POD_LABEL, "")
        gpu = _optional_label(body, GPU_LABEL, "")
    except RequestError as exc:
        return _bad_request(exc)
    return web.json_response({"deleted": store.delete(namespace, pod, gpu)})


async def _get_usage(request: web.Request) -> web.Response:
    series = [
        {NAMESPACE_LABEL: ns, POD_LABEL: pod, GPU_LABEL: gpu, "tflops": usage.tflops, "vram": usage.vram}
        for (ns, pod, gpu), usage in request.app[STORE_KEY].items()
    ]
    return web.json_response({"series": series})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(store: UsageStore | None = None) -> web.Application:
    app = web.Application()
    app[STORE_KEY] = store if store is not None else UsageStore()
    app.router.add_get("/metrics", _metrics)
    app.router.add_put("/usage", _put_usage)
    app.router.add_delete("/usage", _delete_usage)
    app.router.add_get("/usage", _get_usage)
    app.router.add_get("/healthz", _healthz)
    return app


def start_usage_exporter(port: int, log: Path, *, host: str = "127.0.0.1", timeout: float = 15.0) -> ProcessRecord:
    """Run the exporter as its own process and wait until it answers ``/healthz``."""
    argv = [sys.executable, "-m", "tfsched.devcluster.usage_exporter", "--host", host, "--port", str(port)]
    return processes.start_until_ready("usage-exporter", argv, log, f"http://{host}:{port}/healthz", timeout=timeout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tfsched.devcluster.usage_exporter", description="synthetic vGPU usage"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # No access log: Prometheus scrapes every second.
    web.run_app(
        create_app(), host=args.host, port=args.port, access_log=None, print=lambda text: print(text, flush=True)
    )


if __name__ == "__main__":
    main()
