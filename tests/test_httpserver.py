"""The listeners' HTTP/1.1 server against a raw socket: framing, limits, timeouts, flow."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
import pytest

from tests.serving import listening
from tfsched.extender import httpserver
from tfsched.extender.httpserver import BodyError, HttpServer, Reply, Request, Route, Routes
from tfsched.extender.webhook import webhook_routes

LIMIT = 1000


async def echo(request: Request) -> Reply:
    try:
        body = await request.read()
    except BodyError as exc:
        return Reply.error(str(exc))
    return Reply.json({"length": len(body), "head": body[:20].decode("latin-1")})


async def hello(request: Request) -> Reply:
    return Reply.text("hello")


async def large(request: Request) -> Reply:
    return Reply.text("L" * 1000)


async def broken(request: Request) -> Reply:
    raise RuntimeError("a bug")


async def napping(request: Request) -> Reply:
    await asyncio.sleep(0.01)
    return Reply.json({"by": "napping", "body": (await request.read()).decode()})


def quick_echo(request: Request) -> Reply | None:
    """Answers on the spot, except "later" (left to the handler) and "bug"."""
    body = request.body()
    if body == b"bug":
        raise RuntimeError("a quick bug")
    if body == b"later":
        return None
    return Reply.json({"by": "quick", "body": body.decode()})


async def echo_later(request: Request) -> Reply:
    return Reply.json({"by": "handler", "body": (await request.read()).decode()})


def quick_large(request: Request) -> Reply | None:
    return Reply.text("Q" * 1000)


ROUTES: Routes = {
    ("POST", "/echo"): Route(echo, LIMIT),
    ("GET", "/hello"): Route(hello, 0),
    ("GET", "/large"): Route(large, 0),
    ("POST", "/unread"): Route(hello, LIMIT),
    ("GET", "/broken"): Route(broken, 0),
    ("POST", "/napping"): Route(napping, LIMIT),
    ("POST", "/quick"): Route(echo_later, LIMIT, quick_echo),
    ("GET", "/quick-large"): Route(large, 0, quick_large),
}


@contextlib.asynccontextmanager
async def connected(routes: Routes = ROUTES) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One client connection to ``routes`` served for the block."""
    async with listening(routes) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            yield reader, writer
        finally:
            writer.close()


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    return status, headers, body


