"""Kept-alive HTTP/1.1 connections to the API server for request/response calls.

A bind's POST, a status patch, a GET or a list page through aiohttp's client
costs about 0.2 ms of CPU more than writing the request and reading the
answer on a kept-alive connection (measured: bench/RESULTS.md, issue 13);
binds are a fifth of tfsched's work per pod.  Watches stream and stay on
aiohttp.  The peer is the API server we were configured for, so this reads
what a conforming HTTP/1.1 server sends (a length, chunks, or a body to the
end of the connection) and refuses anything else as a broken connection.

A request is retried on a fresh connection only when it cannot have been
seen: a kept-alive connection the server had already closed (found at EOF
before the write), or a GET whose reused connection ended before any
answer, as Go's transport does; a write whose fate is unknown is an error
for the caller to reconcile (bind looks the pod up on kube-scheduler's retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024  # a response's status line and headers
IDLE_S = 15.0  # a kept-alive connection idle longer than this is closed, not reused
MAX_CONNECTIONS = 128  # concurrent requests (binds overlap for as long as the API server takes)
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")


class Answer(NamedTuple):
    status: int
    body: bytes
    # The Retry-After header as sent, or "": the API server's 429 (max-in-flight, priority
    # and fairness) carries its wait there, with a plain-text body.
    retry_after: str = ""


class HttpError(ConnectionError):
    """The connection broke or the answer was not HTTP/1.1 we can read."""


class _EndedBeforeAnswer(HttpError):
    pass


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Http1Pool:
    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None,
        limit: int = MAX_CONNECTIONS,
        *,
        server_name: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"API server URL {base_url!r} is not http(s)://host[:port]")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl = ssl_context if self.https else None
        self.server_name = server_name or self.host  # the name the certificate must carry (tls-server-name)
        self._host_header = parts.netloc.rpartition("@")[2]
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self.opened = 0  # connections opened (tests: reuse)

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> Answer:
        """The answer to one request; ``target`` is the path with its query.
        Raises :class:`HttpError` for a broken exchange, ``TimeoutError`` past ``timeout``."""
        head = self._head(method, target, headers, body)
        # Waiting for a free connection counts: a bind is bounded below a lease duration.
        async with asyncio.timeout(timeout), self._slots:
            while True:
                conn, reused = await self._take()
                try:
                    answer, keep = await self._exchange(conn, head, body)
                except _EndedBeforeAnswer:
                    conn.close()
                    if reused and method == "GET":
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                if keep:
                    conn.idle_since = time.monotonic()
                    self._idle.append(conn)
                else:
                    conn.close()
                return answer

    def use_ssl(self, context: ssl.SSLContext) -> None:
        """New connections use ``context`` (a renewed client certificate); idle ones are closed."""
        self.ssl = context if self.https else None
        self.close()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _head(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
        lines = [f"{method} {self.prefix}{target} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("a request line or header holds a line break")
        return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"

    async def _take(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            # The server may have closed it while idle: its EOF is already read.
            if now - conn.idle_since < IDLE_S and not conn.reader.at_eof():
                return conn, True
            conn.close()
        reader, writer = await asyncio.open_connection(
            self.host,
            self.port,
            ssl=self.ssl,
            server_hostname=self.server_name if self.ssl else None,
            limit=MAX_HEAD_BYTES,
        )
        self.opened += 1
        return _Connection(reader, writer), False

    async def _exchange(self, conn: _Connection, head: bytes, body: bytes | None) -> tuple[Answer, bool]:
        conn.writer.write(head + body if body else head)
        await conn.writer.drain()
        reader = conn.reader
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _EndedBeforeAnswer("the API server closed the connection before answering") from None
                raise HttpError("the API server's answer ended inside its headers") from None
            except asyncio.LimitOverrunError:
                raise HttpError(f"the API server's response headers exceed {MAX_HEAD_BYTES} bytes") from None
            status, version, fields = _parse_head(raw)
            if status >= 200 or status == 101:
                break  # 1xx interim answers (never asked for) are skipped
        keep = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
        encoding = fields.get("transfer-encoding", "").lower()
        try:
            if encoding:
                if encoding != "chunked":
                    raise HttpError(f"unsupported Transfer-Encoding {encoding[:40]!r}")
                data = await _read_chunked(reader)
            elif "content-length" in fields:
                length = fields["content-length"]
                if not length.isdigit():
                    raise HttpError(f"bad Content-Length {length[:40]!r}")
                data = await reader.readexactly(int(length))
            elif status in (204, 304):
                data = b""
            else:
                data, keep = await reader.read(), False
        except asyncio.IncompleteReadError:
            raise HttpError("the API server's answer ended inside its body") from None
        except asyncio.LimitOverrunError:
            raise HttpError(f"a chunk-size line of the API server's answer exceeds {MAX_HEAD_BYTES} bytes") from None
        return Answer(status, data, fields.get("retry-after", "")), keep


def _parse_head(raw: bytes) -> tuple[int, str, dict[str, str]]:
    lines = raw[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"malformed response header line {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        if key in fields and key in ("content-length", "transfer-encoding") and fields[key] != value:
            raise HttpError(f"conflicting {key} headers")
        fields[key] = value
    return int(code), version, fields


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise HttpError(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError("a chunk does not end with CRLF")
