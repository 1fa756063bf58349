"""Replay Alibaba's openb GPU-sharing trace through a real ``tfsched serve --snapshot``.

The published simulator's protocol (Weng et al., USENIX ATC '23; its results in
``expected_analysis_allo_discrete.csv``): the trace's pods in a shuffled order
(one seed per run), inflated by sampling until the GPU they request reaches
130 % of the cluster's GPUs; pods only arrive; a pod that fits nowhere is
dropped. At each whole percent of arrived GPU request the share of the cluster's
GPU capacity allocated is read.

Each pod goes the way kube-scheduler sends it. kube-scheduler's own part, for
CPU and memory, is modelled here: NodeResourcesFit's filter, and its default
scores (LeastAllocated, BalancedAllocation; weight 1 each, 0–100). Two scheduler
profiles, as the chart renders them (``--profile``): ``default`` — those scores
count for every pod, and CPU-only pods never reach the extender
(``managedResources``), so they are placed by those scores alone;
``scoreAllPods`` (chart value ``scheduler.scoreAllPods``) — the profile disables
those two scores and tfsched scores every pod, CPU-only ones through a second,
prioritize-only extender. ``auto``: ``scoreAllPods`` for the fragmentation-aware
mode, ``default`` for the others. A GPU pod is announced to tfsched (``/debug/objects``: the pod arriving
as the informer would see it), then ``/filter`` with the nodes that pass
NodeResourcesFit, ``/prioritize`` with those tfsched kept, the extender score
weighted as kube-scheduler does (score × weight 5 × 10 against the plugins'
0–100), the best node (ties at random, as kube-scheduler) and ``/bind``, which
picks the GPUs. Every node is scored (``percentageOfNodesToScore: 100``, the published
simulator's setting); ``--percentage-of-nodes-to-score`` models kube-scheduler's search that
stops at fewer (``adaptive``: its default, 41 % of the trace's 1,213 nodes), starting each
pod where the last one's stopped.

The trace and the published results are in ``bench/data/openb/`` (copied unchanged;
``SOURCE.md`` names their origin and licence).

GPUs: every openb GPU has 1000 TFLOPS and 1000 MiB, and a pod's ``gpu_milli``
asks that many TFLOPS and MiB per GPU, so the trace's one dimension is both of
tfsched's. ``gpu_spec`` (``V100M16|V100M32``) becomes a ``gpu-model`` list.

    .venv/bin/python bench/bench_openb.py [--trace default] [--seeds 42-51] [--modes all] [--plot out.png]
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kube_scheduler_model import NodeSearch, nodes_to_find, percentage_arg  # noqa: E402  (bench/, beside this file)

from tfsched.clustermodel import annotations as ann  # noqa: E402
from tfsched.clustermodel.objects import gpu_object, node_object  # noqa: E402
from tfsched.devcluster import processes  # noqa: E402
from tfsched.scoring.modes import PlacementMode  # noqa: E402

DATA = REPO / "bench" / "data" / "openb"  # the trace and the published results, copied unchanged (SOURCE.md)
TRACES = ("default", "gpuspec33", "multigpu50", "gpushare100")
GPU_MILLI = 1000  # one GPU: 1000 TFLOPS and 1000 MiB here
MiB = 2**20
TUNE = 1.3  # arrivals continue to 130 % of the cluster's GPUs
EXTENDER_WEIGHT = 5  # config/scheduler-config.yaml
EXTENDER_SCALE = 10  # kube-scheduler: MaxNodeScore / MaxExtenderPriority
NUMBA = str(Path.home() / ".cache" / "tfsched" / "numba")
REPORT_AT = (50, 80, 90, 95, 100, 105, 110, 115, 120, 125, 130)
DEFAULT_PROFILE = "default"  # kube-scheduler's resource scores for every pod; tfsched sees GPU pods only
SCORE_ALL_PODS = "scoreAllPods"  # chart scheduler.scoreAllPods: tfsched scores every pod, those scores off


@dataclass(frozen=True, slots=True)
class TraceNode:
    name: str
    cpu: int  # milli-CPU
    memory: int  # MiB
    gpus: int
    model: str


@dataclass(frozen=True, slots=True)
class TracePod:
    name: str
    cpu: int
    memory: int
    gpus: int
    gpu_milli: int
    models: tuple[str, ...]

    @property
    def gpu_request(self) -> int:
        """milli-GPUs the pod asks in all."""
        return self.gpus * (self.gpu_milli if self.gpus == 1 else GPU_MILLI)


def load_nodes(path: Path) -> list[TraceNode]:
    with path.open() as fh:
        return [
            TraceNode(r["sn"], int(r["cpu_milli"]), int(r["memory_mib"]), int(r["gpu"]), r["model"] or "")
            for r in csv.DictReader(fh)
            if int(r["gpu"]) > 0
        ]


def load_pods(path: Path) -> list[TracePod]:
    pods = []
    with path.open() as fh:
        for r in csv.DictReader(fh):
            gpus = int(r["num_gpu"])
            milli = int(r["gpu_milli"]) if gpus == 1 else (GPU_MILLI if gpus else 0)
            spec = (r.get("gpu_spec") or "").strip()
            models = tuple(m for m in spec.split("|") if m) if spec and spec != "nan" else ()
            pods.append(TracePod(r["name"], int(r["cpu_milli"]), int(r["memory_mib"]), gpus, milli, models))
    return pods


def arrivals(pods: list[TracePod], capacity: int, seed: int) -> list[TracePod]:
    """The trace shuffled, then sampled (with replacement) until the GPU it asks reaches TUNE × capacity."""
    rng = np.random.default_rng(seed)
    order = [pods[i] for i in rng.permutation(len(pods))]
    total = sum(p.gpu_request for p in order)
    extra = 0
    while total < TUNE * capacity:
        p = pods[int(rng.integers(len(pods)))]
        extra += 1
        order.append(TracePod(f"{p.name}-x{extra}", p.cpu, p.memory, p.gpus, p.gpu_milli, p.models))
        total += p.gpu_request
    return order


# -- kube-scheduler's part: NodeResourcesFit and BalancedAllocation over CPU and memory ---------


class KubeResources:
    def __init__(self, nodes: list[TraceNode], percentage_of_nodes_to_score: int | None = 100) -> None:
        self.names = [n.name for n in nodes]
        self.alloc = np.array([[n.cpu, n.memory] for n in nodes], np.int64)
        self.used = np.zeros_like(self.alloc)
        # kube-scheduler stops searching once it has found this many feasible nodes
        # (all of them at 100, the published simulator's setting).
        self.search = NodeSearch(len(nodes), nodes_to_find(len(nodes), percentage_of_nodes_to_score))

    def feasible(self, pod: TracePod) -> np.ndarray:
        """The nodes kube-scheduler's search finds for ``pod``: those NodeResourcesFit passes."""
        need = np.array([pod.cpu, pod.memory], np.int64)
        return self.search.take(((self.alloc - self.used) >= need).all(axis=1))

    def scores(self, candidates: np.ndarray, pod: TracePod) -> np.ndarray:
        """LeastAllocated + BalancedAllocation, as kube-scheduler computes them (integers)."""
        alloc = self.alloc[candidates]
        after = self.used[candidates] + np.array([pod.cpu, pod.memory], np.int64)
        least = ((alloc - after) * 100 // alloc).sum(axis=1) // 2
        fractions = np.minimum(after / alloc, 1.0)
        std = np.abs(fractions[:, 0] - fractions[:, 1]) / 2
        balanced = ((1 - std) * 100).astype(np.int64)
        return least + balanced

    def place(self, node: int, pod: TracePod) -> None:
        self.used[node] += (pod.cpu, pod.memory)


# -- tfsched over HTTP ------------------------------------------------------------------


class Extender:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.latency: dict[str, list[float]] = {"filter": [], "prioritize": [], "bind": []}

    def post(self, path: str, body: object) -> object:
        data = orjson.dumps(body)
        started = time.perf_counter()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        raw = resp.read()
        verb = path.strip("/")
        if verb in self.latency:
            self.latency[verb].append(time.perf_counter() - started)
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {raw[:300]!r}")
        return orjson.loads(raw)


def pod_object(pod: TracePod, node: str = "") -> dict:
    annotations = {}
    if pod.gpus:
        annotations = {
            ann.TFLOPS_REQUEST: str(pod.gpu_milli),
            ann.VRAM_REQUEST: f"{pod.gpu_milli}Mi",
            ann.GPU_COUNT: str(pod.gpus),
        }
    if pod.models:
        annotations[ann.GPU_MODEL] = ",".join(pod.models)
    limits = {ann.MANAGED_RESOURCE: ann.MANAGED_RESOURCE_QUANTITY} if pod.gpus else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": "openb", "uid": pod.name, "annotations": annotations},
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [
                {
                    "name": "main",
                    "resources": {
                        "requests": {"cpu": f"{pod.cpu}m", "memory": f"{pod.memory}Mi"},
                        "limits": limits,
                    },
                }
            ],
            **({"nodeName": node} if node else {}),
        },
        "status": {"phase": "Running" if node else "Pending"},
    }