async def closed(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    return await asyncio.wait_for(reader.read(), within) == b""


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_requests_are_answered_in_order_on_one_connection() -> None:
    async with connected() as (reader, writer):
        for i in range(3):
            writer.write(post("/echo", b"x" * i))
            status, headers, body = await read_reply(reader)
            assert status == 200 and headers["content-type"] == "application/json" and "date" in headers
            assert orjson.loads(body)["length"] == i
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, body = await read_reply(reader)
        assert (status, body, headers["connection"]) == (200, b"hello", "close")
        assert await closed(reader)


async def test_pipelined_requests_in_one_write_get_their_replies_in_order() -> None:
    async with connected() as (reader, writer):
        writer.write(b"".join(post("/echo", str(i).encode() * i) for i in range(1, 6)))
        lengths = [orjson.loads((await read_reply(reader))[2])["length"] for _ in range(5)]
        assert lengths == [1, 2, 3, 4, 5]


async def test_quick_and_awaited_answers_keep_the_order_of_pipelined_requests(caplog) -> None:
    """Answered on the spot while nothing is ahead; behind an awaited one, the worker takes
    them all in order; alone again, on the spot."""
    async with connected() as (reader, writer):

        async def replies(n: int) -> list[tuple[int, dict]]:
            return [(status, orjson.loads(body)) for status, _, body in [await read_reply(reader) for _ in range(n)]]

        writer.write(post("/quick", b"a") + post("/napping", b"b") + post("/quick", b"c") + post("/quick", b"bug"))
        assert await replies(4) == [
            (200, {"by": "quick", "body": "a"}),
            (200, {"by": "napping", "body": "b"}),
            (200, {"by": "handler", "body": "c"}),
            (200, {"by": "handler", "body": "bug"}),
        ]
        writer.write(post("/quick", b"later"))
        assert await replies(1) == [(200, {"by": "handler", "body": "later"})]
        writer.write(post("/quick", b"d"))
        assert await replies(1) == [(200, {"by": "quick", "body": "d"})]
        writer.write(post("/quick", b"bug"))
        assert await replies(1) == [(500, {"error": "internal error: RuntimeError: a quick bug"})]
        writer.write(post("/quick", b"e"))
        assert await replies(1) == [(200, {"by": "quick", "body": "e"})]
    assert [r.getMessage() for r in caplog.records if r.exc_info] == ["POST /quick failed"]


async def test_a_pipelined_burst_is_answered_on_the_spot_only_up_to_a_cap(monkeypatch) -> None:
    monkeypatch.setattr(httpserver, "QUICK_PER_READ", 2)
    async with connected() as (reader, writer):
        writer.write(b"".join(post("/quick", str(i).encode()) for i in range(5)))
        by = [orjson.loads((await read_reply(reader))[2]) for _ in range(5)]
        assert by == [{"by": "quick", "body": "0"}, {"by": "quick", "body": "1"}] + [
            {"by": "handler", "body": str(i)} for i in range(2, 5)
        ]


async def test_a_small_body_in_pieces_is_read_ahead_and_answered_on_the_spot(monkeypatch) -> None:
    monkeypatch.setattr(httpserver, "READ_AHEAD_BYTES", 10)
    async with connected() as (reader, writer):
        whole = post("/quick", b"0123456789")
        writer.write(whole[:-6])
        await asyncio.sleep(0.05)
        writer.write(whole[-6:])
        assert orjson.loads((await read_reply(reader))[2]) == {"by": "quick", "body": "0123456789"}
        longer = post("/quick", b"0123456789a")  # over the read-ahead: its handler asks for it
        writer.write(longer[:-6])
        await asyncio.sleep(0.05)
        writer.write(longer[-6:])
        assert orjson.loads((await read_reply(reader))[2]) == {"by": "handler", "body": "0123456789a"}


async def test_a_small_body_read_ahead_that_stalls_closes_the_connection(monkeypatch, caplog) -> None:
    monkeypatch.setattr(httpserver, "HEAD_TIMEOUT_S", 0.2)
    monkeypatch.setattr(httpserver, "SWEEP_INTERVAL_S", 0.05)
    async with listening(ROUTES) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/quick", b"0123456789")[:-3])
        assert await closed(reader, 2)
        writer.close()
        await asyncio.sleep(0.05)
        assert not server.connections
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_chunked_body_is_read_whole() -> None:
    async with connected() as (reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"4\r\ndefg\r\n0\r\n\r\n")
        status, _, body = await read_reply(reader)
        assert status == 200 and orjson.loads(body) == {"length": 7, "head": "abcdefg"}


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_route_limit_is_a_400_and_the_connection_closes(chunked: bool) -> None:
    async with connected() as (reader, writer):
        body = b"y" * (LIMIT + 1)
        if chunked:
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        else:
            writer.write(post("/echo", body))
        status, _, answer = await read_reply(reader)
        assert status == 400 and orjson.loads(answer) == {"error": f"request body too large (limit {LIMIT} bytes)"}
        assert await closed(reader)


async def test_a_declared_length_over_the_limit_is_refused_before_any_body_arrives() -> None:
    async with connected() as (reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        status, _, answer = await read_reply(reader)
        assert status == 400 and "too large" in orjson.loads(answer)["error"]
        assert await closed(reader)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "malformed HTTP request"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", "malformed"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "malformed"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "malformed"),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed"),
        (b"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n", "malformed"),
    ],
)
async def test_bytes_the_parser_refuses_get_a_json_400_and_the_connection_closes(raw: bytes, why: str) -> None:
    async with connected() as (reader, writer):
        writer.write(raw)
        status, headers, answer = await read_reply(reader)
        assert status == 400 and headers["content-type"] == "application/json"
        assert why in orjson.loads(answer)["error"]
        assert await closed(reader)


async def test_a_request_after_a_good_one_that_is_garbage_still_gets_the_good_reply_first() -> None:
    async with connected() as (reader, writer):
        writer.write(post("/echo", b"ok") + b"\x00\x01 garbage\r\n\r\n")
        assert orjson.loads((await read_reply(reader))[2])["length"] == 2
        assert (await read_reply(reader))[0] == 400
        assert await closed(reader)


async def test_an_upgrade_is_answered_as_plain_http_then_the_connection_closes() -> None:
    async with connected() as (reader, writer):
        writer.write(b"GET /hello HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI * HTTP/2.0\r\n")
        status, headers, body = await read_reply(reader)
        assert (status, body, headers["connection"]) == (200, b"hello", "close")
        assert await closed(reader)


