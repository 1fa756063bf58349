"""One autoscale loop interval for 10,000 workloads with synthetic usage (issue 4's benchmark).

Goal: ≤ 5 s per interval and ≤ 1 GB of memory.

Setup, all synthetic and deterministic (``--seed``):

- a :class:`~tfsched.allocation.state.ClusterState` built in memory: N nodes × 8 GPUs
  (312 TFLOPS, 80 GiB each), ``--workloads`` TensorFusionWorkloads with
  ``autoSetResources {enable: true, targetResource: all, confidenceInterval: 1h}``
  and 2 worker pods each, bound to GPUs with room (one pod per GPU by default),
  owned by a ReplicaSet of a Deployment (``--owner``) so the loop's scale
  lookups run;
- usage served over HTTP on loopback by ``bench/fake_prometheus.py`` (its own
  process): the two default ``query_range`` queries, one series per pod, one
  value per step; per-workload usage levels are 0.3×, 0.8× or 1.5× the
  declared request, so some workloads are resized down, some up, some left;
- the controller's clock is fixed: the first interval ends at ``T0`` and loads
  ``--history`` of history (1 h at 60 s steps = 61 points per series), each
  following interval is ``--interval`` later and fetches only the time since
  the previous fetch (2 points per series).  Answers are generated and
  serialised ahead of each timed interval (``/-/prepare``), so the timed fetch
  is the HTTP transfer plus our own parsing.

**Kubernetes writes are counted, not sent.**  The controller talks to an
in-process fake :class:`FakeKube` with the methods it calls (``get``,
``create``, ``patch``, ``request``, ``close``); it records each call and
returns immediately — a merge patch returns the merged object, a scale lookup
``replicas: 2``.  The figures therefore exclude API-server latency.  The loop
awaits its calls one after another, so add ``calls × your API latency`` to the
interval: the report prints the number of status patches, pod patches, events
and GETs per interval.  What a patch changed reaches the cache the way a watch
would deliver it: after the interval (timed apart as "watch echo"), so the next
interval sees the statuses and pod annotations it wrote.

Numba kernels are compiled (or loaded from the numba cache) before timing.

Printed: time of the first interval (history load) and of each steady-state
interval with a breakdown (discovery, HTTP, parse, ingest, reconcile loop,
checkpoint), the Kubernetes calls per interval, the response sizes, the
process's peak RSS (VmHWM) and the RSS growth due to the loop.  With
``--profile`` (or automatically when the steady-state interval exceeds the
goal) one more steady-state interval runs under cProfile and the top entries
are printed.

Run: ``.venv/bin/python bench/bench_autoscale_loop.py [--workloads 10000] [--history 1h] [--steady 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import math
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil

from tfsched.allocation.state import ClusterState
from tfsched.autoscale.bank import UsageBank
from tfsched.autoscale.loop import Autoscaler
from tfsched.autoscale.prometheus import MetricsConfig, PrometheusSource
from tfsched.autoscale.recommend import recommend
from tfsched.autoscale.settings import AutoscaleSettings
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, Resources
from tfsched.clustermodel.cache import Kind
from tfsched.clustermodel.objects import gpu_name, gpu_object, gpu_pod, node_object
from tfsched.clustermodel.times import parse_duration
from tfsched.devcluster.fakes import FakeKube, FixedClock
from tfsched.devcluster.processes import free_port

GiB = 2**30
GOAL_SECONDS = 5.0
GOAL_BYTES = 2**30
T0 = datetime(2025, 10, 1, 12, 0, tzinfo=UTC)  # end of the first interval (a whole minute)
GPUS_PER_NODE = 8
WORKERS = 2
USAGE_FACTORS = (0.3, 0.8, 1.5)  # usage level / declared request, per workload


# ---------------------------------------------------------------------------
# The synthetic cluster
# ---------------------------------------------------------------------------


def build_cluster(workloads: int, nodes: int, owner: str, seed: int) -> tuple[dict[Kind, list], list[list]]:
    """Objects for ``ClusterState.load`` and the fleet (series and usage levels) for the fake Prometheus."""
    rng = random.Random(seed)
    node_names = [f"node-{i:05d}" for i in range(nodes)]
    objects: dict[Kind, list] = {
        Kind.NODE: [node_object(n, gpus=GPUS_PER_NODE) for n in node_names],
        Kind.GPU: [gpu_object(n, j, tflops=312, vram=80 * GiB) for n in node_names for j in range(GPUS_PER_NODE)],
        Kind.WORKLOAD: [],
        Kind.POD: [],
    }
    free_t = [312.0] * (nodes * GPUS_PER_NODE)
    free_v = [80.0 * GiB] * (nodes * GPUS_PER_NODE)
    cursor = 0
    series: list[list] = []
    for w in range(workloads):
        namespace, name = f"team-{w % 50:02d}", f"wl-{w:05d}"
        tflops = rng.choice((10, 20, 40))
        vram_gi = rng.choice((4, 8, 16))
        factor = rng.choice(USAGE_FACTORS)
        resources = {"requests": {"tflops": str(tflops), "vram": f"{vram_gi}Gi"}}
        resources["limits"] = dict(resources["requests"])
        objects[Kind.WORKLOAD].append(
            {
                "apiVersion": ann.GROUP_VERSION,
                "kind": ann.WORKLOAD_KIND,
                "metadata": {"name": name, "namespace": namespace, "uid": f"wl-uid-{w}", "resourceVersion": "1"},
                "spec": {
                    "resources": resources,
                    "gpuCount": 1,
                    "autoScalingConfig": {
                        "autoSetResources": {"enable": True, "targetResource": "all", "confidenceInterval": "1h"}
                    },
                },
            }
        )
        for k in range(WORKERS):
            # The next GPU with room for this pod (round robin over the cluster).
            for _ in range(len(free_t)):
                g = cursor % len(free_t)
                cursor += 1
                if free_t[g] >= tflops and free_v[g] >= vram_gi * GiB:
                    break
            else:
                raise SystemExit("cluster too small for the workloads: raise --nodes")
            free_t[g] -= tflops
            free_v[g] -= vram_gi * GiB
            node = node_names[g // GPUS_PER_NODE]
            pod_name = f"{name}-{k}"
            pod = gpu_pod(
                pod_name,
                namespace=namespace,
                tflops=str(tflops),
                tflops_limit=str(tflops),
                vram=f"{vram_gi}Gi",
                vram_limit=f"{vram_gi}Gi",
                extra_annotations={ann.WORKLOAD: name},
                node=node,
                gpu_ids=[gpu_name(node, g % GPUS_PER_NODE)],
                uid=f"pod-uid-{w}-{k}",
            )
            pod["metadata"]["resourceVersion"] = "1"
            if owner != "none":
                kind, owner_name = ("ReplicaSet", f"{name}-rs") if owner == "deployment" else ("StatefulSet", name)
                pod["metadata"]["ownerReferences"] = [
                    {"apiVersion": "apps/v1", "kind": kind, "name": owner_name, "uid": f"owner-{w}", "controller": True}
                ]
            objects[Kind.POD].append(pod)
            level_t = tflops * factor * rng.uniform(0.9, 1.1)
            level_v = vram_gi * GiB * factor * rng.uniform(0.9, 1.1)
            series.append([namespace, pod_name, round(level_t, 3), math.floor(level_v)])
    return objects, series


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


class Timers:
    """Wall time per phase of an interval, by wrapping the autoscaler's own methods on the instance."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.counts: Counter[str] = Counter()
        self.http: list[tuple[float, float]] = []

    def reset(self) -> None:
        self.seconds.clear()
        self.counts.clear()
        self.http.clear()

    def wrap(self, obj: Any, name: str, label: str) -> None:
        inner = getattr(obj, name)
        if asyncio.iscoroutinefunction(inner):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    result = await inner(*args, **kwargs)
                finally:
                    self.seconds[label] += time.perf_counter() - began
                self.counts[label] += 1
                if label == "fetch":
                    self.counts["samples"] += len(result)
                return result

            setattr(obj, name, timed_async)
        else:

            def timed(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    result = inner(*args, **kwargs)
                finally:
                    self.seconds[label] += time.perf_counter() - began
                self.counts[label] += 1
                if label == "ingest":
                    self.counts["accepted"] += int(result)
                return result

            setattr(obj, name, timed)

    def wrap_http(self, source: PrometheusSource) -> None:
        inner = source._query_range

        async def timed(*args: Any, **kwargs: Any) -> bytes:
            began = time.perf_counter()
            body = await inner(*args, **kwargs)
            self.http.append((began, time.perf_counter()))
            self.counts["bytes"] += len(body)
            return body

        source._query_range = timed  # type: ignore[method-assign]

    def http_seconds(self) -> float:
        """Wall time with at least one query in flight (the two queries of a chunk overlap)."""
        total, reach = 0.0, -math.inf
        for began, ended in sorted(self.http):
            if ended > reach:
                total += ended - max(began, reach)
                reach = ended
        return total


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


def reset_peak_rss() -> bool:
    """Set VmHWM back to the current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def warm_up_kernels() -> float:
    """Compile (or load from numba's cache) the usage-bank kernels the loop calls."""
    began = time.perf_counter()
    bank = UsageBank()
    row = int(bank.add_workloads(1)[0])
    slot = bank.worker_slot(row, "w")
    stamps = [int((T0 + timedelta(minutes=i)).timestamp()) * 10**9 for i in range(3)]
    bank.add_samples([slot] * 3, stamps, [1.0, 2.0, 3.0], [1e9, 2e9, 3e9])
    config = AutoScalingConfig.model_validate({"autoSetResources": {"enable": True, "targetResource": "all"}})
    current = Resources.model_validate({"requests": {"tflops": "10", "vram": "4Gi"}})
    recommend(config, bank.summary(row), current, T0).to_status()
    return time.perf_counter() - began


def http_post(url: str, form: dict[str, str]) -> dict:
    data = "&".join(f"{k}={v}" for k, v in form.items()).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=600) as resp:
        return orjson.loads(resp.read())


def prepare(base_url: str, start: datetime, end: datetime, step: timedelta) -> dict:
    form = {"start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}", "step": f"{step.total_seconds():.3f}"}
    return http_post(base_url + "/-/prepare", form)


def mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


async def run_interval(
    autoscaler: Autoscaler, kube: FakeKube, timers: Timers, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    timers.reset()
    before = Counter(kube.counts)
    began = time.perf_counter()
    if profile is not None:
        profile.enable()
    await autoscaler.tick()
    if profile is not None:
        profile.disable()
    total = time.perf_counter() - began
    echo_began = time.perf_counter()
    echoed = kube.echo()
    echo = time.perf_counter() - echo_began
    calls = kube.counts - before
    return {"total": total, "echo": echo, "echoed": echoed, "calls": calls, "timers": timers}


def report_interval(title: str, result: dict[str, Any], *, checkpoint: bool) -> None:
    timers: Timers = result["timers"]
    s = timers.seconds
    http = timers.http_seconds()
    parts = [
        ("discovery (create_missing_workloads + workloads() + track)", s["create"] + s["workloads"] + s["track"]),
        ("HTTP (query_range, both queries)", http),
        ("parse + merge into columns (SampleMerger)", s["fetch"] - http),
        ("ingest (UsageBank)", s["ingest"]),
        (f"reconcile loop ({timers.counts['reconcile']} workloads)", s["reconcile"]),
    ]
    if checkpoint:
        parts.append(("checkpoint (histograms into status)", s["checkpoint"]))
    accounted = sum(v for _, v in parts)
    print(f"{title}: {result['total']:.2f} s")
    for label, value in parts:
        print(f"  {label:<60} {value:7.3f} s")
    print(f"  {'other':<60} {result['total'] - accounted:7.3f} s")
    print(
        f"  samples: {timers.counts['samples']:,} merged rows, {timers.counts['accepted']:,} accepted "
        f"(TFLOPS + VRAM), {timers.counts['bytes'] / 1e6:.1f} MB of JSON"
    )
    calls = result["calls"]
    listed = ", ".join(f"{k} {v:,}" for k, v in sorted(calls.items())) or "none"
    print(f"  Kubernetes calls (counted, not sent; awaited one by one): {sum(calls.values()):,} — {listed}")
    print(f"  watch echo after the interval: {result['echoed']:,} objects into the cache in {result['echo']:.3f} s")


def print_profile(profile: cProfile.Profile, top: int) -> None:
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order)
        stats.print_stats(top)
        text = out.getvalue()
        # Keep the table, drop pstats' preamble.
        start = text.find("   ncalls")
        print(f"--- profile, sorted by {order} (top {top}) ---")
        print(text[start:].rstrip() if start >= 0 else text.rstrip())


async def main_async(opts: argparse.Namespace, base_url: str, state: ClusterState) -> None:
    history = parse_duration(opts.history)
    step = parse_duration(opts.step)
    interval = parse_duration(opts.interval)
    metrics = MetricsConfig(prometheus_url=base_url, history_length=history, step=step, timeout=timedelta(seconds=120))
    settings = AutoscaleSettings(interval=interval, metrics=metrics)
    # Writes reach the cache after the interval, as watch events would.
    owners = {
        (p["metadata"]["namespace"], ref["name"]): ref["name"].removesuffix("-rs")
        for p in state.cache.list(Kind.POD)
        for ref in p["metadata"].get("ownerReferences") or []
        if ref["kind"] == "ReplicaSet"
    }
    kube = FakeKube(state, echo=False, replicas=WORKERS, replicaset_owners=owners, record=False)
    clock = FixedClock(T0)
    source = PrometheusSource(metrics)
    autoscaler = Autoscaler(state, kube, source, settings, clock)  # type: ignore[arg-type]
    timers = Timers()
    timers.wrap(autoscaler.feeder, "create_missing_workloads", "create")
    timers.wrap(autoscaler.feeder, "workloads", "workloads")
    timers.wrap(autoscaler.feeder, "track", "track")
    timers.wrap(autoscaler.feeder, "ingest", "ingest")
    timers.wrap(autoscaler, "reconcile", "reconcile")
    timers.wrap(autoscaler, "checkpoint", "checkpoint")
    timers.wrap(source, "samples", "fetch")
    timers.wrap_http(source)

    try:
        # First interval: the whole history.
        sizes = prepare(base_url, T0 - history, T0, step)
        print(
            f"first interval window: {opts.history} at {opts.step} steps = {sizes['points']} points × "
            f"{sizes['series']:,} series; responses TFLOPS {sizes['bytes']['tflops'] / 1e6:.1f} MB, "
            f"VRAM {sizes['bytes']['vram'] / 1e6:.1f} MB (generated in {sizes['seconds']:.1f} s, not timed)"
        )
        gc.collect()
        rss_before = rss_bytes()
        peak_setup = peak_rss_bytes()
        clean_peak = reset_peak_rss()
        first = await run_interval(autoscaler, kube, timers)
        peak_first = peak_rss_bytes()
        rss_after_first = rss_bytes()
        print()
        report_interval("first interval (history load + recommend + writes + checkpoint)", first, checkpoint=True)

        # Steady state: one interval later each time, fetching only what is new.
        steady: list[float] = []
        steady_calls: list[int] = []
        for k in range(1, opts.steady + 1):
            clock.moment = T0 + k * interval
            sizes = prepare(base_url, clock.moment - interval, clock.moment, step)
            result = await run_interval(autoscaler, kube, timers)
            steady.append(result["total"])
            steady_calls.append(sum(result["calls"].values()))
            print()
            if k == 1:
                print(
                    f"steady-state window: {sizes['points']} points × {sizes['series']:,} series; responses TFLOPS "
                    f"{sizes['bytes']['tflops'] / 1e6:.2f} MB, VRAM {sizes['bytes']['vram'] / 1e6:.2f} MB"
                )
            report_interval(
                f"steady-state interval {k} (T0 + {k * interval.total_seconds():.0f} s)", result, checkpoint=False
            )
        gc.collect()
        rss_end = rss_bytes()
        peak_end = max(peak_rss_bytes(), peak_setup)

        print()
        median = statistics.median(steady) if steady else math.nan
        verdict = "PASS" if median <= GOAL_SECONDS else "MISS"
        print(f"first interval        {first['total']:6.2f} s")
        print(f"steady-state interval {median:6.2f} s median of {len(steady)}  goal <= {GOAL_SECONDS:.0f} s: {verdict}")
        first_calls = sum(first["calls"].values())
        median_calls = statistics.median(steady_calls) if steady_calls else 0
        print(
            f"Kubernetes calls awaited one by one: first {first_calls:,}, steady-state median {median_calls:,.0f} "
            f"(at 1 ms of API latency each add {first_calls / 1000:.1f} s and {median_calls / 1000:.1f} s)"
        )
        scope = "during the loop" if clean_peak else "whole process (clear_refs not allowed)"
        peak_verdict = "PASS" if peak_end <= GOAL_BYTES else "MISS"
        print(
            f"memory: RSS {mb(rss_before)} before the loop, peak {mb(peak_first)} in the first interval "
            f"({scope}), {mb(rss_after_first)} after it, {mb(rss_end)} after {len(steady)} more"
        )
        print(
            f"        RSS growth due to the loop {mb(rss_end - rss_before)}; process peak RSS (VmHWM, setup "
            f"included) {mb(peak_end)}  goal <= 1 GB: {peak_verdict}"
        )

        if opts.profile == "steady" or (opts.profile == "auto" and median > GOAL_SECONDS):
            k = opts.steady + 1
            clock.moment = T0 + k * interval
            prepare(base_url, clock.moment - interval, clock.moment, step)
            profile = cProfile.Profile()
            result = await run_interval(autoscaler, kube, timers, profile)
            print()
            print(f"profiled steady-state interval ({result['total']:.2f} s under cProfile):")
            print_profile(profile, opts.top)
    finally:
        await source.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=0, help="default: one GPU per worker pod")
    parser.add_argument("--owner", choices=("deployment", "statefulset", "none"), default="deployment")
    parser.add_argument("--history", default="1h", help="history loaded by the first interval")
    parser.add_argument("--step", default="60s", help="query_range step")
    parser.add_argument("--interval", default="60s", help="loop interval (steady-state fetch window)")
    parser.add_argument("--steady", type=int, default=3, help="steady-state intervals timed")
    parser.add_argument("--profile", choices=("auto", "steady", "none"), default="auto")
    parser.add_argument("--top", type=int, default=30, help="profile rows printed")
    parser.add_argument("--seed", type=int, default=7)
    opts = parser.parse_args()
    nodes = opts.nodes or math.ceil(opts.workloads * WORKERS / GPUS_PER_NODE)

    began = time.perf_counter()
    objects, series = build_cluster(opts.workloads, nodes, opts.owner, opts.seed)
    state = ClusterState()
    state.load(objects)
    n_pods = len(objects[Kind.POD])
    del objects
    gc.collect()
    print(
        f"cluster: {nodes} nodes × {GPUS_PER_NODE} GPUs, {opts.workloads:,} workloads × {WORKERS} workers "
        f"= {n_pods:,} pods (owner: {opts.owner}), built and loaded in {time.perf_counter() - began:.1f} s"
    )
    print(f"kernel warm-up (numba compile or cache load, not timed): {warm_up_kernels():.2f} s")

    tmp = Path(tempfile.mkdtemp(prefix="tfsched-bench-"))
    fleet = tmp / "fleet.json"
    fleet.write_bytes(orjson.dumps({"seed": opts.seed, "series": series}))
    del series
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("fake_prometheus.py")),
            "--fleet",
            str(fleet),
            "--port",
            str(port),
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base_url + "/-/ready", timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("fake Prometheus did not start") from None
                time.sleep(0.1)
        asyncio.run(main_async(opts, base_url, state))
        print(f"fake Prometheus (own process) RSS {mb(psutil.Process(server.pid).memory_info().rss)}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