def snapshot(nodes: list[TraceNode], path: Path) -> Path:
    items = []
    for n in nodes:
        items.append(node_object(n.name, cpu=f"{n.cpu}m", memory=f"{n.memory}Mi", pods=10_000, gpus=n.gpus))
        for i in range(n.gpus):
            items.append(gpu_object(n.name, i, tflops=GPU_MILLI, vram=GPU_MILLI * MiB, model=n.model or "unknown"))
    path.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return path


@dataclass
class Run:
    mode: str
    seed: int
    allocated: list[float] = field(default_factory=list)  # % of GPU capacity at 0..130 % arrived
    placed: int = 0
    dropped: int = 0
    seconds: float = 0.0
    latency: dict[str, list[float]] = field(default_factory=dict)
    choices: list[str | None] = field(default_factory=list)  # each arrival's node, None: dropped


def replay(
    nodes: list[TraceNode],
    pods: list[TracePod],
    mode: str,
    seed: int,
    work: Path,
    profile: str = DEFAULT_PROFILE,
    order: list[TracePod] | None = None,
    percentage_of_nodes_to_score: int | None = 100,
) -> Run:
    """One run: the seed's arrivals (or ``order`` as given) against ``work/nodes.json``;
    ``percentage_of_nodes_to_score`` None is kube-scheduler's adaptive default."""
    capacity = sum(n.gpus for n in nodes) * GPU_MILLI
    config = work / f"tfsched-{mode}.yaml"
    config.write_text(json.dumps({"scheduling": {"placementMode": mode}, "autoscaling": {"enabled": False}}))
    port = processes.free_port()
    argv = [sys.executable, "-m", "tfsched", "--log-level=WARNING", "serve", "--snapshot", str(work / "nodes.json")]
    argv += ["--config", str(config), "--port", str(port), "--no-autoscale", "--enable-test-hooks"]
    log = work / f"serve-{mode}-{seed}.log"
    server = processes.start_until_ready(
        f"tfsched-{mode}", argv, log, f"http://127.0.0.1:{port}/readyz", timeout=120, env={"NUMBA_CACHE_DIR": NUMBA}
    )
    try:
        extender = Extender(port)
        kube = KubeResources(nodes, percentage_of_nodes_to_score)
        rng = np.random.default_rng(seed + 1_000_003)
        run = Run(mode, seed)
        arrived = allocated = 0
        next_report = 0
        started = time.perf_counter()
        for pod in arrivals(pods, capacity, seed) if order is None else order:
            arrived += pod.gpu_request
            node = place(pod, kube, extender, rng, profile)
            run.choices.append(None if node is None else kube.names[node])
            if node is None:
                run.dropped += 1
            else:
                run.placed += 1
                allocated += pod.gpu_request
            while next_report <= 130 and arrived * 100 >= next_report * capacity:
                run.allocated.append(100.0 * allocated / capacity)
                next_report += 1
        run.seconds = time.perf_counter() - started
        run.latency = extender.latency
        return run
    finally:
        processes.stop(server)


