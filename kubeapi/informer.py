"""List + watch into the cache, the way client-go's reflector does.

Each kind lists (paginated), replaces its part of the cache, then watches from
the list's resourceVersion with bookmarks; an expired version (410 Gone)
re-lists, a dropped connection re-watches from the last version seen, errors
back off; a kind unreachable for longer than a bound is distrusted and listed
afresh.  A kind whose API is not installed (404, e.g. CRDs missing) counts
as synced and empty, and is listed again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from tfsched.clustermodel import annotations as ann
from tfsched.clustermodel.cache import ClusterCache, EventType, Kind, Obj, ObjectError, key_of
from tfsched.kubeapi.client import KubeApiError, KubeClient

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
MAX_BACKOFF = 10.0  # short enough to be back within seconds of the API server


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


async def list_objects(
    client: KubeClient, resource: Resource, meta: dict[str, Any] | None = None
) -> AsyncIterator[Any]:
    """Every object of a kind, page by page (a quorum read: no resourceVersion),
    each with the ``kind`` and ``apiVersion`` list items come without.  The
    last page's metadata (its resourceVersion) is left in ``meta``."""
    async for items in list_pages(client, resource, meta):
        for item in items:
            yield item


async def list_pages(
    client: KubeClient, resource: Resource, meta: dict[str, Any] | None = None
) -> AsyncIterator[list[Any]]:
    """:func:`list_objects` a page at a time (one resumption per page, not per object)."""
    cont = ""
    while True:
        params = {"limit": LIST_PAGE_SIZE, **({"continue": cont} if cont else {})}
        page = await client.get(resource.path, **params)
        api_version = page.get("apiVersion", "v1")
        items = page.get("items") or []
        page_meta = page.get("metadata") or {}
        del page  # neither it nor its items are held while the next page is fetched
        if not isinstance(items, list):
            items = list(items)
        for item in items:
            if isinstance(item, dict):
                item.setdefault("kind", resource.kind.value)
                item.setdefault("apiVersion", api_version)
        yield items
        del items
        cont = page_meta.get("continue") or ""
        if not cont:
            if meta is not None:
                meta.clear()
                meta.update(page_meta)
            return


class _Expired(Exception):
    pass


