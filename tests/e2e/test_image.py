"""The container image, for real: built from the Dockerfile with podman
(hack/build-image.sh), its ``tfsched serve`` run as the extender of the local
control plane's real kube-scheduler, scheduling GPU pods.

There is no Docker engine nor registry here: the base image is made from
Debian's packages and podman runs with runc, cgroupfs and rlimits at or below
the host's (see hack/build-image.sh). The container shares the host's network,
as the deployed pod does (hostNetwork), so it reaches the kube-apiserver on
127.0.0.1 and kube-scheduler reaches it there.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tfsched.clustermodel import annotations as ann
from tfsched.devcluster import chart, processes
from tfsched.devcluster.processes import ProcessRecord

from .conftest import Cluster, make_pod
from .test_scheduling import assert_no_overcommit, gpu_ids, wait_bound

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "build-image.sh"
# crun (podman's default) fails here on rlimits and the hybrid cgroup layout.
PODMAN = ["podman", "--runtime", "/usr/sbin/runc", "--cgroup-manager=cgroupfs"]
RUN_FLAGS = ["--network=host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
UID = "65532"
BAKED_CACHE = "/opt/tfsched/numba-cache"
# The image's numba cache is baked in: /readyz is kernel loading, not compiling.
READY_WITHIN = 10.0


@dataclass
class Container:
    name: str
    url: str
    log: Path  # where stop() keeps its output, with the devcluster's logs
    ready_after: float = 0.0  # seconds from `podman run` to /readyz 200
    stopped: bool = False

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=60, check=check)

    def logs(self) -> str:
        result = self.podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self) -> None:
        if self.stopped:  # once: a second `podman logs` would overwrite the log with an error
            return
        self.stopped = True
        # SIGTERM: tfsched gives its lease up, so the next writer need not wait it out.
        self.podman("stop", "--ignore", "--time", "10", self.name, check=False)
        self.log.write_text(self.logs())
        self.podman("rm", "--force", "--ignore", self.name, check=False)


@dataclass
class ImageExtender:
    image: str
    build_seconds: float
    container: Container
    cold_ready_after: float
    scheduler: ProcessRecord
    cache: ChartCache
    cache_filled: dict[str, float]  # the initContainer's copy, before tfsched started


def build_image() -> tuple[str, float]:
    """The image, through the build script (which installs podman & co. when
    missing rather than letting this test skip); podman's layer cache makes a
    rebuild with nothing changed take seconds."""
    started = time.monotonic()
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"{BUILD_SCRIPT} failed:\n{result.stderr[-4000:]}"
    return result.stdout.strip().splitlines()[-1], time.monotonic() - started


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def metric(url: str, sample: str) -> float:
    """One sample (name and labels as exposed) from /metrics; 0 when absent."""
    _, body = http_get(f"{url}/metrics")
    for line in body.splitlines():
        if line.startswith(f"{sample} "):
            return float(line.split()[-1])
    return 0.0


@dataclass(frozen=True)
class ChartCache:
    """How the chart's pod gives numba a writable cache on a read-only root: its
    initContainer copies the baked cache into an emptyDir (here a host folder)."""

    folder: Path
    mount: str  # where the pod mounts the emptyDir (NUMBA_CACHE_DIR)
    copy: list[str]  # the initContainer's command

    @classmethod
    def from_chart(cls, folder: Path) -> ChartCache:
        pod = chart.find(chart.render(), "Deployment", f"{chart.RELEASE}-scheduler")["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        (tfsched,) = [c for c in pod["containers"] if c["name"] == "tfsched"]
        mount = next(e["value"] for e in tfsched["env"] if e["name"] == "NUMBA_CACHE_DIR")
        assert [m["mountPath"] for m in init["volumeMounts"]] == [mount]
        folder.mkdir()
        folder.chmod(0o777)  # the emptyDir, writable by the pod's uid
        return cls(folder, mount, init["command"])

    def flags(self) -> list[str]:
        return ["--read-only", "--tmpfs", "/tmp", "--volume", f"{self.folder}:{self.mount}"]

    def fill(self, image: str) -> None:
        """Run the initContainer."""
        entrypoint, *args = self.copy
        argv = [*PODMAN, "run", "--rm", *RUN_FLAGS, *self.flags(), "--entrypoint", entrypoint, image, *args]
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)

    def files(self) -> dict[str, float]:
        return {str(p.relative_to(self.folder)): p.stat().st_mtime for p in self.folder.rglob("*") if p.is_file()}


def run_extender(
    cluster: Cluster,
    image: str,
    files: Path,
    *,
    env: dict[str, str] | None = None,
    cache: ChartCache | None = None,
) -> Container:
    """`tfsched serve` in a container on the host's network, on a free port;
    returns once /readyz answers 200.  With ``cache``, as the chart's pod runs it:
    read-only root filesystem, numba's cache in the initContainer's copy."""
    port = processes.free_port()
    name = f"tfsched-image-{uuid.uuid4().hex[:8]}"
    if cache is not None:
        env = {**(env or {}), "NUMBA_CACHE_DIR": cache.mount}
    env_flags = [flag for key, value in (env or {}).items() for flag in ("--env", f"{key}={value}")]
    argv = [
        *PODMAN,
        "run",
        "--detach",  # no --rm: stop() keeps the logs of a container that exited
        "--name",
        name,
        *RUN_FLAGS,
        *(cache.flags() if cache is not None else []),
        *env_flags,
        "--volume",
        f"{files}:/etc/tfsched:ro",
        image,
        "serve",
        "--kubeconfig=/etc/tfsched/kubeconfig",
        "--config=/etc/tfsched/tfsched.yaml",
        "--host=127.0.0.1",
        f"--port={port}",
    ]
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)
    container = Container(name, f"http://127.0.0.1:{port}", cluster.dev.log(name))
    deadline = started + 120
    while http_get(f"{container.url}/readyz")[0] != 200:
        state = container.podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        if time.monotonic() > deadline or state != "running":
            logs = container.logs()
            container.stop()
            raise AssertionError(f"container {name} never became ready:\n{logs[-4000:]}")
        time.sleep(0.1)
    container.ready_after = time.monotonic() - started
    return container


def container_files(cluster: Cluster, into: Path) -> Path:
    """The kubeconfig and tfsched.yaml for the container. It runs as uid 65532
    and the devcluster's kubeconfig is root's, mode 0600: a world-readable copy
    (of a throwaway cluster's token) in a folder of its own, mounted read-only."""
    into.chmod(0o755)
    shutil.copyfile(cluster.dev.kubeconfig, into / "kubeconfig")
    shutil.copyfile(cluster.dev.tfsched_config, into / "tfsched.yaml")
    for path in into.iterdir():
        path.chmod(0o644)
    return into


@pytest.fixture(scope="module")
def image_extender(cluster: Cluster) -> Iterator[ImageExtender]:
    """The session cluster with its tfsched and kube-scheduler swapped for the
    image's tfsched and a kube-scheduler calling it; restored afterwards."""
    dev = cluster.dev
    image, build_seconds = build_image()
    work = Path(tempfile.mkdtemp(prefix="tfsched-image-"))
    (work / "files").mkdir()
    files = container_files(cluster, work / "files")
    cache = ChartCache.from_chart(work / "numba-cache")
    with cluster.without("tfsched", "kube-scheduler"):
        containers: list[Container] = []
        scheduler: ProcessRecord | None = None
        try:
            # First without the baked cache (an empty writable folder, as the kind
            # manifest's emptyDir gives), to see what it saves.
            cold = run_extender(cluster, image, files, env={"NUMBA_CACHE_DIR": "/tmp/numba-empty"})
            containers.append(cold)
            cold.stop()
            # Then as the chart's pod runs it (read-only root, the initContainer's copy).
            cache.fill(image)
            filled = cache.files()
            warm = run_extender(cluster, image, files, cache=cache)
            containers.append(warm)
            cluster.wait(lambda: dev.extender_leads(warm.url), timeout=60, what="the image's tfsched to lead")
            scheduler = dev.start_scheduler(say=lambda *_: None, name="kube-scheduler-image", extender_url=warm.url)
            print(
                f"\nimage {image}: build {build_seconds:.1f}s; /readyz after {warm.ready_after:.1f}s "
                f"with the baked numba cache, {cold.ready_after:.1f}s compiling the kernels"
            )
            yield ImageExtender(image, build_seconds, warm, cold.ready_after, scheduler, cache, filled)
        finally:
            if scheduler is not None:
                processes.stop(scheduler)
            for container in containers:
                container.stop()
            shutil.rmtree(work, ignore_errors=True)


def test_the_image_schedules_gpu_pods_through_kube_scheduler(
    cluster: Cluster, namespace: str, image_extender: ImageExtender
):
    url = image_extender.container.url
    binds_before = metric(url, 'tfsched_extender_request_duration_seconds_count{verb="bind"}')
    # Two too big for a T4 (100 TFLOPS, 16Gi): only the A100s of the big nodes hold them.
    large = [make_pod(f"large-{i}", namespace, tflops="200", vram="40Gi") for i in range(2)]
    small = [make_pod(f"small-{i}", namespace, tflops="40", vram="6Gi") for i in range(8)]
    pair = [make_pod(f"pair-{i}", namespace, tflops="10", vram="1Gi", gpu_count=2) for i in range(2)]
    cluster.apply(*large, *small, *pair)
    pods = {p["metadata"]["name"]: p for p in wait_bound(cluster, namespace, 12, timeout=120)}
    gpus = cluster.gpus()
    for name, pod in pods.items():
        ids = gpu_ids(pod)
        assert len(set(ids)) == (2 if name.startswith("pair-") else 1), (name, ids)
        assert {gpus[g]["status"]["nodeSelector"][ann.HOSTNAME_LABEL] for g in ids} == {pod["spec"]["nodeName"]}
        if name.startswith("large-"):
            assert pod["spec"]["nodeName"].startswith("big-"), (name, pod["spec"]["nodeName"])
    assert_no_overcommit(cluster)
    # The binds went through the container, not some other tfsched.
    binds = metric(url, 'tfsched_extender_request_duration_seconds_count{verb="bind"}') - binds_before
    assert binds >= 12, binds


def test_the_container_runs_as_non_root_and_is_ready_in_seconds(image_extender: ImageExtender):
    container = image_extender.container
    assert container.podman("exec", container.name, "id", "-u").stdout.strip() == UID
    assert container.ready_after < READY_WITHIN, container.ready_after
    # Every kernel came from the baked cache, copied by the chart's initContainer
    # (placement and the autoscaler's, both compiled before readiness): tfsched
    # wrote no numba cache file (a miss compiles and writes an index and its data).
    filled = image_extender.cache_filled
    assert any(name.endswith(".nbi") for name in filled), "the initContainer copied no cache"
    assert image_extender.cache.files() == filled
    # Nor anything on the root filesystem, which is read-only as in the pod.
    changed = container.podman("diff", container.name).stdout.splitlines()
    assert not [line for line in changed if BAKED_CACHE in line], changed