def extender_scores(extender: Extender, obj: dict, names: list[str]) -> np.ndarray:
    """tfsched's priorities for ``names``, weighted as kube-scheduler adds them to its own."""
    priorities = extender.post("/prioritize", {"Pod": obj, "NodeNames": names, "Nodes": None})
    by_name = {p["Host"]: p["Score"] for p in priorities}  # hosts scoring 0 are left out
    return np.array([by_name.get(n, 0) for n in names], np.int64) * EXTENDER_WEIGHT * EXTENDER_SCALE


def place(
    pod: TracePod, kube: KubeResources, extender: Extender, rng: np.random.Generator, profile: str = DEFAULT_PROFILE
) -> int | None:
    """One pod the way kube-scheduler places it under ``profile`` (see the module's doc).
    When tfsched's filter keeps none of the nodes a search found, kube-scheduler puts the pod
    back in its queue and searches on from where it stopped: modelled as at once, until
    every node has been looked at."""
    score_all = profile == SCORE_ALL_PODS
    obj = pod_object(pod)
    if pod.gpus:
        extender.post("/debug/objects", {"items": [obj]})
    looked_at = 0
    while looked_at < len(kube.names):
        candidates = kube.feasible(pod)
        looked_at += kube.search.looked_at
        if candidates.size == 0:
            continue
        scores = np.zeros(candidates.size, np.int64) if score_all else kube.scores(candidates, pod)
        if not pod.gpus:
            if score_all:
                scores = scores + extender_scores(extender, obj, [kube.names[i] for i in candidates])
            break
        names = [kube.names[i] for i in candidates]
        result = extender.post("/filter", {"Pod": obj, "NodeNames": names, "Nodes": None})
        kept = set(result["NodeNames"] or ())
        if kept:
            keep = np.array([kube.names[i] in kept for i in candidates])
            candidates, scores = candidates[keep], scores[keep]
            scores = scores + extender_scores(extender, obj, [kube.names[i] for i in candidates])
            break
    else:
        return None
    best = np.flatnonzero(scores == scores.max())
    choice = int(candidates[best[int(rng.integers(best.size))]])
    if pod.gpus:
        bound = extender.post(
            "/bind", {"PodName": pod.name, "PodNamespace": "openb", "PodUID": pod.name, "Node": kube.names[choice]}
        )
        if bound.get("Error"):
            raise RuntimeError(f"bind {pod.name}: {bound['Error']}")
    else:  # bound by kube-scheduler itself; tfsched's informer would see it, with its CPU and memory
        extender.post("/debug/objects", {"items": [pod_object(pod, kube.names[choice])]})
    kube.place(choice, pod)
    return choice


