"""``tfsched demo``'s steps: place the demo pods, feed usage, watch the autoscaler resize them.

The steps talk to the cluster only through :class:`DemoCluster` (``kubectl`` and
the usage exporter), so tests drive them with a fake.  A step that does not
happen in time fails the demo (:class:`DemoFailed`, a non-zero exit) with what
did not happen; the placements and sizes before and after are shown as a table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tfsched.clustermodel.annotations import GPU_IDS, TFLOPS_REQUEST, VRAM_REQUEST

DEMO_SELECTOR = "tfsched-demo=true"
DEMO_WORKLOAD = "demo-inference"
DEMO_USAGE = {"tflops": 4, "vram": 2 * 2**30}  # what the demo-inference pods "use": well below their request


class DemoCluster(Protocol):
    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess: ...

    def put_usage(self, pods: list[str], usage: dict[str, float]) -> None: ...


class DemoFailed(Exception):
    """A step of the demo did not happen; the message says which and where to look."""


@dataclass(frozen=True)
class Placement:
    pod: str
    app: str
    node: str
    gpus: str
    tflops: str
    vram: str


Wait = Callable[[Callable[[], bool], float, str], None]


def placements(cluster: DemoCluster) -> list[Placement]:
    """The demo pods: where each runs, on which GPUs, with which per-GPU request."""
    items = json.loads(cluster.kubectl("get", "pods", "-l", DEMO_SELECTOR, "-o", "json").stdout)["items"]
    out = []
    for pod in items:
        notes = pod["metadata"].get("annotations") or {}
        out.append(
            Placement(
                pod=pod["metadata"]["name"],
                app=(pod["metadata"].get("labels") or {}).get("app", ""),
                node=pod.get("spec", {}).get("nodeName") or "",
                gpus=notes.get(GPU_IDS, ""),
                tflops=notes.get(TFLOPS_REQUEST, ""),
                vram=notes.get(VRAM_REQUEST, ""),
            )
        )
    return sorted(out, key=lambda p: p.pod)


def use_colour(stream=None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org: non-empty)."""
    stream = stream if stream is not None else sys.stdout
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _change(before: str, after: str) -> tuple[str, bool]:
    """The cell's text and whether it changed."""
    if before == after:
        return before or "-", False
    return f"{before or '-'} → {after or '-'}", True


def placement_table(before: list[Placement], after: list[Placement], *, colour: bool) -> str:
    """Pods as rows: node and GPUs, and TFLOPS / VRAM requests as ``before → after`` where they changed."""
    old = {p.pod: p for p in before}
    new = {p.pod: p for p in after}
    header = [("POD", False), ("NODE", False), ("GPUS", False), ("TFLOPS", False), ("VRAM", False)]
    rows = [header]
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        cells = [(name if b is not None else f"{name} (gone)", False)]
        for field in ("node", "gpus", "tflops", "vram"):
            cells.append(_change(getattr(a, field) if a else "", getattr(b, field) if b else ""))
        rows.append(cells)
    widths = [max(len(row[i][0]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        shown = []
        for (text, changed), width in zip(row, widths, strict=True):
            padded = text.ljust(width)
            # Bold green marks what the autoscaler changed; padding stays outside the escape codes.
            shown.append(f"\x1b[1;32m{text}\x1b[0m{padded[len(text) :]}" if changed and colour else padded)
        lines.append("  ".join(shown).rstrip())
    return "\n".join(lines)


def tfsched_command(argv0: str | None = None, cwd: Path | None = None) -> str:
    """How the user can run this same ``tfsched`` again: the bare name when it is on PATH,
    else the path of the running one (relative to ``cwd`` when inside it, e.g. ``.venv/bin/tfsched``)."""
    running = Path(argv0 if argv0 is not None else sys.argv[0]).resolve()
    on_path = shutil.which("tfsched")
    if on_path is not None and Path(on_path).resolve() == running:
        return "tfsched"
    here = (cwd or Path.cwd()).resolve()
    try:
        return str(running.relative_to(here))
    except ValueError:
        return str(running)


def run_demo(
    cluster: DemoCluster,
    *,
    timeout: float,
    wait: Wait,
    echo: Callable[[str], None],
    say: Callable[[str], None],
    colour: bool,
) -> None:
    """Place the demo pods, feed them low usage, and wait for the recommendation to be applied.

    Raises :class:`DemoFailed` naming the step that did not happen within ``timeout``.
    """

    def all_placed() -> bool:
        found = placements(cluster)
        return bool(found) and all(p.node and p.gpus for p in found)

    say("waiting for the demo pods to be placed")
    try:
        wait(all_placed, timeout, "the demo pods to be placed")
    except TimeoutError:
        found = placements(cluster)
        placed = sum(1 for p in found if p.node)
        echo(placement_table(found, found, colour=colour))
        raise DemoFailed(
            f"the demo pods were not placed within {timeout:.0f}s ({placed} of {len(found)} on a node); "
            "see `kubectl get events` and the kube-scheduler and tfsched logs"
        ) from None
    before = placements(cluster)
    echo("Placed by kube-scheduler through tfsched:")
    echo(placement_table(before, before, colour=colour))

    inference = [p.pod for p in before if p.app == DEMO_WORKLOAD]
    cluster.put_usage(inference, DEMO_USAGE)
    say(
        f"{DEMO_WORKLOAD} now uses {DEMO_USAGE['tflops']} TFLOPS and 2Gi per pod (Prometheus scrapes it every "
        "second); waiting for the autoscaler (every 10 s) to recommend and apply"
    )

    def workload_field(path: str) -> str:
        args = ("get", "tfw", DEMO_WORKLOAD, "-o", f"jsonpath={{{path}}}")
        return cluster.kubectl(*args, check=False).stdout.strip()

    why = '.status.conditions[?(@.type=="RecommendationProvided")].message'

    def applied() -> bool:
        return bool(workload_field(why)) and workload_field(".status.appliedRecommendedReplicas") == str(len(inference))

    try:
        wait(applied, timeout, "the recommendation to be applied")
    except TimeoutError:
        count = workload_field(".status.appliedRecommendedReplicas") or "0"
        reason = workload_field(why) or "no RecommendationProvided condition"
        raise DemoFailed(
            f"the autoscaler did not apply a recommendation within {timeout:.0f}s "
            f"(appliedRecommendedReplicas {count} of {len(inference)}; {reason}); "
            f"see `kubectl describe tfw {DEMO_WORKLOAD}` and the tfsched log"
        ) from None
    after = placements(cluster)
    echo(f"\nRecommendationProvided: {workload_field(why)}\n")
    echo("Before → after the autoscaler:")
    echo(placement_table(before, after, colour=colour))
