"""A fake kubelet for kubelet-less nodes.

Without a kubelet, a pod bound to a fake node would stay Pending and a
deleted pod would stay Terminating forever.  This process plays the two
parts of the kubelet that the control plane relies on: it marks bound pods
Running and Ready, and it finishes the deletion of pods being deleted (the
kubelet's final zero-grace delete).  It runs no containers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import UTC, datetime

from tfsched.clustermodel.times import format_time
from tfsched.kubeapi.client import KubeApiError, KubeClient, PatchType, pod_path

log = logging.getLogger("fake-kubelet")


async def reconcile(client: KubeClient, pod: dict) -> None:
    meta = pod.get("metadata") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        return
    try:
        if meta.get("deletionTimestamp"):
            await client.delete(pod_path(ns, name), {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
            return
        status = pod.get("status") or {}
        if status.get("phase") in (None, "Pending"):
            now = format_time(datetime.now(UTC))
            conditions = [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ]
            containers = [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": now}},
                }
                for c in (pod.get("spec") or {}).get("containers", [])
            ]
            patch = {
                "status": {
                    "phase": "Running",
                    "conditions": conditions,
                    "containerStatuses": containers,
                    "startTime": now,
                    "hostIP": "127.0.0.1",
                    "podIP": "127.0.0.1",
                }
            }
            await client.patch(pod_path(ns, name, "status"), patch, PatchType.STRATEGIC)
    except KubeApiError as exc:
        if exc.status not in (404, 409):
            log.warning("pod %s/%s: %s", ns, name, exc)


async def run(kubeconfig: str) -> None:
    client = await KubeClient.from_config(kubeconfig)
    tasks: set[asyncio.Task] = set()

    def spawn(pod: dict) -> None:
        task = asyncio.create_task(reconcile(client, pod))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    while True:
        try:
            listing = await client.get("/api/v1/pods")
            for pod in listing.get("items") or []:
                spawn(pod)
            rv = listing["metadata"]["resourceVersion"]
            while True:
                async for event in client.watch("/api/v1/pods", rv, timeout_seconds=240):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        raise KubeApiError(int(obj.get("code") or 500), "", str(obj.get("message")))
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        spawn(obj)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("watch failed (%s); re-listing", exc)
            await asyncio.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(opts.kubeconfig))


if __name__ == "__main__":
    main()
