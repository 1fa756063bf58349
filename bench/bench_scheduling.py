"""Scheduling throughput through the real kube-scheduler, with and without the extender.

Brings up the local control plane (``DevCluster``: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler with ``config/scheduler-config.yaml``,
``tfsched serve``, the fake kubelet, Prometheus and the usage exporter) in a
temporary folder, adds 1,000 fake nodes × 8 GPUs (312 TFLOPS / 80Gi), and
schedules, each run in a namespace of its own:

- ``no-extender``: 2,000 pods with a small cpu/memory request and no
  TensorFusion annotations nor managed resource.  The scheduler's extender is
  configured globally, but ``managedResources`` keeps these pods away from it:
  the same kube-scheduler, with no extender call;
- ``extender``: 2,000 GPU pods (``tflops-request: 20``, ``vram-request: 8Gi``,
  and the managed resource ``tensor-fusion.ai/gpu``) with the same cpu/memory request, so
  kube-scheduler calls tfsched's filter, prioritize and bind.

Each run is timed from its first pod create to the moment every pod of the run
has ``spec.nodeName`` (seen through a watch on the namespace), and the script
prints pods/s for both runs and the ratio extender / no extender (goal ≥ 0.8),
the scheduler configuration it ran with (client QPS, nodes sent per filter
call), the extender's own latency histograms for the run, client-side
throttling reported by kube-scheduler, CPU time per control-plane process,
and an over-commit check of every GPU after the extender runs.

The cluster is always torn down, even on failure or Ctrl-C.

Run: ``.venv/bin/python bench/bench_scheduling.py [--nodes 1000 --pods 2000 --repeat 2]``
(``--qps/--burst`` set kube-scheduler's client QPS instead of its default,
``--keep-logs DIR`` keeps the process logs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from kube_scheduler_model import nodes_to_find, percentage_arg, percentage_used

import tfsched.devcluster.cluster as devcluster_module
from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.objects import gpu_pod
from tfsched.clustermodel.quantity import parse_quantity
from tfsched.devcluster import processes
from tfsched.devcluster.binaries import ensure_binaries
from tfsched.devcluster.cluster import DevCluster
from tfsched.devcluster.processes import free_port
from tfsched.devcluster.spec import ClusterSpec
from tfsched.kubeapi.client import KubeApiError, KubeClient

GiB = 2**30
GPU_TFLOPS, GPU_VRAM = 312, "80Gi"
POD_TFLOPS, POD_VRAM = "20", "8Gi"
POD_CPU, POD_MEMORY = "10m", "16Mi"
GPUS_PATH = f"/apis/{ann.GROUP_VERSION}/{ann.GPU_PLURAL}"
LATENCY_METRIC = "tfsched_extender_request_duration_seconds"
FILTER_NODES_METRIC = "tfsched_extender_filter_nodes_total"
BINDS_METRIC = "tfsched_extender_binds_total"
ERRORS_METRIC = "tfsched_extender_errors_total"
# kube-scheduler's defaults (SetDefaults_KubeSchedulerConfiguration, kubescheduler.config.k8s.io/v1).
DEFAULT_QPS, DEFAULT_BURST = 50.0, 100

T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


# -- pods ----------------------------------------------------------------------


def bench_pod(name: str, namespace: str, *, gpu: bool) -> dict[str, Any]:
    """A GPU pod (annotations + managed resource) or the same pod without both."""
    if gpu:
        pod = gpu_pod(name, namespace=namespace, tflops=POD_TFLOPS, vram=POD_VRAM)
    else:
        pod = gpu_pod(name, namespace=namespace)
        pod["metadata"].pop("annotations")
        pod["spec"]["containers"][0]["resources"] = {}
    pod.pop("status", None)
    resources = pod["spec"]["containers"][0]["resources"]
    resources.setdefault("requests", {}).update({"cpu": POD_CPU, "memory": POD_MEMORY})
    resources.setdefault("limits", {}).update({"cpu": POD_CPU, "memory": POD_MEMORY})
    pod["spec"]["terminationGracePeriodSeconds"] = 0
    return pod


# -- scheduler configuration -------------------------------------------------------


def scheduler_config_override(
    root: Path,
    qps: float | None,
    burst: int | None,
    score_in_filter: bool = False,
    percentage_of_nodes_to_score: int | None = None,
) -> Path | None:
    """A copy of config/scheduler-config.yaml with clientConnection qps/burst set (without
    the prioritize verb, for tfsched's scoreInFilter; with a fixed percentageOfNodesToScore),
    for DevCluster to render instead of the repo file (nothing in the repo changes)."""
    if qps is None and burst is None and not score_in_filter and percentage_of_nodes_to_score is None:
        return None
    config = yaml.safe_load(devcluster_module.SCHEDULER_CONFIG.read_text())
    if qps is not None:
        config["clientConnection"]["qps"] = qps
    if burst is not None:
        config["clientConnection"]["burst"] = burst
    if score_in_filter:
        config["extenders"][0].pop("prioritizeVerb", None)
    if percentage_of_nodes_to_score is not None:
        config["percentageOfNodesToScore"] = percentage_of_nodes_to_score
    path = root / "scheduler-config.override.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- metrics -------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def get_metrics(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return parse_metrics(resp.read().decode())


def get_apiserver_metrics(dev: DevCluster) -> dict:
    request = urllib.request.Request(f"{dev.server}/metrics", headers={"Authorization": f"Bearer {dev.token}"})
    with urllib.request.urlopen(request, timeout=10, context=_unverified_tls()) as resp:
        return parse_metrics(resp.read().decode())


def metric(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Quantile from cumulative (le, count) pairs, interpolated within a bucket."""
    total = buckets[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return float("inf")  # beyond the last finite bucket
            width = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / width if width else 0)
        lower_le, lower_count = le, count
    return lower_le


def extender_report(before: dict, after: dict, wall: float) -> list[str]:
    lines = [f"  {'verb':<11} {'calls':>6} {'mean ms':>8} {'~p50 ms':>8} {'~p99 ms':>8} {'sum s':>7} {'of wall':>7}"]
    for verb in ("filter", "prioritize", "bind"):
        count = metric(after, f"{LATENCY_METRIC}_count", verb=verb) - metric(
            before, f"{LATENCY_METRIC}_count", verb=verb
        )
        total = metric(after, f"{LATENCY_METRIC}_sum", verb=verb) - metric(before, f"{LATENCY_METRIC}_sum", verb=verb)
        les = sorted(
            {float(dict(lab)["le"]) for (n, lab) in after if n == f"{LATENCY_METRIC}_bucket" and ("verb", verb) in lab}
        )
        buckets = [
            (
                le,
                metric(after, f"{LATENCY_METRIC}_bucket", verb=verb, le=_le(le))
                - metric(before, f"{LATENCY_METRIC}_bucket", verb=verb, le=_le(le)),
            )
            for le in les
        ]
        mean = total / count * 1000 if count else float("nan")
        p50 = _ms(bucket_quantile(buckets, 0.5) if count else float("nan"), les)
        p99 = _ms(bucket_quantile(buckets, 0.99) if count else float("nan"), les)
        lines.append(f"  {verb:<11} {count:6.0f} {mean:8.2f} {p50:>8} {p99:>8} {total:7.2f} {100 * total / wall:6.1f}%")
    filters = metric(after, f"{LATENCY_METRIC}_count", verb="filter") - metric(
        before, f"{LATENCY_METRIC}_count", verb="filter"
    )

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    judged = delta(FILTER_NODES_METRIC)
    passed = delta(FILTER_NODES_METRIC, result="passed")
    bound = delta(BINDS_METRIC, result="bound")
    bind_failed = delta(BINDS_METRIC, result="failed")
    errors = metric(after, ERRORS_METRIC) - metric(before, ERRORS_METRIC)
    if filters:
        lines.append(
            f"  nodes per filter call: {judged / filters:.0f} (passed {passed / filters:.0f}); "
            f"binds bound {bound:.0f}, failed {bind_failed:.0f}; errors {errors:.0f}"
        )
    else:
        lines.append(f"  no extender calls (binds {bound:.0f}, errors {errors:.0f})")
    lines.append("  (from the histogram's sum/count/buckets, deltas over the run; time inside the handler, not")
    lines.append("   kube-scheduler's round trip; binds overlap each other, so their sum can exceed the wall time)")
    return lines


def _ms(seconds: float, les: list[float]) -> str:
    if seconds == float("inf"):
        return f">{max(le for le in les if le != float('inf')) * 1000:.0f}"
    return f"{seconds * 1000:.2f}"


def _le(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


# -- scheduler log ------------------------------------------------------------------

# client-go logs a throttled request as (v1.36, structured)
#   "Waited before sending request" delay="1.005s" reason="client-side throttling, ..." verb="POST" URL="https://..."
# or (older releases) "Waited for 1.005s due to client-side throttling, ..., request: POST:https://...".
_THROTTLE_NEW = re.compile(r'"Waited before sending request".*?delay="([^"]+)".*?verb="(\w+)" URL="([^"]+)"')
_THROTTLE_OLD = re.compile(r"Waited for (\S+) due to client-side throttling.*?request: (\w+):(\S+)")
_DURATION = re.compile(r"([0-9.]+)(h|ms|us|µs|ns|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration(text: str) -> float:
    return sum(float(v) * _UNIT[u] for v, u in _DURATION.findall(text))


def throttling(log: Path, offset: int) -> list[tuple[float, str]]:
    """(wait in s, request) for each client-side throttling message kube-scheduler
    logged since ``offset``: at its default verbosity client-go logs waits over 1 s,
    through a throttled logger (not every one)."""
    with open(log, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    found = []
    for m in [*_THROTTLE_NEW.finditer(text), *_THROTTLE_OLD.finditer(text)]:
        path = re.sub(r"https?://[^/]+", "", m.group(3))
        path = re.sub(r"/namespaces/[^/]+/pods/[^/]+/", "/namespaces/NS/pods/NAME/", path)
        found.append((go_duration(m.group(1)), f"{m.group(2)} {path}"))
    return found


def read_since(log: Path, offset: int) -> str:
    with open(log, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


def _shape(text: str) -> str:
    """A log message with pod, node, GPU and namespace names replaced, for counting by kind."""
    text = text.replace('\\"', '"')
    text = re.sub(r"bench-(gpu|plain)-\d+/p-\d+", "NS/POD", text)
    text = re.sub(r"\bp-\d+", "POD", text)
    text = re.sub(r"node-\d+(-gpu-\d+)?", lambda m: "GPU" if m.group(1) else "NODE", text)
    return text[:150]


def log_findings(dev: DevCluster, offsets: dict[str, int]) -> list[str]:
    """Bind failures as tfsched logged them, and scheduling errors as kube-scheduler logged them."""
    lines = []
    ext = read_since(dev.log("tfsched"), offsets["tfsched"])
    failures = defaultdict(int)
    for m in re.finditer(r"INFO extender\.app: bind \S+ to \S+ failed: (.*)", ext):
        failures[_shape(m.group(1))] += 1
    if failures:
        lines.append("  tfsched bind failures by reason:")
        lines.extend(f"    {n:5d}  {why}" for why, n in sorted(failures.items(), key=lambda kv: -kv[1]))
    sched = read_since(dev.log("kube-scheduler"), offsets["kube-scheduler"])
    errors = defaultdict(int)
    for m in re.finditer(r'"Error scheduling pod; retrying" err="((?:[^"\\]|\\.)*)"', sched):
        errors[_shape(m.group(1))] += 1
    misplaced = len(re.findall(r"Pod was added to a different node than it was assumed", sched))
    if errors:
        lines.append("  kube-scheduler 'Error scheduling pod; retrying' by error:")
        lines.extend(f"    {n:5d}  {why}" for why, n in sorted(errors.items(), key=lambda kv: -kv[1]))
    if misplaced:
        lines.append(f"  kube-scheduler: {misplaced} pods bound to another node than the one it had assumed")
    return lines


def apiserver_report(before: dict, after: dict, pods: int) -> list[str]:
    """The API server's traffic per scheduled pod: writes by resource and the watch
    events it sent by kind (what each bind costs it, and what its watchers are fed)."""
    writes: dict[str, float] = {}
    for (name, labels), value in after.items():
        if name != "apiserver_request_total":
            continue
        lab = dict(labels)
        if lab.get("verb") not in ("POST", "PATCH", "PUT", "DELETE", "APPLY"):
            continue
        what = f"{lab['verb']} {lab.get('resource', '')}" + (f"/{lab['subresource']}" if lab.get("subresource") else "")
        writes[what] = writes.get(what, 0.0) + value - before.get((name, labels), 0.0)
    events: dict[str, float] = {}
    for (name, labels), value in after.items():
        if name == "apiserver_watch_events_total":
            kind = dict(labels).get("kind") or dict(labels).get("resource", "?")
            events[kind] = events.get(kind, 0.0) + value - before.get((name, labels), 0.0)
    per = max(pods, 1)

    def binding(suffix: str) -> float:
        name = f"apiserver_request_duration_seconds_{suffix}"
        labels = {"verb": "POST", "resource": "pods", "subresource": "binding"}
        return metric(after, name, **labels) - metric(before, name, **labels)

    count = binding("count")
    shown = sorted(((v, k) for k, v in writes.items() if v / per >= 0.005), reverse=True)
    sent = sorted(((v, k) for k, v in events.items() if v / per >= 0.005), reverse=True)
    return [
        "  kube-apiserver writes per pod: " + ", ".join(f"{k} {v / per:.2f}" for v, k in shown),
        "  kube-apiserver watch events sent per pod: " + ", ".join(f"{k} {v / per:.2f}" for v, k in sent),
        "  kube-apiserver's time per binding (POST pods/binding, mean): "
        + (f"{binding('sum') / count * 1000:.1f} ms" if count else "no binding"),
    ]


# -- CPU per process ---------------------------------------------------------------


BENCH_PROCESS = "bench (this script)"


def cpu_seconds(dev: DevCluster) -> dict[str, float]:
    out = {}
    for name, record in dev.records.items():
        proc = record.process()
        if proc is None:
            continue
        try:
            total = 0.0
            for p in (proc, *proc.children(recursive=True)):
                t = p.cpu_times()
                total += t.user + t.system
            out[name] = total
        except psutil.NoSuchProcess:
            continue
    t = psutil.Process().cpu_times()
    out[BENCH_PROCESS] = t.user + t.system
    return out


def cpu_per_pod(plain: RunResult, gpu: RunResult) -> list[str]:
    """Both runs keep the cores busy, so pods/s follows CPU per pod: what each process
    spends per bound pod in the extender run, and what it adds over the plain run."""
    if not plain.bound or not gpu.bound:
        return []
    names = sorted(set(gpu.cpu) - {BENCH_PROCESS}, key=lambda k: -gpu.cpu[k])

    def per_pod(run: RunResult, name: str) -> float:
        return run.cpu.get(name, 0.0) / run.bound * 1000

    rows = [f"{k} {per_pod(gpu, k):.2f} ({per_pod(gpu, k) - per_pod(plain, k):+.2f})" for k in names]
    total_plain = sum(per_pod(plain, k) for k in set(plain.cpu) - {BENCH_PROCESS})
    total_gpu = sum(per_pod(gpu, k) for k in names)
    return [
        "  CPU ms per bound pod in the extender run (its addition over the plain run): " + ", ".join(rows),
        f"  all but this script: plain {total_plain:.2f}, extender {total_gpu:.2f} ms per pod "
        f"(CPU ratio {total_plain / total_gpu:.2f})",
    ]


def cpu_report(used: dict[str, float], wall: float) -> list[str]:
    """``used``: CPU-s per process over the run."""
    rows = sorted(((d, k) for k, d in used.items()), reverse=True)
    total = sum(d for d, _ in rows)
    machine = psutil.cpu_count() or 1
    parts = [f"{k} {d:.1f}" for d, k in rows if d >= 0.05]
    return [
        f"  CPU s: {', '.join(parts)}",
        f"  total {total:.1f} CPU s over {wall:.1f} s wall = {total / wall:.2f} of {machine} cores",
    ]


# -- profiles (--profile DIR) ---------------------------------------------------------


@dataclass
class Profiling:
    """Where to write CPU profiles of kube-scheduler and kube-apiserver (Go's
    /debug/pprof/profile) and tfsched (py-spy), taken during each run.

    py-spy samples wall time; ``--gil`` keeps the samples where tfsched holds the GIL,
    so time blocked or preempted in a socket write (which releases it) is not counted
    as work: on 2 busy cores that was ~40 % of the plain samples."""

    out: Path
    scheduler_url: str  # kube-scheduler's secure port
    token: str
    apiserver_url: str
    seconds: int = 8
    delay: float = 2.0  # after the first create, so the profile covers steady scheduling


def _unverified_tls() -> ssl.SSLContext:
    """kube-scheduler's and kube-apiserver's self-signed serving certificates, on loopback."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _fetch_pprof(url: str, token: str, seconds: int, dest: Path) -> None:
    context = _unverified_tls()
    request = urllib.request.Request(
        f"{url}/debug/pprof/profile?seconds={seconds}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=seconds + 30, context=context) as resp:
            dest.write_bytes(resp.read())
    except OSError as exc:
        say(f"profile {dest.name} failed: {exc}")


def start_profiles(dev: DevCluster, prof: Profiling, label: str) -> list[threading.Thread | subprocess.Popen]:
    """Start the three profiles (after ``prof.delay``); ``finish_profiles`` waits for them."""
    prof.out.mkdir(parents=True, exist_ok=True)

    def go(url: str, name: str) -> threading.Thread:
        def work() -> None:
            time.sleep(prof.delay)
            _fetch_pprof(url, prof.token, prof.seconds, prof.out / f"{label}-{name}.pb.gz")

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return thread

    started: list[threading.Thread | subprocess.Popen] = [
        go(prof.scheduler_url, "kube-scheduler"),
        go(prof.apiserver_url, "kube-apiserver"),
    ]
    tfsched = dev.records["tfsched"].process()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if tfsched is not None and Path(spy).exists():
        argv = [spy, "record", "--pid", str(tfsched.pid), "--duration", str(prof.seconds), "--rate", "200", "--gil"]
        argv += ["--format", "raw", "--output", str(prof.out / f"{label}-tfsched.txt"), "--nonblocking"]
        started.append(
            subprocess.Popen(
                ["sh", "-c", f'sleep {prof.delay} && exec "$@"', "sh", *argv],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    else:
        say("py-spy not found (pip install py-spy): no tfsched profile")
    return started


def finish_profiles(started: list[threading.Thread | subprocess.Popen]) -> None:
    for item in started:
        if isinstance(item, threading.Thread):
            item.join()
        else:
            item.wait()


def profile_summary(prof: Profiling, label: str, top: int = 25) -> list[str]:
    """The top of each profile: ``go tool pprof -top`` (flat and cumulative) and py-spy's
    collapsed stacks summed per function (self and total)."""
    lines = [f"  profiles ({prof.seconds} s each, from {prof.delay:g} s after the first create) in {prof.out}:"]
    for name in ("kube-scheduler", "kube-apiserver"):
        path = prof.out / f"{label}-{name}.pb.gz"
        if not path.exists():
            continue
        for sort in ("flat", "cum"):
            done = subprocess.run(
                ["go", "tool", "pprof", "-top", f"-nodecount={top}", f"-{sort}", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            (prof.out / f"{label}-{name}-{sort}.txt").write_text(done.stdout + done.stderr)
        lines.append(f"    {label}-{name}-flat.txt / -cum.txt")
    path = prof.out / f"{label}-tfsched.txt"
    if path.exists():
        own: dict[str, int] = defaultdict(int)
        total: dict[str, int] = defaultdict(int)
        samples = 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            samples += n
            frames = [re.sub(r" \(.*?\)$", "", f) for f in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                total[frame] += n
        rows = [f"tfsched py-spy: {samples} samples"]
        rows += [f"{100 * n / samples:6.1f}% self  {f}" for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
        rows += [f"{100 * n / samples:6.1f}% total {f}" for f, n in sorted(total.items(), key=lambda kv: -kv[1])[:top]]
        (prof.out / f"{label}-tfsched-top.txt").write_text("\n".join(rows) + "\n")
        lines.append(f"    {label}-tfsched-top.txt ({samples} samples)")
    return lines


# -- one run ---------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    namespace: str
    n: int
    created_s: float = 0.0
    last_bound_s: float = float("nan")
    bound: int = 0
    bound_at: list[float] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU-s per process over the run

    @property
    def rate(self) -> float:
        return self.bound / self.last_bound_s if self.bound else 0.0

    def windows(self, width: float = 5.0) -> list[float]:
        """Pods bound per second in consecutive windows of ``width`` seconds."""
        if not self.bound_at:
            return []
        counts = defaultdict(int)
        for t in self.bound_at:
            counts[int(t // width)] += 1
        return [counts[i] / width for i in range(int(max(self.bound_at) // width) + 1)]


async def watch_bound(client: KubeClient, namespace: str, n: int, bound: dict[str, float]) -> None:
    """Record when (perf_counter) each pod of the namespace first shows spec.nodeName;
    returns when all n have."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    while len(bound) < n:
        listing = await client.get(path, fieldSelector="spec.nodeName!=")
        now = time.perf_counter()
        for pod in listing.get("items") or []:
            bound.setdefault(pod["metadata"]["name"], now)
        rv = listing["metadata"]["resourceVersion"]
        try:
            async for event in client.watch(path, rv, timeout_seconds=600):
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    break  # re-list
                if event.get("type") in ("ADDED", "MODIFIED") and (obj.get("spec") or {}).get("nodeName"):
                    bound.setdefault(obj["metadata"]["name"], time.perf_counter())
                    if len(bound) >= n:
                        return
        except (TimeoutError, KubeApiError, OSError) as exc:
            say(f"watch on {namespace} ended ({exc!r}); re-listing")


async def run_once(
    client: KubeClient,
    dev: DevCluster,
    label: str,
    namespace: str,
    n: int,
    *,
    gpu: bool,
    concurrency: int,
    timeout: float,
    profiling: Profiling | None = None,
) -> RunResult:
    result = RunResult(label, namespace, n)
    await client.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    pods = [bench_pod(f"p-{i:05d}", namespace, gpu=gpu) for i in range(n)]
    sched_log = dev.log("kube-scheduler")
    log_offset = sched_log.stat().st_size
    offsets = {name: dev.log(name).stat().st_size for name in ("tfsched", "kube-scheduler")}
    ext_before = get_metrics(dev.extender_url)
    api_before = get_apiserver_metrics(dev)
    cpu_before = cpu_seconds(dev)

    bound: dict[str, float] = {}
    watcher = asyncio.create_task(watch_bound(client, namespace, n, bound))
    await asyncio.sleep(0.2)  # the watch is established before the first create
    limit = asyncio.Semaphore(concurrency)
    created = 0

    async def create(pod: dict[str, Any]) -> None:
        nonlocal created
        async with limit:
            await client.create(f"/api/v1/namespaces/{namespace}/pods", pod)
            created += 1

    say(f"{label}: creating {n} pods in namespace {namespace} ({concurrency} concurrent creates)")
    start = time.perf_counter()  # t=0 is the first create
    creator = asyncio.create_task(_gather(create(p) for p in pods))
    profiles = start_profiles(dev, profiling, f"{label}-{namespace}") if profiling else []

    async def progress() -> None:
        while True:
            await asyncio.sleep(5)
            say(f"{label}: {time.perf_counter() - start:5.1f} s: created {created}/{n}, bound {len(bound)}/{n}")

    ticker = asyncio.create_task(progress())
    try:
        await creator
        result.created_s = time.perf_counter() - start
        say(f"{label}: all {n} pods created in {result.created_s:.1f} s ({n / result.created_s:.0f} creates/s)")
        try:
            await asyncio.wait_for(asyncio.shield(watcher), timeout=max(1.0, timeout - result.created_s))
        except TimeoutError:
            say(f"{label}: timed out after {timeout:.0f} s with {len(bound)}/{n} pods bound")
    finally:
        ticker.cancel()
        watcher.cancel()
    wall = time.perf_counter() - start
    await asyncio.to_thread(finish_profiles, profiles)
    times = sorted(t - start for t in bound.values())
    result.bound = len(times)
    result.bound_at = times
    if times:
        result.last_bound_s = result.bound_at[-1]
    say(f"{label}: {result.bound}/{n} pods bound in {result.last_bound_s:.1f} s → {result.rate:.1f} pods/s")

    ext_after = get_metrics(dev.extender_url)
    api_after = get_apiserver_metrics(dev)
    cpu_after = cpu_seconds(dev)
    result.cpu = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
    throttled = throttling(sched_log, log_offset)
    windows = result.windows()
    report = [
        f"  created in {result.created_s:.1f} s; all bound at {result.last_bound_s:.1f} s; {result.rate:.1f} pods/s",
        "  bound per second in 5 s windows: " + " ".join(f"{w:.0f}" for w in windows),
    ]
    if result.bound == n and result.last_bound_s - result.created_s < 1.0:
        report.append("  note: the last pod was bound within 1 s of the last create: creation bounded this run")
    if len(windows) >= 3:
        report.append(f"  median of the full windows after the first: {statistics.median(windows[1:-1]):.1f} pods/s")
    report.append("  extender, this run:")
    report.extend(extender_report(ext_before, ext_after, wall))
    report.extend(cpu_report(result.cpu, wall))
    report.extend(apiserver_report(api_before, api_after, max(result.bound, 1)))
    if throttled:
        kinds = sorted({what for _, what in throttled})
        report.append(
            f"  kube-scheduler client-side throttling: {len(throttled)} waits > 1 s logged, longest "
            f"{max(w for w, _ in throttled):.2f} s, on: {', '.join(kinds)}"
        )
    else:
        report.append("  kube-scheduler logged no client-side throttling wait (it logs waits > 1 s)")
    report.extend(log_findings(dev, offsets))
    if profiling:
        report.extend(profile_summary(profiling, f"{label}-{namespace}"))
    result.report = report
    return result


async def _gather(coros) -> None:
    await asyncio.gather(*coros)


# -- over-commit check -----------------------------------------------------------------


async def check_overcommit(client: KubeClient, namespaces: list[str]) -> list[str]:
    gpus = (await client.get(GPUS_PATH)).get("items") or []
    capacity = {
        g["metadata"]["name"]: (
            parse_quantity(g["status"]["capacity"]["tflops"]),
            parse_quantity(g["status"]["capacity"]["vram"]),
            g["metadata"]["labels"][ann.HOSTNAME_LABEL],
        )
        for g in gpus
    }
    used_t: dict[str, float] = defaultdict(float)
    used_v: dict[str, float] = defaultdict(float)
    pods_on: dict[str, int] = defaultdict(int)
    problems, no_ids, total, nodes = [], [], 0, set()
    for namespace in namespaces:
        for pod in (await client.get(f"/api/v1/namespaces/{namespace}/pods")).get("items") or []:
            total += 1
            meta, node = pod["metadata"], pod["spec"].get("nodeName")
            annotations = meta.get("annotations") or {}
            ids = [g for g in annotations.get(ann.GPU_IDS, "").split(",") if g]
            if not node:
                problems.append(f"{namespace}/{meta['name']} is not bound")
                continue
            nodes.add(node)
            if not ids:
                no_ids.append(f"{namespace}/{meta['name']} on {node} has no {ann.GPU_IDS}")
            for gpu in ids:
                if gpu not in capacity or capacity[gpu][2] != node:
                    problems.append(f"{namespace}/{meta['name']} on {node} holds {gpu}, not a GPU of its node")
                    continue
                used_t[gpu] += parse_quantity(annotations[ann.TFLOPS_REQUEST])
                used_v[gpu] += parse_quantity(annotations[ann.VRAM_REQUEST])
                pods_on[gpu] += 1
    over = [
        f"{gpu}: {used_t[gpu]:g} TFLOPS / {capacity[gpu][0]:g}, {used_v[gpu] / GiB:g}Gi / {capacity[gpu][1] / GiB:g}Gi"
        for gpu in used_t
        if used_t[gpu] > capacity[gpu][0] or used_v[gpu] > capacity[gpu][1]
    ]
    most = max(pods_on.values(), default=0)
    fullest = max(used_v, key=used_v.get) if used_v else None
    lines = [
        f"  {total} GPU pods on {len(nodes)} nodes and {len(used_t)} GPUs; at most {most} pods on one GPU"
        + (
            f" ({fullest}: {used_t[fullest]:g}/{capacity[fullest][0]:g} TFLOPS, "
            f"{used_v[fullest] / GiB:g}/{capacity[fullest][1] / GiB:g}Gi)"
            if fullest
            else ""
        ),
        f"  over-committed GPUs: {len(over)} (of the GPUs named by pods' {ann.GPU_IDS})",
        f"  bound GPU pods without {ann.GPU_IDS} (holding no GPU, invisible to the ledger): {len(no_ids)}",
        f"  other problems (unbound, or a GPU not of the pod's node): {len(problems)}",
    ]
    lines.extend(f"    {line}" for line in (over + no_ids[:5] + problems)[:12])
    return lines


# -- main ------------------------------------------------------------------------------------


def _https_ok(url: str) -> bool:
    context = _unverified_tls()
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_extender_inventory(dev: DevCluster, names: list[str], gpus_per_node: int, timeout: float = 120) -> None:
    """Until tfsched's filter passes every node for a pod that needs all of a node's GPUs,
    i.e. its cache holds every node with every GPU."""
    pod = gpu_pod("inventory-probe", tflops=POD_TFLOPS, vram=POD_VRAM, gpu_count=gpus_per_node, uid="probe")
    body = json.dumps({"Pod": pod, "Nodes": None, "NodeNames": names}).encode()
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(
            f"{dev.extender_url}/filter", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            passed = len(json.loads(resp.read()).get("NodeNames") or [])
        if passed == len(names):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"tfsched sees {passed}/{len(names)} complete nodes after {timeout:.0f} s")
        time.sleep(1)


async def bench(dev: DevCluster, opts: argparse.Namespace, profiling: Profiling | None) -> list[RunResult]:
    client = await KubeClient.from_config(str(dev.kubeconfig))
    results: list[RunResult] = []
    try:
        for round_ in range(opts.repeat):
            for label, gpu in (("no-extender", False), ("extender", True)):
                namespace = f"bench-{'gpu' if gpu else 'plain'}-{round_}"
                result = await run_once(
                    client,
                    dev,
                    label,
                    namespace,
                    opts.pods,
                    gpu=gpu,
                    concurrency=opts.concurrency,
                    timeout=opts.timeout,
                    profiling=profiling,
                )
                results.append(result)
                await asyncio.sleep(opts.settle)  # let the fake kubelet's status patches drain
        print()
        print("GPU over-commit check (every GPU pod of the extender runs, read back from the API):")
        for line in await check_overcommit(client, [r.namespace for r in results if r.label == "extender"]):
            print(line)
    finally:
        await client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--pods", type=int, default=2000, help="pods per run")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of (no-extender, extender), interleaved")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent pod creates")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per run")
    parser.add_argument("--settle", type=float, default=5, help="seconds of quiet after each run")
    parser.add_argument("--qps", type=float, help="kube-scheduler clientConnection.qps (default: not set → 50)")
    parser.add_argument("--burst", type=int, help="kube-scheduler clientConnection.burst (default: not set → 100)")
    parser.add_argument("--keep-logs", type=Path, help="copy the process logs here before tearing down")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write CPU profiles of kube-scheduler, kube-apiserver (pprof) and tfsched (py-spy) for each run here",
    )
    parser.add_argument("--profile-seconds", type=int, default=8, help="length of each profile")
    parser.add_argument(
        "--score-in-filter",
        action="store_true",
        help="tfsched's scheduling.scoreInFilter, kube-scheduler without the prioritize verb",
    )
    parser.add_argument(
        "--percentage-of-nodes-to-score",
        type=percentage_arg,
        help="kube-scheduler's percentageOfNodesToScore for both runs, 1-100 or adaptive (default: not set, adaptive; "
        "it stops looking after at least 100 feasible nodes either way)",
    )
    opts = parser.parse_args()
    processes.stop_children_on_sigterm()  # a killed run stops its servers too

    say("ensuring the Kubernetes binaries (built once into ~/.cache/tfsched)")
    bin_dir = ensure_binaries()
    tmp = Path(tempfile.mkdtemp(prefix="tfsched-bench-scheduling-"))
    dev = DevCluster(root=tmp / "state", bin_dir=bin_dir)
    override = scheduler_config_override(
        tmp, opts.qps, opts.burst, opts.score_in_filter, opts.percentage_of_nodes_to_score
    )
    original_config = devcluster_module.SCHEDULER_CONFIG
    results: list[RunResult] = []
    try:
        if override is not None:
            devcluster_module.SCHEDULER_CONFIG = override
        t = time.perf_counter()
        # The autoscale loop only runs hourly: nothing periodic competes with the runs.
        dev.up(autoscale_interval="1h", say=say)
        devcluster_module.SCHEDULER_CONFIG = original_config
        say(f"control plane up in {time.perf_counter() - t:.1f} s ({dev.root})")
        # tfsched as a user runs it: the devcluster's config audits the ledger every 3 s for its
        # tests (a quorum list of every pod: ~10 % of tfsched's and kube-apiserver's CPU here).
        tfsched_config = yaml.safe_load(dev.tfsched_config.read_text())
        tfsched_config["scheduling"].pop("auditInterval", None)
        if opts.score_in_filter:
            tfsched_config["scheduling"]["scoreInFilter"] = True
        bench_config = tmp / "tfsched-bench.yaml"
        bench_config.write_text(yaml.safe_dump(tfsched_config))
        dev.stop_component("tfsched")
        dev.start_extender(say=say, config=bench_config)

        spec = ClusterSpec.model_validate(
            {
                "nodes": [
                    {
                        "namePrefix": "node",
                        "count": opts.nodes,
                        "gpus": {"count": opts.gpus, "model": "A100", "tflops": GPU_TFLOPS, "vram": GPU_VRAM},
                    }
                ]
            }
        )
        nodes, gpus = spec.objects()
        say(f"creating {len(nodes)} nodes and {len(gpus)} GPU objects (status included)")
        t = time.perf_counter()
        dev.add_nodes(nodes, gpus)
        say(f"nodes and GPUs created in {time.perf_counter() - t:.1f} s")
        names = [n["metadata"]["name"] for n in nodes]
        t = time.perf_counter()
        wait_extender_inventory(dev, names, opts.gpus)
        say(f"tfsched's cache holds all {len(names)} nodes × {opts.gpus} GPUs ({time.perf_counter() - t:.1f} s)")
        time.sleep(opts.settle)

        # DevCluster.start_scheduler writes what it runs as <name>-config.yaml.
        rendered = yaml.safe_load((dev.root / "kube-scheduler-config.yaml").read_text())
        conn = rendered.get("clientConnection") or {}
        profile = (rendered.get("profiles") or [{}])[0]
        pct_setting = profile.get("percentageOfNodesToScore", rendered.get("percentageOfNodesToScore"))
        pct, to_find = percentage_used(opts.nodes, pct_setting), nodes_to_find(opts.nodes, pct_setting)
        extender = rendered["extenders"][0]
        print()
        print("kube-scheduler configuration (rendered by DevCluster from config/scheduler-config.yaml):")
        print(
            f"  clientConnection.qps: {conn.get('qps', 'not set')} → {conn.get('qps', DEFAULT_QPS):g} QPS; "
            f"burst: {conn.get('burst', 'not set')} → {conn.get('burst', DEFAULT_BURST)}"
        )
        print(
            f"  percentageOfNodesToScore: {pct_setting if pct_setting is not None else 'not set'} → adaptive "
            f"{pct}% of {opts.nodes} nodes = {to_find} feasible nodes found per pod, "
            "then sent to the extender's filter"
        )
        print(
            f"  extender: {extender['urlPrefix']} "
            f"{'/'.join(v for v in ('filter', 'prioritize', 'bind') if extender.get(v + 'Verb'))}, "
            f"weight {extender['weight']}, "
            f"nodeCacheCapable {extender['nodeCacheCapable']}, httpTimeout {extender['httpTimeout']}, "
            f"managedResources {[r['name'] for r in extender['managedResources']]}"
        )
        print(
            f"  pods: requests cpu {POD_CPU} / memory {POD_MEMORY}; GPU pods add tflops-request {POD_TFLOPS}, "
            f"vram-request {POD_VRAM} and {ann.MANAGED_RESOURCE}: {ann.MANAGED_RESOURCE_QUANTITY}"
        )
        print(
            f"  order: {opts.repeat} round(s) of (no-extender, then extender), interleaved on the same cluster; "
            "earlier runs' pods stay bound"
        )
        print()

        profiling = None
        if opts.profile:
            # Restarted with a secure port serving /debug/pprof (devcluster runs it without one).
            port = free_port()
            dev.stop_component("kube-scheduler")
            config = yaml.safe_load(override.read_text()) if override is not None else None
            dev.start_scheduler(say=say, secure_port=port, config=config)
            processes.wait_until(
                lambda: _https_ok(f"https://127.0.0.1:{port}/healthz"), timeout=60, what="kube-scheduler healthz"
            )
            profiling = Profiling(
                opts.profile, f"https://127.0.0.1:{port}", dev.token, dev.server, opts.profile_seconds
            )
        results = asyncio.run(bench(dev, opts, profiling))
    finally:
        devcluster_module.SCHEDULER_CONFIG = original_config
        if opts.keep_logs and (dev.root / "logs").exists():
            shutil.copytree(dev.root / "logs", opts.keep_logs, dirs_exist_ok=True)
        say("tearing the cluster down")
        dev.down(say=lambda *_: None)
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    for result in results:
        print(f"{result.label} ({result.namespace}):")
        for line in result.report:
            print(line)
    print()
    plain = [r for r in results if r.label == "no-extender"]
    gpu = [r for r in results if r.label == "extender"]
    print(f"{'run':<12} {'namespace':<14} {'pods':>5} {'bound':>6} {'create s':>9} {'seconds':>8} {'pods/s':>7}")
    for r in results:
        times = f"{r.created_s:9.1f} {r.last_bound_s:8.1f}"
        print(f"{r.label:<12} {r.namespace:<14} {r.n:5d} {r.bound:6d} {times} {r.rate:7.1f}")
    for i in range(0, len(results) - 1, 2):
        plain_r, gpu_r = results[i], results[i + 1]
        if plain_r.rate:
            print(f"round {i // 2 + 1}: ratio extender / no extender {gpu_r.rate / plain_r.rate:.2f}")
            for line in cpu_per_pod(plain_r, gpu_r):
                print(line)
    if plain and gpu:
        plain_rate = statistics.mean(r.rate for r in plain)
        gpu_rate = statistics.mean(r.rate for r in gpu)
        ratio = gpu_rate / plain_rate if plain_rate else float("nan")
        print(
            f"ratio extender / no extender (mean pods/s over rounds): {gpu_rate:.1f} / {plain_rate:.1f} = {ratio:.2f} "
            f"(goal ≥ 0.8: {'met' if ratio >= 0.8 else 'NOT met'})"
        )
    say("done")


if __name__ == "__main__":
    main()