class Informer:
    """One kind, listed then watched into the cache.

    The kind counts as *synced* in the cache (and the ledger as trustworthy
    for it) only while its view is current: from the end of a list until a
    re-list starts, or until the API server has been unreachable for longer
    than ``max_outage``; after such an outage the kind is listed afresh (a
    quorum read) before it counts again.  Objects are taken in one by one
    and a bad one never stops the list or the watch (see ``ClusterCache.apply``).
    """

    def __init__(
        self,
        client: KubeClient,
        cache: ClusterCache,
        resource: Resource,
        keep: Callable[[Obj], bool] | None = None,
        *,
        watch_timeout: int = 300,
        missing_api_retry: float = 30.0,
        max_outage: float = 10.0,
    ) -> None:
        self.client = client
        self.cache = cache
        self.resource = resource
        self.keep = keep
        self.watch_timeout = watch_timeout
        self.missing_api_retry = missing_api_retry
        self.max_outage = max_outage
        self.resource_version = ""
        self.relists = 0
        self._outage: asyncio.TimerHandle | None = None
        self._relist_requested = asyncio.Event()

    def request_relist(self) -> None:
        """Distrust this kind and list it afresh (after a failover, or an outage)."""
        self.cache.synced.discard(self.resource.kind)
        self.resource_version = ""
        self._relist_requested.set()

    async def relisted(self) -> None:
        """Request a fresh list and wait until it has been taken in."""
        before = self.relists
        self.request_relist()
        while self.relists == before:
            await asyncio.sleep(0.05)

    def _connected(self) -> None:
        if self._outage is not None:
            self._outage.cancel()
            self._outage = None

    def _disconnected(self) -> None:
        if self._outage is None and self.resource.kind in self.cache.synced:
            self._outage = asyncio.get_running_loop().call_later(self.max_outage, self._outage_exceeded)

    def _outage_exceeded(self) -> None:
        self._outage = None
        log.warning(
            "%s: API server unreachable for more than %gs; not trusting the cache until a fresh list",
            self.resource.kind,
            self.max_outage,
        )
        self.request_relist()

    async def run(self) -> None:
        backoff = 0.5
        try:
            while True:
                try:
                    if not self.resource_version:
                        await self._list()
                    self._connected()
                    await self._watch_until_relist()
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
                        await self._pause(self.missing_api_retry)
                        continue
                    if exc.status == 410:
                        self.resource_version = ""
                        continue
                    self._disconnected()
                    log.warning("%s: %s; retrying in %.1fs", self.resource.kind, exc, backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                except Exception as exc:  # network errors, server restarts
                    self._disconnected()
                    log.warning("%s: %s: %s; retrying in %.1fs", self.resource.kind, type(exc).__name__, exc, backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            self._connected()

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by a relist request."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._relist_requested.wait(), seconds)

    async def _list(self) -> None:
        """List page by page into the cache; objects of a page are dropped once
        the cache has taken its slim copy.  The kind is not synced meanwhile."""
        self._relist_requested.clear()
        self.cache.synced.discard(self.resource.kind)
        started = time.monotonic()
        relist = self.cache.relist(self.resource.kind)
        meta: dict[str, Any] = {}
        async for items in list_pages(self.client, self.resource, meta):
            kept = []
            for item in items:
                if not isinstance(item, dict):
                    self.cache.on_error(self.resource.kind, item, ObjectError("list item is not an object"))
                elif self._keeps(item):
                    kept.append(item)
            del items
            relist.add_page(kept)
            del kept
        self.resource_version = meta.get("resourceVersion", "")
        relist.finish()
        self.relists += 1
        # What a slow start is made of, per kind (pages interleave with the other kinds' lists).
        log.info("%s: listed %d in %.1f s", self.resource.kind, len(relist.seen), time.monotonic() - started)

    def _keeps(self, obj: Obj) -> bool:
        if self.keep is None:
            return True
        try:
            return self.keep(obj)
        except Exception as exc:
            self.cache.on_error(self.resource.kind, obj, exc)
            return False

    async def _watch_until_relist(self) -> None:
        """Watch until the server ends it, or a relist is requested (a silent
        watch must not delay a failover's fresh list)."""
        watch = asyncio.ensure_future(self._watch())
        relist = asyncio.ensure_future(self._relist_requested.wait())
        try:
            await asyncio.wait({watch, relist}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended = watch.done()
            for task in (watch, relist):
                task.cancel()
            await asyncio.gather(watch, relist, return_exceptions=True)
        if ended:
            watch.result()  # the server ended it: re-raise its error, if any

    async def _watch(self) -> None:
        kind = self.resource.kind
        async for event in self.client.watch(
            self.resource.path, self.resource_version, timeout_seconds=self.watch_timeout, on_open=self._connected
        ):
            etype = event.get("type") if isinstance(event, dict) else None
            obj = event.get("object") if isinstance(event, dict) else None
            if not isinstance(obj, dict):
                continue
            if etype == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired()
                raise KubeApiError(int(obj.get("code") or 500), str(obj.get("reason", "")), str(obj.get("message", "")))
            meta = obj.get("metadata")
            rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
            if rv and isinstance(rv, str):
                self.resource_version = rv
            if etype == "BOOKMARK" or etype not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            if etype != "DELETED" and not self._keeps(obj):
                try:
                    ns, name = key_of(obj)
                except ObjectError as exc:
                    self.cache.on_error(kind, obj, exc)
                    continue
                if self.cache.get(kind, ns, name) is not None:
                    self.cache.apply(kind, EventType.DELETED, obj)
                continue
            self.cache.apply(kind, EventType(etype), obj)
