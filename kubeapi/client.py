"""A thin asyncio Kubernetes REST client.

``kubeconfig`` says where the API server is and what credential to send (a
token, a client certificate, an exec plugin's, fetched again when it lapses or
is refused); requests go over our own kept-alive HTTP/1.1 connections
(``http1``) and watches through an aiohttp session, so bodies stay raw bytes
parsed with orjson, watches stream line by line, and every patch names its
content type explicitly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from tfsched.kubeapi.http1 import Http1Pool
from tfsched.kubeapi.kubeconfig import ClientCertificate, Credential, KubeConfig, KubeConfigError, load

__all__ = ["KubeApi", "KubeApiError", "KubeClient", "KubeConfigError", "PatchType"]

USER_AGENT = "tfsched"


class PatchType(StrEnum):
    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    JSON = "application/json-patch+json"


class KubeApiError(Exception):
    """A non-2xx answer from the API server, with its Status reason and message."""

    def __init__(self, status: int, reason: str, message: str, retry_after_s: object = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        # The wait the answer asked for, as sent (a 429's, a 5xx's): the Status's details.retryAfterSeconds,
        # else the Retry-After header's seconds; read with ratelimit.retry_after.
        self.retry_after_s = retry_after_s


class KubeApi(Protocol):
    """The calls the autoscaler and events make: what :class:`KubeClient` and the test fakes share."""

    async def get(self, path: str, **params: Any) -> dict[str, Any]: ...
    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def patch(
        self, path: str, body: Any, patch_type: PatchType = PatchType.MERGE, **params: Any
    ) -> dict[str, Any]: ...


class KubeClient:
    def __init__(
        self, config: KubeConfig, *, timeout: float = 30.0, certificate: ClientCertificate | None = None
    ) -> None:
        """``certificate``: the client certificate of the credential fetched first, if known
        (any other is put in place at the first request)."""
        self.config = config
        self.base_url = config.server.rstrip("/")
        self.https = self.base_url.startswith("https")
        self._certificate = certificate
        self._ssl = config.ssl_context(certificate) if self.https else None
        self._timeout_s = timeout
        self._http = Http1Pool(self.base_url, self._ssl, server_name=config.tls_server_name)
        self._session: aiohttp.ClientSession | None = None  # watches
        self._retired_session: aiohttp.ClientSession | None = None
        self._static_headers = {"Accept": "application/json", "User-Agent": USER_AGENT}

    @classmethod
    async def from_config(cls, kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
        """Configured as kubectl is (:func:`tfsched.kubeapi.kubeconfig.load`); the first
        credential is fetched now, so a broken exec plugin fails here.
        Raises :class:`KubeConfigError` naming the file and field at fault."""
        config = load(kubeconfig, context)
        first = await config.credentials.current()
        return cls(config, certificate=first.certificate)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=64)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _credential(self) -> Credential:
        credential = await self.config.credentials.current()
        if self.https and credential.certificate != self._certificate:
            await self._use_certificate(credential.certificate)
        return credential

    async def _use_certificate(self, certificate: ClientCertificate | None) -> None:
        """New connections present ``certificate``; open ones keep theirs until they close."""
        self._ssl = self.config.ssl_context(certificate)
        self._certificate = certificate
        self._http.use_ssl(self._ssl)
        if self._session is not None:
            # Its watches run on until they end (minutes); the one retired before is done by now.
            if self._retired_session is not None and not self._retired_session.closed:
                await self._retired_session.close()
            self._retired_session, self._session = self._session, None

    def _headers(self, credential: Credential, content_type: str | None = None) -> dict[str, str]:
        headers = dict(self._static_headers)
        if credential.authorization:
            headers["Authorization"] = credential.authorization
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
        query = _params(params)
        target = f"{path}?{urlencode(query)}" if query else path
        for _ in range(2):
            credential = await self._credential()
            headers = self._headers(credential, content_type)
            answer = await self._http.request(method, target, headers, data, timeout or self._timeout_s)
            # A 401 is answered before the request is acted on: safe to send again with a fresh credential.
            if answer.status != 401 or not self.config.credentials.refused(credential):
                break
        if answer.status >= 300:
            raise _api_error(answer.status, answer.body, answer.retry_after)
        return orjson.loads(answer.body) if answer.body else {}

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
        credential = await self._credential()
        headers = self._headers(credential)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        async with self.session.get(
            self.base_url + path,
            params=params,
            headers=headers,
            timeout=timeout,
            server_hostname=self.config.tls_server_name,
        ) as resp:
            if resp.status == 401:
                self.config.credentials.refused(credential)  # the informer's retry brings a fresh one
            if resp.status >= 300:
                raise _api_error(resp.status, await resp.read(), resp.headers.get("Retry-After", ""))
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
        for session in (self._session, self._retired_session):
            if session is not None and not session.closed:
                await session.close()
        await asyncio.sleep(0)


def _params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items() if v is not None}


def _api_error(status: int, raw: bytes, retry_after_header: str = "") -> KubeApiError:
    # The wait a 429 asks for: the Status's details.retryAfterSeconds, else the Retry-After
    # header (priority and fairness answers in plain text with only the header).
    # Only plain ASCII seconds of sane length: "²" is a digit to str.isdigit and not to int().
    seconds = retry_after_header.strip()
    header_wait = int(seconds) if seconds.isascii() and seconds.isdigit() and len(seconds) <= 9 else None
    try:
        body = orjson.loads(raw)
        details = body.get("details")
        retry = details.get("retryAfterSeconds") if isinstance(details, dict) else None
        return KubeApiError(
            status,
            str(body.get("reason", "")),
            str(body.get("message", raw[:200])),
            retry if retry is not None else header_wait,
        )
    except (orjson.JSONDecodeError, AttributeError):
        return KubeApiError(status, "", raw[:200].decode(errors="replace"), header_wait)


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