# -- the published rows --------------------------------------------------------------------


def published(trace: str) -> dict[str, list[float]]:
    """Median over the published seeds, per policy, of allocation at 0..130 % arrived."""
    rows: dict[str, list[list[float]]] = {}
    with (DATA / "expected_analysis_allo_discrete.csv").open() as fh:
        for r in csv.DictReader(fh):
            if r["workload"] == f"openb_pod_list_{trace}":
                rows.setdefault(r["sc_policy"].split("-", 1)[1], []).append([float(r[str(k)]) for k in range(131)])
    return {policy: [statistics.median(col) for col in zip(*runs, strict=True)] for policy, runs in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", choices=TRACES, default="default")
    parser.add_argument("--seeds", default="42-51", help="a range a-b or a comma-separated list")
    parser.add_argument("--modes", default="all", help="comma-separated placement modes, or all")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--profile",
        choices=("auto", DEFAULT_PROFILE, SCORE_ALL_PODS),
        default="auto",
        help="the scheduler profile modelled (see above); auto: scoreAllPods for the fragmentation-aware mode",
    )
    parser.add_argument(
        "--percentage-of-nodes-to-score",
        type=percentage_arg,
        default="100",
        help="kube-scheduler's percentageOfNodesToScore modelled: 1-100, or adaptive (its default: "
        "it stops at 41%% of the trace's 1,213 nodes); 100 offers every node, as the published simulator",
    )
    parser.add_argument("--json", type=Path, help="write the table (every percent) here")
    parser.add_argument("--plot", type=Path, help="write a PNG of allocated against arrived here (matplotlib)")
    args = parser.parse_args()
    processes.stop_children_on_sigterm()  # a killed run stops its servers too
    percentage = args.percentage_of_nodes_to_score
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi) + 1)) if hi else [int(s) for s in args.seeds.split(",")]
    modes = [m.value for m in PlacementMode] if args.modes == "all" else args.modes.split(",")
    profiles = {m: profile_for(m, args.profile) for m in modes}
    nodes = load_nodes(args.data / "openb_node_list_gpu_node.csv")
    pods = load_pods(args.data / f"openb_pod_list_{args.trace}.csv")
    print(
        f"trace {args.trace}: {len(nodes)} GPU nodes, {sum(n.gpus for n in nodes)} GPUs, {len(pods)} pods "
        f"({sum(1 for p in pods if p.gpus == 1 and p.gpu_milli < GPU_MILLI)} sharing a GPU, "
        f"{sum(1 for p in pods if not p.gpus)} CPU-only); seeds {seeds[0]}..{seeds[-1]}; "
        f"{nodes_to_find(len(nodes), percentage)} feasible nodes searched for per pod "
        f"(percentageOfNodesToScore {'adaptive' if percentage is None else percentage})"
    )
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="openb-") as tmp:
        work = Path(tmp)
        snapshot(nodes, work / "nodes.json")
        for mode in modes:
            for seed in seeds:
                run = replay(nodes, pods, mode, seed, work, profiles[mode], percentage_of_nodes_to_score=percentage)
                runs.append(run)
                print(
                    f"  {mode:<24} seed {seed}: {run.allocated[100]:.2f} % at 100 %, "
                    f"{run.allocated[130]:.2f} % at 130 % ({run.placed} placed, {run.dropped} dropped, "
                    f"{run.seconds:.0f} s)",
                    flush=True,
                )
    table: dict[str, list[float]] = {}
    for mode in modes:
        mine = [r.allocated for r in runs if r.mode == mode]
        table[f"tfsched {mode} ({profiles[mode]})"] = [statistics.median(col) for col in zip(*mine, strict=True)]
    for policy, row in published(args.trace).items():
        table[f"published {policy}"] = row
    print(f"\nGPU capacity allocated (%), median of {len(seeds)} shuffles, at % of capacity arrived")
    print(f"{'policy (scheduler profile)':<52}" + "".join(f"{k:>7}" for k in REPORT_AT))
    for name, row in table.items():
        print(f"{name:<52}" + "".join(f"{row[k]:7.2f}" for k in REPORT_AT))
    print("\nextender latency over HTTP (ms): p50 / p99")
    for mode in modes:
        lat = {v: [x for r in runs if r.mode == mode for x in r.latency[v]] for v in ("filter", "prioritize", "bind")}
        cells = [f"{v} {1e3 * np.percentile(x, 50):.2f} / {1e3 * np.percentile(x, 99):.2f}" for v, x in lat.items()]
        print(f"  {mode:<24} " + ", ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"trace": args.trace, "seeds": seeds, "table": table}, indent=1))
    if args.plot:
        plot(table, f"openb {args.trace}, median of {len(seeds)} shuffles", args.plot)
        print(f"plot: {args.plot}")


def profile_for(mode: str, profile: str) -> str:
    if profile != "auto":
        return profile
    return SCORE_ALL_PODS if PlacementMode(mode).fragmentation_aware else DEFAULT_PROFILE


def plot(table: dict[str, list[float]], title: str, path: Path) -> None:
    """GPU capacity allocated against arrived request, as the paper's figure: tfsched's
    modes solid, the published policies dashed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name, row in table.items():
        ax.plot(range(len(row)), row, "-" if name.startswith("tfsched") else "--", linewidth=1.4, label=name)
    ax.set_xlabel("arrived GPU request (% of cluster GPU capacity)")
    ax.set_ylabel("GPU capacity allocated (%)")
    ax.set_xlim(80, 130)
    low = min(min(row[80:]) for row in table.values())
    ax.set_ylim(max(0.0, low - 1.0), 100.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
