"""Create fake GPU nodes and their GPU objects through the API, status included."""

from __future__ import annotations

import asyncio
from typing import Any

from tfsched.clustermodel import annotations as ann
from tfsched.kubeapi.client import KubeApiError, KubeClient, PatchType

GPUS_PATH = f"/apis/{ann.GROUP_VERSION}/{ann.GPU_PLURAL}"


async def _create_with_status(client: KubeClient, collection: str, obj: dict[str, Any]) -> None:
    """Create (or keep) the object, then set its status through the status subresource,
    since the API server drops status on create."""
    name = obj["metadata"]["name"]
    body = {k: v for k, v in obj.items() if k != "status"}
    try:
        await client.create(collection, body)
    except KubeApiError as exc:
        if exc.status != 409:  # already there: just refresh its status
            raise
    await client.patch(f"{collection}/{name}/status", {"status": obj["status"]}, PatchType.MERGE)


async def create_nodes_and_gpus(
    kubeconfig: str, nodes: list[dict[str, Any]], gpus: list[dict[str, Any]], concurrency: int = 32
) -> None:
    client = await KubeClient.from_config(kubeconfig)
    limit = asyncio.Semaphore(concurrency)

    async def one(collection: str, obj: dict[str, Any]) -> None:
        async with limit:
            await _create_with_status(client, collection, obj)

    try:
        await asyncio.gather(*(one("/api/v1/nodes", n) for n in nodes))
        await asyncio.gather(*(one(GPUS_PATH, g) for g in gpus))
    finally:
        await client.close()