async def test_a_head_over_the_limit_is_refused() -> None:
    async with connected() as (reader, writer):
        writer.write(b"GET /hello HTTP/1.1\r\n")
        for _ in range(httpserver.MAX_HEAD_BYTES // 1000 + 2):
            writer.write(b"X-Filler: " + b"f" * 988 + b"\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        status, _, answer = await read_reply(reader)
        assert status == 400 and "request head too large" in orjson.loads(answer)["error"]
        assert await closed(reader)


async def test_a_slow_head_a_silent_connection_and_an_idle_one_are_closed(monkeypatch) -> None:
    monkeypatch.setattr(httpserver, "HEAD_TIMEOUT_S", 0.2)
    monkeypatch.setattr(httpserver, "SWEEP_INTERVAL_S", 0.05)
    monkeypatch.setattr(httpserver, "KEEPALIVE_TIMEOUT_S", 0.4)
    async with listening(ROUTES) as (server, port):
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
        slow.write(b"GET /hello HTTP/1.1\r\nHost")  # and never the rest
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", port)
        idle.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_reply(idle_reader))[0] == 200
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await closed(silent_reader, 2) and await closed(slow_reader, 2)
        assert loop.time() - started < 0.4
        assert await closed(idle_reader, 2)
        assert 0.3 < loop.time() - started < 2
        for writer in (silent, slow, idle):
            writer.close()
        assert not server.connections


async def test_a_body_that_does_not_arrive_is_a_400(monkeypatch) -> None:
    monkeypatch.setattr(httpserver, "BODY_TIMEOUT_S", 0.2)
    async with connected() as (reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        status, _, answer = await read_reply(reader)
        assert status == 400 and orjson.loads(answer) == {"error": "request body not received within 0.2 s"}
        assert await closed(reader)


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with connected() as (reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"abcd")
        status, _, body = await read_reply(reader)
        assert status == 200 and orjson.loads(body)["length"] == 4


async def test_an_encoded_body_is_refused_not_decoded() -> None:
    async with listening(ROUTES) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo", b"\x1f\x8b\x08", "Content-Encoding: gzip\r\n"))
        status, _, answer = await read_reply(reader)
        assert status == 400 and "Content-Encoding 'gzip' is not supported" in orjson.loads(answer)["error"]
        writer.close()


async def test_unknown_paths_and_methods_and_a_failing_handler() -> None:
    async with connected() as (reader, writer):
        writer.write(b"GET /nowhere?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await read_reply(reader)
        assert status == 404 and orjson.loads(body) == {"error": "not found: /nowhere"}
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await read_reply(reader)
        assert status == 405 and headers["allow"] == "POST" and "not allowed" in orjson.loads(body)["error"]
        writer.write(b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await read_reply(reader)
        assert status == 500 and orjson.loads(body) == {"error": "internal error: RuntimeError: a bug"}
        writer.write(b"GET /hello?probe HTTP/1.1\r\nHost: x\r\n\r\n")  # still serving on the same connection
        assert (await read_reply(reader))[:3:2] == (200, b"hello")


async def test_a_body_the_handler_does_not_read_closes_the_connection_after_the_reply() -> None:
    async with connected() as (reader, writer):
        writer.write(b"POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n" + b"GET /hello")
        status, headers, body = await read_reply(reader)
        assert (status, body, headers["connection"]) == (200, b"hello", "close")
        assert await closed(reader)


@pytest.mark.parametrize("path", ["/large", "/quick-large"])
async def test_pipelining_without_reading_replies_queues_only_a_bounded_number_of_requests(path: str) -> None:
    """The client does not read at first, so the replies (20 MB) back up: the server parses
    ahead by about one read (~1,100 of these requests in 256 KiB), not the whole stream
    (20,000), then answers them all."""
    n = 20_000
    one = f"GET {path} HTTP/1.1".encode() + b"\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    async with listening(ROUTES) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
        sending = asyncio.ensure_future(_send(writer, one * n))
        most = 0
        for _ in range(40):
            await asyncio.sleep(0.02)
            most = max([most, *(len(c._requests) for c in server.connections)])
        replies = 0
        while replies < n:
            status, _, _ = await read_reply(reader)
            assert status == 200
            replies += 1
            if replies % 1000 == 0:
                most = max([most, *(len(c._requests) for c in server.connections)])
        await sending
        assert 0 < most <= 2_000
        writer.close()


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def test_a_handler_whose_client_leaves_finishes_without_a_traceback(caplog) -> None:
    entered, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Reply:
        entered.set()
        await release.wait()
        finished.set()
        return Reply.text("done")

    async def reads_late(request: Request) -> Reply:
        entered.set()
        await release.wait()
        await request.read()
        return Reply.text("unreachable")

    caplog.set_level(logging.DEBUG)
    async with listening({("GET", "/slow"): Route(slow, 0), ("POST", "/late"): Route(reads_late, LIMIT)}) as (
        server,
        port,
    ):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await entered.wait()
        writer.close()
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(finished.wait(), 5)
        entered.clear()
        release.clear()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nabc")
        await entered.wait()
        writer.close()
        await asyncio.sleep(0.05)
        release.set()
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections
    assert not [r for r in caplog.records if r.exc_info]


async def test_close_lets_a_reply_in_progress_finish() -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> Reply:
        await release.wait()
        return Reply.text("done")

    server = HttpServer({("GET", "/slow"): Route(slow, 0), ("GET", "/hello"): Route(hello, 0)})
    port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    idle_reader, idle = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(server.close())
    assert await closed(idle_reader, 2)  # the idle one at once
    release.set()
    status, headers, body = await read_reply(reader)
    assert (status, body, headers["connection"]) == (200, b"done", "close")
    await asyncio.wait_for(closing, 5)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    idle.close()


async def test_the_webhook_route_answers_a_review_and_refuses_garbage() -> None:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u1", "operation": "CREATE", "object": {"metadata": {}, "spec": {}}},
    }
    async with connected(webhook_routes("tfsched-scheduler", LIMIT)) as (reader, writer):
        writer.write(post("/mutate", orjson.dumps(review)))
        status, _, body = await read_reply(reader)
        assert status == 200 and orjson.loads(body)["response"] == {"uid": "u1", "allowed": True}
        writer.write(post("/mutate", b"{not json"))
        status, _, body = await read_reply(reader)
        assert status == 400 and "error" in orjson.loads(body)
        writer.write(post("/mutate", b"x" * (LIMIT + 1)))
        status, _, body = await read_reply(reader)
        assert status == 400 and "too large" in orjson.loads(body)["error"]


async def ended(reader: asyncio.StreamReader) -> bool:
    """The server closed (or reset) the connection without a reply."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def hello_on(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    return reader, writer, (await read_reply(reader))[0]


async def test_at_the_cap_silent_then_slow_then_idle_connections_give_way_to_newcomers() -> None:
    async with listening(ROUTES, 3) as (server, port):
        idle_reader, idle, status = await hello_on(port)
        assert status == 200
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
        slow.write(b"GET /hello HTTP/1.1\r\nHo")
        await asyncio.sleep(0.05)
        writers = [idle, silent, slow]
        for victim in (silent_reader, slow_reader, idle_reader):
            _, writer, status = await hello_on(port)
            writers.append(writer)
            assert status == 200
            assert await ended(victim)
            assert len(server.connections) <= 3
        assert (server.evicted, server.refused) == (3, 0)
        for writer in writers:
            writer.close()


async def test_at_the_cap_with_every_connection_in_a_handler_a_newcomer_is_closed_unanswered(
    caplog, monkeypatch
) -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> Reply:
        await release.wait()
        return Reply.text("done")

    monkeypatch.setattr(httpserver, "FULL_RECHECK_S", 0.3)
    looks = []
    rank = httpserver._Connection.eviction_rank
    monkeypatch.setattr(httpserver._Connection, "eviction_rank", lambda c: looks.append(c) or rank(c))
    routes = {("GET", "/slow"): Route(slow, 0), ("GET", "/hello"): Route(hello, 0)}
    async with listening(routes, 2) as (server, port):
        held = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append((reader, writer))
        await asyncio.sleep(0.05)
        refused = []
        for _ in range(3):  # the first looks at both connections, the next two at none
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await ended(reader)
            refused.append(writer)
        assert (server.evicted, server.refused, len(looks)) == (0, 3, 2)
        assert "cap of 2 connections" in caplog.text
        release.set()
        for held_reader, _ in held:
            status, _, body = await read_reply(held_reader)
            assert (status, body) == (200, b"done")
        await asyncio.sleep(0.35)  # past the recheck: the idle ones give way again
        _, writer, status = await hello_on(port)
        assert status == 200 and server.evicted == 1
        for closing in [w for _, w in held] + refused + [writer]:
            closing.close()


async def test_a_flood_of_silent_sockets_stays_under_the_cap_and_a_client_still_gets_in() -> None:
    async with listening(ROUTES, 16) as (server, port):
        flood = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        await asyncio.sleep(0.05)
        assert len(server.connections) <= 16
        _, writer, status = await hello_on(port)
        assert status == 200
        assert len(server.connections) <= 16
        for _, flooding in flood:
            flooding.close()
        writer.close()


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        HttpServer(ROUTES, max_connections=0)
