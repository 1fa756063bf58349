"""A thin asyncio Kubernetes REST client.

``kubernetes_asyncio`` loads the kubeconfig or in-cluster config (TLS files,
tokens, exec plugins and their refresh hook); requests go over our own kept-alive
HTTP/1.1 connections (``http1``) and watches through an aiohttp session, so
bodies stay raw bytes parsed with orjson, watches stream line by line, and
every patch names its content type explicitly.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from tfsched.kubeapi.http1 import Http1Pool

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration


USER_AGENT = "tfsched"


class PatchType(StrEnum):
    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    JSON = "application/json-patch+json"


class KubeConfigError(Exception):
    """No usable Kubernetes configuration; the message says which and why."""


def _kubeconfig_from_env() -> str | None:
    files = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return next((p for p in files if Path(p).is_file()), files[0] if files else None)


class KubeApiError(Exception):
    """A non-2xx answer from the API server, with its Status reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeApi(Protocol):
    """The calls the autoscaler and events make: what :class:`KubeClient` and the test fakes share."""

    async def get(self, path: str, **params: Any) -> dict[str, Any]: ...
    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def patch(
        self, path: str, body: Any, patch_type: PatchType = PatchType.MERGE, **params: Any
    ) -> dict[str, Any]: ...


class KubeClient:
    def __init__(self, configuration: Configuration, *, timeout: float = 30.0) -> None:
        self._conf = configuration
        self.base_url = configuration.host.rstrip("/")
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._ssl = context if self.base_url.startswith("https") else None
        self._timeout_s = timeout
        self._http = Http1Pool(self.base_url, self._ssl)
        self._session: aiohttp.ClientSession | None = None  # watches

    @classmethod
    async def from_config(cls, kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
        """Configured as kubectl is: ``kubeconfig``, else ``$KUBECONFIG`` (the first file of
        the list that exists), else the pod's service account when running in a cluster,
        else ``~/.kube/config``.  Raises :class:`KubeConfigError` saying what is missing."""
        # Imported here: the client package costs ~35 MB, and snapshot mode never needs it.
        from kubernetes_asyncio import config as kube_config
        from kubernetes_asyncio.client import Configuration

        conf = Configuration()
        path = kubeconfig or _kubeconfig_from_env()
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        if path is None and not in_cluster:
            home = Path.home() / ".kube" / "config"
            path = str(home) if home.is_file() else None
        if path is not None and not Path(path).is_file():
            raise KubeConfigError(f"kubeconfig {path} does not exist")
        try:
            if path is not None:
                await kube_config.load_kube_config(config_file=path, context=context, client_configuration=conf)
            elif in_cluster:
                kube_config.load_incluster_config(client_configuration=conf)
            else:
                raise KubeConfigError(
                    "no Kubernetes configuration: pass --kubeconfig, set $KUBECONFIG, "
                    "create ~/.kube/config, or run inside a pod"
                )
        except KubeConfigError:
            raise
        except Exception as exc:  # the loader raises several types for one cause: an unusable config
            where = f"kubeconfig {path}" if path else "in-cluster configuration"
            raise KubeConfigError(f"{where}: {exc}") from None
        return cls(conf)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=64)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        auth = await self._conf.auth_settings()
        bearer = auth.get("BearerToken")
        if bearer and bearer.get("value"):
            headers["Authorization"] = bearer["value"]
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        data = orjson.dumps(body) if body is not None else None
        if data is not None and content_type is None:
            content_type = "application/json"
        headers = await self._headers(content_type)
        query = _params(params)
        target = f"{path}?{urlencode(query)}" if query else path
        status, raw = await self._http.request(method, target, headers, data, timeout or self._timeout_s)
        if status >= 300:
            raise _api_error(status, raw)
        return orjson.loads(raw) if raw else {}

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body=body)

    async def patch(
        self, path: str, body: Any, patch_type: PatchType = PatchType.MERGE, **params: Any
    ) -> dict[str, Any]:
        return await self.request("PATCH", path, body=body, content_type=patch_type.value, params=params)

    async def delete(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("DELETE", path, body=body)

    async def watch(
        self,
        path: str,
        resource_version: str,
        *,
        timeout_seconds: int = 300,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream watch events (``{"type": ..., "object": ...}``) from ``resource_version``,
        with bookmarks requested.  Ends when the server closes the watch.
        ``on_open`` is called once the server has accepted the watch (the
        connection is healthy even if no event comes for minutes)."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        headers = await self._headers()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        async with self.session.get(self.base_url + path, params=params, headers=headers, timeout=timeout) as resp:
            if resp.status >= 300:
                raise _api_error(resp.status, await resp.read())
            if on_open is not None:
                on_open()
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)

    async def close(self) -> None:
        self._http.close()
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)


def _params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items() if v is not None}


def _api_error(status: int, raw: bytes) -> KubeApiError:
    try:
        body = orjson.loads(raw)
        return KubeApiError(status, str(body.get("reason", "")), str(body.get("message", raw[:200])))
    except (orjson.JSONDecodeError, AttributeError):
        return KubeApiError(status, "", raw[:200].decode(errors="replace"))


def path_segment(name: str) -> str:
    """One path segment: a name from an object never becomes a query string or another path."""
    return quote(name, safe="")


def pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{path_segment(namespace)}/pods/{path_segment(name)}" + (f"/{sub}" if sub else "")


def namespaced_path(group_version: str, namespace: str, plural: str, name: str = "", sub: str = "") -> str:
    """``/apis/<group/version>/namespaces/<ns>/<plural>[/<name>[/<sub>]]``, names quoted."""
    path = f"/apis/{group_version}/namespaces/{path_segment(namespace)}/{plural}"
    if name:
        path += f"/{path_segment(name)}"
    return path + (f"/{sub}" if sub else "")
