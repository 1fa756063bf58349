"""List + watch into the cache, the way client-go's reflector does.

Each kind lists (paginated), replaces its part of the cache, then watches from
the list's resourceVersion with bookmarks; an expired version (410 Gone)
re-lists, a dropped connection re-watches from the last version seen, errors
back off.  A kind whose API is not installed (404, e.g. CRDs missing) counts
as synced and empty, and is listed again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import ClusterCache, EventType, Kind, Obj, key_of
from tfsched.kubeapi.client import KubeApiError, KubeClient

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500


@dataclass(frozen=True)
class Resource:
    kind: Kind
    path: str


RESOURCES = {
    Kind.NODE: Resource(Kind.NODE, "/api/v1/nodes"),
    Kind.POD: Resource(Kind.POD, "/api/v1/pods"),
    Kind.GPU: Resource(Kind.GPU, f"/apis/{ann.GROUP_VERSION}/{ann.GPU_PLURAL}"),
    Kind.WORKLOAD: Resource(Kind.WORKLOAD, f"/apis/{ann.GROUP_VERSION}/{ann.WORKLOAD_PLURAL}"),
    Kind.WORKLOAD_PROFILE: Resource(Kind.WORKLOAD_PROFILE, f"/apis/{ann.GROUP_VERSION}/{ann.WORKLOAD_PROFILE_PLURAL}"),
}


class _Expired(Exception):
    pass


class Informer:
    def __init__(
        self,
        client: KubeClient,
        cache: ClusterCache,
        resource: Resource,
        keep: Callable[[Obj], bool] | None = None,
        *,
        watch_timeout: int = 300,
        missing_api_retry: float = 30.0,
    ) -> None:
        self.client = client
        self.cache = cache
        self.resource = resource
        self.keep = keep
        self.watch_timeout = watch_timeout
        self.missing_api_retry = missing_api_retry
        self.resource_version = ""
        self.relists = 0

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                if not self.resource_version:
                    await self._list()
                await self._watch()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except _Expired:
                log.info("%s: watch expired, re-listing", self.resource.kind)
                self.resource_version = ""
            except KubeApiError as exc:
                if exc.status == 404:
                    log.warning("%s: API not installed (%s); retrying later", self.resource.kind, exc)
                    self.cache.replace(self.resource.kind, [])
                    self.resource_version = ""
                    await asyncio.sleep(self.missing_api_retry)
                    continue
                if exc.status == 410:
                    self.resource_version = ""
                    continue
                log.warning("%s: %s; retrying in %.1fs", self.resource.kind, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # network errors, server restarts
                log.warning("%s: %s: %s; retrying in %.1fs", self.resource.kind, type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _list(self) -> None:
        """List page by page into the cache; objects of a page are dropped once
        the cache has taken its slim copy."""
        relist = self.cache.relist(self.resource.kind)
        kind_name = self.resource.kind.value
        cont = ""
        while True:
            params = {"limit": LIST_PAGE_SIZE, **({"continue": cont} if cont else {})}
            page = await self.client.get(self.resource.path, **params)
            api_version = page.get("apiVersion", "v1")
            for item in page.get("items") or []:
                item.setdefault("kind", kind_name)  # list items come without kind/apiVersion
                item.setdefault("apiVersion", api_version)
                if self.keep is None or self.keep(item):
                    relist.add(item)
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                self.resource_version = meta.get("resourceVersion", "")
                break
        relist.finish()
        self.relists += 1

    async def _watch(self) -> None:
        kind = self.resource.kind
        async for event in self.client.watch(
            self.resource.path, self.resource_version, timeout_seconds=self.watch_timeout
        ):
            etype = event.get("type")
            obj = event.get("object") or {}
            if etype == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired()
                raise KubeApiError(int(obj.get("code") or 500), str(obj.get("reason", "")), str(obj.get("message", "")))
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = rv
            if etype == "BOOKMARK":
                continue
            if etype not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            if self.keep is not None and etype != "DELETED" and not self.keep(obj):
                ns, name = key_of(obj)
                if self.cache.get(kind, ns, name) is not None:
                    self.cache.apply(kind, EventType.DELETED, obj)
                continue
            self.cache.apply(kind, EventType(etype), obj)
