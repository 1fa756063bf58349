"""The kept-alive HTTP/1.1 pool the Kubernetes client sends requests through,
against a real HTTP server (aiohttp's) and a raw socket server for the answers a
framework would not send."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from tfsched.kubeapi.client import KubeApiError, KubeClient
from tfsched.kubeapi.http1 import Answer, Http1Pool, HttpError
from tfsched.kubeapi.kubeconfig import Credential, Credentials, KubeConfig

HEADERS = {"Accept": "application/json"}
SEEN = web.AppKey("seen", list)


async def serve(app: web.Application, **kwargs) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, **kwargs)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def echo_app() -> web.Application:
    seen: list[dict] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            {"method": request.method, "path": request.path_qs, "body": body, "ua": request.headers.get("User-Agent")}
        )
        return web.json_response({"method": request.method, "path": request.path_qs, "body": body.decode()})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b'{"items":[', b"1,2,", b"3]}"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def closing(request: web.Request) -> web.Response:
        return web.Response(body=b"{}", headers={"Connection": "close"})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=b"{}")

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"kind": "Status", "reason": "NotFound", "message": 'pods "x" not found'}, status=404)

    app = web.Application()
    app[SEEN] = seen
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/closing", closing)
    app.router.add_get("/slow", slow)
    app.router.add_get("/missing", missing)
    return app


@contextlib.asynccontextmanager
async def echo_pool(**runner_kwargs) -> AsyncIterator[Http1Pool]:
    """A pool to a running echo_app server; both closed after."""
    runner, url = await serve(echo_app(), **runner_kwargs)
    pool = Http1Pool(url, None)
    try:
        yield pool
    finally:
        pool.close()
        await runner.cleanup()


async def test_requests_reuse_one_connection_and_carry_their_body():
    async with echo_pool() as pool:
        for i in range(3):
            status, data, _ = await pool.request("POST", f"/echo/a?n={i}", HEADERS, b'{"x":1}', 5)
            assert status == 200
            assert orjson.loads(data) == {"method": "POST", "path": f"/echo/a?n={i}", "body": '{"x":1}'}
        status, data, _ = await pool.request("GET", "/echo/b", HEADERS, None, 5)
        assert orjson.loads(data)["body"] == ""
        assert pool.opened == 1


async def test_a_chunked_answer_is_joined_and_connection_close_is_honoured():
    async with echo_pool() as pool:
        assert (await pool.request("GET", "/chunked", HEADERS, None, 5)) == Answer(200, b'{"items":[1,2,3]}')
        await pool.request("GET", "/chunked", HEADERS, None, 5)
        assert pool.opened == 1
        await pool.request("GET", "/closing", HEADERS, None, 5)
        await pool.request("GET", "/chunked", HEADERS, None, 5)
        assert pool.opened == 2  # the connection the server closed was not reused


async def test_a_connection_the_server_closed_while_idle_is_replaced():
    async with echo_pool(keepalive_timeout=0.2) as pool:
        await pool.request("POST", "/echo/x", HEADERS, b"{}", 5)
        await asyncio.sleep(0.6)  # the server closes the idle connection
        status, _, _ = await pool.request("POST", "/echo/x", HEADERS, b"{}", 5)
        assert status == 200 and pool.opened == 2


async def test_a_timeout_closes_the_connection_instead_of_reusing_it():
    async with echo_pool() as pool:
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/slow", HEADERS, None, 0.2)
        # A late answer on that connection must never be read as the next request's.
        status, data, _ = await pool.request("GET", "/echo/after", HEADERS, None, 5)
        assert status == 200 and orjson.loads(data)["path"] == "/echo/after" and pool.opened == 2


async def test_header_values_cannot_inject_lines():
    pool = Http1Pool("http://127.0.0.1:1", None)
    with pytest.raises(ValueError, match="line break"):
        await pool.request("GET", "/x", {"Authorization": "Bearer a\r\nX-Evil: 1"}, None, 1)
    with pytest.raises(ValueError, match="line break"):
        await pool.request("GET", "/x HTTP/1.1\r\nX-Evil: 1", HEADERS, None, 1)


async def raw_server(answers: list[bytes]) -> tuple[asyncio.Server, str, list[bytes]]:
    """Answers each connection's first request with the next canned bytes, then closes it."""
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answers.pop(0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", got


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"garbage\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended inside its body"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "conflicting content-length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX", "does not end with CRLF"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "ended inside its headers"),
        (b"", "closed the connection before answering"),
    ],
)
async def test_answers_that_are_not_readable_http_are_errors(answer: bytes, error: str):
    server, url, _ = await raw_server([answer])
    pool = Http1Pool(url, None)
    try:
        with pytest.raises(HttpError, match=error):
            await pool.request("POST", "/x", HEADERS, b"{}", 5)
    finally:
        pool.close()
        server.close()


async def test_a_body_to_the_end_of_the_connection_and_an_interim_answer():
    server, url, got = await raw_server(
        [b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n{"a":1}', b"HTTP/1.1 204 No Content\r\n\r\n"]
    )
    pool = Http1Pool(url, None)
    try:
        assert await pool.request("GET", "/x", HEADERS, None, 5) == Answer(200, b'{"a":1}')
        assert await pool.request("DELETE", "/y", HEADERS, None, 5) == Answer(204, b"")
        assert got[0].startswith(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:")
    finally:
        pool.close()
        server.close()


TOO_MANY = b"Too many requests, please try again later.\n"


async def test_a_429_carries_its_retry_after_header_to_the_client():
    # Priority and fairness answers a 429 in plain text; its wait is only in the header.
    plain = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: %d\r\n\r\n%s" % (
        len(TOO_MANY),
        TOO_MANY,
    )
    server, url, _ = await raw_server([plain])
    pool = Http1Pool(url, None)
    try:
        assert await pool.request("GET", "/x", HEADERS, None, 5) == Answer(429, TOO_MANY, "7")
    finally:
        pool.close()
        server.close()


def _answer(status: str, body: bytes, retry_after: str) -> bytes:
    header = f"Retry-After: {retry_after}\r\n".encode() if retry_after else b""
    return b"HTTP/1.1 %s\r\n%sContent-Length: %d\r\n\r\n%s" % (status.encode(), header, len(body), body)


STATUS_429 = orjson.dumps(
    {"kind": "Status", "reason": "TooManyRequests", "message": "slow down", "details": {"retryAfterSeconds": 3}}
)


@pytest.mark.parametrize(
    ("answer", "wait"),
    [
        (_answer("429 Too Many Requests", TOO_MANY, "7"), 7),
        (_answer("429 Too Many Requests", STATUS_429, "9"), 3),  # the Status's own figure first
        (_answer("429 Too Many Requests", TOO_MANY, ""), None),
        (_answer("429 Too Many Requests", TOO_MANY, "soon"), None),
        (_answer("429 Too Many Requests", TOO_MANY, "\u00b2".encode().decode("latin-1")), None),
        (_answer("503 Service Unavailable", TOO_MANY, "9" * 40), None),
    ],
)
async def test_the_client_reads_the_wait_a_429_asks_for(answer: bytes, wait: int | None):
    server, url, _ = await raw_server([answer])
    client = KubeClient(KubeConfig(url, Credentials.fixed(Credential())))
    try:
        with pytest.raises(KubeApiError) as info:
            await client.get("/x")
        assert info.value.retry_after_s == wait
        assert info.value.status in (429, 503)
    finally:
        await client.close()
        server.close()


async def test_the_client_sends_query_parameters_and_maps_errors():
    runner, url = await serve(echo_app())
    client = KubeClient(KubeConfig(url, Credentials.fixed(Credential())))
    try:
        got = await client.get("/echo/pods", labelSelector="a=b,c", limit=5, watch=False)
        assert got["path"] == "/echo/pods?labelSelector=a%3Db%2Cc&limit=5&watch=false"
        with pytest.raises(KubeApiError) as info:
            await client.get("/missing")
        assert info.value.status == 404 and info.value.reason == "NotFound"
        created = await client.create("/echo/c", {"k": "v"})
        assert orjson.loads(created["body"]) == {"k": "v"}
        assert runner.app[SEEN][-1]["ua"] == "tfsched"
    finally:
        await client.close()
        await runner.cleanup()
