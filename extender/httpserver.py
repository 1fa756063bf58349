"""The HTTP/1.1 server of tfsched's listeners: the verbs, the probes and metrics, the webhook.

Why our own: kube-scheduler makes three calls per pod, and a bare aiohttp handler cost
0.13-0.22 ms of server CPU per call on the benchmark machine, this server (llhttp through
httptools, the parser Node.js uses; one write per reply) 0.06 on the quick path
(bench_extender prints both; bench/RESULTS.md, issue 13).  Routes are
``(method, path) -> handler``; a handler gets a :class:`Request` whose body it reads when it
chooses (so a budget can be held first) and returns a :class:`Reply`.

What a hostile client meets (the safety suite's HTTP fuzz and tests/test_httpserver.py):

- a request head over ``MAX_HEAD_BYTES`` or not complete ``HEAD_TIMEOUT_S`` after its first
  byte, or bytes llhttp refuses (bad framing, Content-Length with chunked, an Upgrade): 400
  with a JSON error, then the connection is closed;
- a body over the route's limit (Content-Length checked before reading; chunked counted as
  it arrives), a body not arrived ``BODY_TIMEOUT_S`` after the handler asked for it, or a
  Content-Encoding: the handler's ``read`` raises :class:`BodyError` (the app answers 400)
  and the connection is closed after the reply;
- reading stops while a request waits for its handler, so neither pipelined requests nor
  a body nobody asked for queue more than about one read's worth of bytes in memory (a
  body of at most ``READ_AHEAD_BYTES`` for a route that answers on the spot is read ahead,
  and must arrive within ``HEAD_TIMEOUT_S`` of the request's first byte);
- an idle keep-alive connection is closed after ``KEEPALIVE_TIMEOUT_S``;
- a listener holds at most ``MAX_CONNECTIONS``: at the cap a newcomer takes the place of
  one silent since it opened or still sending its head (oldest first), else of the one idle
  longest between requests, and is closed unanswered when every connection has a request
  in hand, so a flood of sockets neither grows memory without bound nor locks
  kube-scheduler out (see :meth:`_Connection.eviction_rank`); a TLS handshake must end
  within ``HEAD_TIMEOUT_S``.

A handler is never cancelled because its client left (a bind in progress finishes); the
reply is then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import heapq
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import httptools
import orjson

log = logging.getLogger(__name__)

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

# A real request head is under 1 KiB.  The count may include up to one read of the
# previous message's body (see _Connection.data_received), hence the room.
MAX_HEAD_BYTES = 1 << 20
HEAD_TIMEOUT_S = 10.0
# A body up to this long, for a route that can answer on the spot, is read as it arrives
# without waiting for the handler to ask (kube-scheduler's NodeNames calls: ~13 KiB at
# 1,000 nodes, ~64 KiB at 5,000), and must arrive within HEAD_TIMEOUT_S of the request's
# first byte.  Longer bodies wait in the kernel until their handler holds its budget.
READ_AHEAD_BYTES = 128 * 1024
# Pipelined requests answered on the spot from one read, at most; the rest go to the
# worker, which lets other connections in between, so one client's burst cannot hold
# the event loop (and the lease renewal on it) for a whole read's worth of calls.
QUICK_PER_READ = 16
# Once a handler reads: the 80 MiB legitimate request takes well under a second on a
# LAN; kube-scheduler has given up on the call long before this (httpTimeout, 5 s here).
BODY_TIMEOUT_S = 30.0
# Longer than Go's idle timeout for kube-scheduler's extender client (90 s), so the
# client, not the server, closes an idle connection: the server closing one just as the
# client reuses it would fail that call.
KEEPALIVE_TIMEOUT_S = 120.0
# In-flight replies get this long to finish when the server stops.
SHUTDOWN_GRACE_S = 5.0
# How often idle connections and slow heads are looked for: the timeouts above are met
# to within this.
SWEEP_INTERVAL_S = 1.0
# Connections one listener holds at once.  kube-scheduler opens a few dozen (one per bind
# in flight, 25 kept idle); a connection costs a few KiB here, some tens with TLS.
MAX_CONNECTIONS = 1024
# A listener at its cap says so at most this often.
CAP_WARNING_INTERVAL_S = 10.0
# At the cap with every connection in a handler, newcomers are refused for this long
# without looking again: a flood then costs no scan per newcomer.
FULL_RECHECK_S = 0.1

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodyError(Exception):
    """The request's body cannot be had: too large, too slow, encoded, or malformed."""


class ClientGone(ConnectionError):
    """The client closed the connection before its request's body arrived."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, value: object, status: int = 200) -> Reply:
        return cls(status, orjson.dumps(value))

    @classmethod
    def error(cls, message: str, status: int = 400) -> Reply:
        return cls(status, orjson.dumps({"error": message}))

    @classmethod
    def text(cls, text: str, status: int = 200) -> Reply:
        return cls(status, text.encode(), TEXT)


Handler = Callable[["Request"], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    max_body_bytes: int
    # Answers a complete request without awaiting anything, or None to leave it to
    # ``handler`` (see _Connection): for the calls made once per pod.
    quick: Callable[[Request], Reply | None] | None = None


Routes = dict[tuple[str, str], Route]


class Request:
    """One request: its head once parsed; its body when the handler awaits :meth:`read`."""

    __slots__ = (
        "_ahead",
        "_chunks",
        "_connection",
        "_error",
        "_limit",
        "_reading",
        "_route",
        "_size",
        "_waiter",
        "complete",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "path",
    )

    def __init__(self, connection: _Connection) -> None:
        self.method = ""
        self.path = ""
        self.headers: dict[str, str] = {}
        self.content_length: int | None = None  # None: chunked
        self.keep_alive = False
        self.complete = False  # the whole message has arrived
        self._connection = connection
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = 0
        self._error = ""  # why the body cannot be had
        self._waiter: asyncio.Future[None] | None = None
        self._reading = False  # the handler asked for the body
        self._route: Route | None = None
        self._ahead = False  # a small body for a quick route: read without being asked

    async def read(self) -> bytes:
        """The whole body; :class:`BodyError` when it cannot be had (see the module's list)."""
        if not self._error and not self.complete:
            connection = self._connection
            if connection.lost:
                raise ClientGone("client closed the connection")
            self._reading = True
            if self.headers.get("expect", "").lower() == "100-continue":
                connection.write(_CONTINUE)
            connection.want_bytes()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(BODY_TIMEOUT_S):
                    await self._waiter
            except TimeoutError:
                self._fail(f"request body not received within {BODY_TIMEOUT_S:g} s")
            finally:
                self._waiter = None
        return self.body()

    def body(self) -> bytes:
        """The body of a complete request (as :meth:`read`, without waiting)."""
        if self._error:
            raise BodyError(self._error)
        body = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks = [body]
        return body

    # -- fed by the connection ---------------------------------------------------------------

    def _fail(self, why: str) -> None:
        if not self._error:
            self._error = why
            self._chunks = []
        self._wake()

    def _too_large(self) -> None:
        self._fail(f"request body too large (limit {self._limit} bytes)")

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _gone(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ClientGone("client closed the connection"))


class _Connection(asyncio.Protocol):
    """One client connection: parses requests in order and answers them one at a time.

    A complete request whose route has a ``quick`` handler is answered right in
    ``data_received`` when nothing is ahead of it; any other goes to the connection's worker
    task.  The quick path saves the event loop's extra turn (a task wake-up and another
    poll) that a task costs each request: a third of this server's CPU per call (bench)."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._requests: deque[Request] = deque()  # heads parsed, not yet answered
        self._parsing: Request | None = None  # the message the parser is in
        self._url: list[bytes] = []
        self._in_head = True
        self._head_bytes = 0
        self._broken = ""  # the parser refused the stream: answered once the requests before it are
        self._ended = False  # an upgrade: no request follows the last one parsed
        self._paused = False
        self.lost = False
        self._stopping = False  # the server stops: close after the reply in progress
        self._write_ready: asyncio.Future[None] | None = None
        # What the server's sweep checks (cheaper than a timer per request): when the head
        # being parsed began, and since when the connection has had nothing to do.
        self._head_started = 0.0
        self._idle_since = self._loop.time()
        self._idle_limit = HEAD_TIMEOUT_S  # a new connection sends its request at once
        self._answered = False  # it has had a reply: its idle times are a client's keep-alive
        self._next: asyncio.Future[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._busy = False  # the worker has a request: nothing is answered around it

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._server.admit(self):
            self.lost = True
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._server.connections.discard(self)
        for request in self._requests:
            if not request.complete:
                request._gone()
        self._wake_worker()
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._broken or self._ended or self.lost:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._end_at_upgrade()
        except httptools.HttpParserError as exc:
            self._refuse(f"malformed HTTP request: {exc}")
        else:
            if self._in_head and self._parsing is not None:
                # Bytes of a head still arriving; this read may also have held the end of the
                # previous message, so the count errs high by at most one read.
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse(f"request head too large (limit {MAX_HEAD_BYTES} bytes)")
        self._advance()

    def pause_writing(self) -> None:
        self._write_ready = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._parsing = Request(self)
        self._url = []
        self._in_head = True
        self._head_bytes = 0
        self._head_started = self._loop.time()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._parsing is not None
        self._parsing.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        request = self._parsing
        assert request is not None
        self._in_head = False
        request.method = self._parser.get_method().decode("latin-1")
        request.path = b"".join(self._url).partition(b"?")[0].decode("latin-1")
        request.keep_alive = self._parser.should_keep_alive()
        route = self._server.routes.get((request.method, request.path))
        request._route = route
        request._limit = route.max_body_bytes if route else 0
        length = request.headers.get("content-length")
        if length is not None:
            request.content_length = int(length)  # llhttp has checked it is digits
        elif "transfer-encoding" not in request.headers:
            request.content_length = 0
        if request.content_length is not None and request.content_length > request._limit and route:
            request._too_large()
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            request._fail(f"Content-Encoding {encoding!r} is not supported: send the body as it is")
        request._ahead = (
            route is not None
            and route.quick is not None
            and not request._error
            and request.content_length is not None
            and request.content_length <= READ_AHEAD_BYTES
        )
        self._requests.append(request)

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None
        if request._error:
            return
        request._size += len(body)
        if request._size > request._limit:
            request._too_large()
            return
        request._chunks.append(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        assert request is not None
        request.complete = True
        request._wake()
        self._parsing = None

    # -- flow ------------------------------------------------------------------------------------

    def _open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if self._open():
            self._transport.write(data)  # type: ignore[union-attr]

    def want_bytes(self) -> None:
        """A handler reads its body: let bytes in again."""
        if self._paused and self._open():
            self._paused = False
            self._transport.resume_reading()  # type: ignore[union-attr]

    def _enough(self) -> bool:
        """More is parsed than the handler can take now: a request queued behind the one in
        progress, or a body arriving that no handler has asked for."""
        requests = self._requests
        if len(requests) != 1:
            return len(requests) > 1
        first = requests[0]
        return not first.complete and not first._reading and not first._ahead

    def _advance(self) -> None:
        """After bytes arrived: answer what can be answered now, hand the rest to the worker,
        and stop reading while what arrived waits (see the module's list)."""
        if not self._busy:
            answered = 0
            while self._requests and self._write_ready is None and self._open():
                request = self._requests[0]
                if request._ahead and not request.complete and not request._error:
                    break  # the rest of its body is on the way: answered on the spot then
                if answered == QUICK_PER_READ or not self._answer_quickly(request):
                    self._start_worker()  # the worker yields between pipelined requests
                    break
                answered += 1
            else:
                if self._requests or self._broken or self._ended:
                    self._start_worker()
                elif answered:
                    self._idle()
        if not self._paused and self._open() and self._enough():
            self._paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def _start_worker(self) -> None:
        self._busy = True
        if self._worker is None:
            self._worker = self._loop.create_task(self._serve())
        else:
            self._wake_worker()

    def _answer_quickly(self, request: Request) -> bool:
        """Answer ``request`` here and now if its route can; False leaves it to the worker."""
        route = request._route
        if route is None or route.quick is None or not request.complete or request._error:
            return False
        try:
            reply = route.quick(request)
        except Exception as exc:  # a bug: answer, log, keep serving
            reply = _internal_error(request, exc)
        if reply is None:
            return False
        self._requests.popleft()
        self._send(reply, keep_alive=request.keep_alive and not self._stopping)
        return True

    def _end_at_upgrade(self) -> None:
        """An Upgrade (or CONNECT): answered as a plain request (RFC 9110 lets a server ignore
        the header), then the connection closes, as what follows is not HTTP/1.1."""
        self._ended = True
        if self._requests:
            last = self._requests[-1]
            last.keep_alive = False
            if not last.complete:
                last._fail("protocol upgrades are not supported")

    def _refuse(self, why: str) -> None:
        """The stream cannot be parsed further: answer it once the requests before it are."""
        self._broken = why
        if self._parsing is not None and self._parsing in self._requests:
            self._parsing._fail(why)

    def _wake_worker(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.set_result(None)

    def _idle(self) -> None:
        self._idle_since = self._loop.time()
        self._idle_limit = KEEPALIVE_TIMEOUT_S
        self._answered = True

    def overdue(self, now: float) -> bool:
        """Idle past the keep-alive timeout, or a request arriving too slowly: its head, or
        the small body read ahead for a quick route (a handler at work never is)."""
        if self._busy or self.lost:
            return False
        if self._parsing is not None:
            return now - self._head_started > HEAD_TIMEOUT_S
        return not self._requests and now - self._idle_since > self._idle_limit

    def eviction_rank(self) -> tuple[int, float] | None:
        """Its place in the line to give way to a newcomer, None if it may not (a handler at
        work, or a request waiting for one): first the connections silent since they opened
        or still sending a head, oldest first, then the ones idle between requests, longest
        idle first (kube-scheduler's kept-alive ones, which a legitimate client reuses)."""
        if self._busy or self.lost or self._requests:
            return None
        if self._parsing is not None:
            return (0, self._head_started) if self._in_head else None
        return (1 if self._answered else 0, self._idle_since)

    def close_now(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close_when_idle(self) -> None:
        """The server stops: close now if no handler runs, else after its reply."""
        self._stopping = True
        if not self._busy and self._transport is not None:
            self._transport.close()

    async def _serve(self) -> None:
        """The worker: answers requests in order while the connection has any (``_busy``)."""
        try:
            while self._open():
                if self._write_ready is not None:
                    await self._write_ready
                    continue
                if not self._requests:
                    if self._broken:
                        self._send(Reply.error(self._broken), keep_alive=False)
                        return
                    if self._ended:
                        return
                    self._busy = False
                    self._idle()
                    if self._stopping:
                        return
                    self.want_bytes()
                    self._next = self._loop.create_future()
                    await self._next
                    self._next = None
                    continue
                request = self._requests[0]
                reply = await self._dispatch(request)
                self._requests.popleft()
                keep = request.keep_alive and request.complete and not request._error and not self._stopping
                self._send(reply, keep_alive=keep)
                if not keep:
                    return
                if self._requests:
                    await asyncio.sleep(0)  # pipelined requests: let other connections in between
                if not self._enough():
                    self.want_bytes()
        except Exception:  # a bug here: this connection ends, the server goes on
            log.exception("HTTP connection failed")
        finally:
            self._busy = False
            if self._write_ready is not None:
                await self._write_ready  # what was written goes out before the close
            if self._transport is not None and not self._transport.is_closing():
                self._transport.close()

    async def _dispatch(self, request: Request) -> Reply:
        route = request._route
        if route is None:
            allowed = sorted(method for method, path in self._server.routes if path == request.path)
            if allowed:
                return Reply(
                    405,
                    orjson.dumps({"error": f"method {request.method} not allowed on {request.path}"}),
                    headers=(("Allow", ", ".join(allowed)),),
                )
            return Reply.error(f"not found: {request.path}", 404)
        try:
            return await route.handler(request)
        except ClientGone:
            return Reply.error("client gone")  # not sent: the connection is lost
        except Exception as exc:  # a bug: answer, log, keep serving
            return _internal_error(request, exc)

    def _send(self, reply: Reply, *, keep_alive: bool) -> None:
        if not self._open():
            return
        head = [
            f"HTTP/1.1 {reply.status} {_phrase(reply.status)}\r\n"
            f"Date: {_date()}\r\nContent-Type: {reply.content_type}\r\nContent-Length: {len(reply.body)}\r\n"
        ]
        head.extend(f"{name}: {value}\r\n" for name, value in reply.headers)
        head.append("\r\n" if keep_alive else "Connection: close\r\n\r\n")
        self._transport.write("".join(head).encode("latin-1") + reply.body)  # type: ignore[union-attr]
        if not keep_alive:
            self._transport.close()  # type: ignore[union-attr]  # after what is buffered


def _internal_error(request: Request, exc: Exception) -> Reply:
    log.error("%s %s failed", request.method, request.path, exc_info=exc)
    return Reply.error(f"internal error: {type(exc).__name__}: {exc}", 500)


_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def _phrase(status: int) -> str:
    return _PHRASES.get(status, "Unknown")


_date_cache: tuple[int, str] = (0, "")


def _date() -> str:
    """The Date header (RFC 9110 asks an origin server with a clock for it), made once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


class HttpServer:
    """One listener serving ``routes`` (HTTPS with ``ssl_context``)."""

    def __init__(self, routes: Routes, max_connections: int = MAX_CONNECTIONS) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.routes = routes
        self.max_connections = max_connections
        self.connections: set[_Connection] = set()
        self.refused = 0  # connections closed unanswered at the cap
        self.evicted = 0  # connections closed to make room for a newcomer
        self._warned_at = -CAP_WARNING_INTERVAL_S
        self._full_until = 0.0  # found with no connection to spare: refuse without a scan until then
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def admit(self, newcomer: _Connection) -> bool:
        """Count ``newcomer`` in, making room at the cap (see the module's list); False: refused."""
        connections = self.connections
        if len(connections) >= self.max_connections:
            now = asyncio.get_running_loop().time()
            ranks = {c: c.eviction_rank() for c in connections} if now >= self._full_until else {}
            candidates = [c for c, rank in ranks.items() if rank is not None]
            if candidates:
                # An eighth of the cap at a time, so a flood of newcomers costs one scan per
                # eighth of the cap, not one per connection.
                room = max(1, self.max_connections // 8)
                for victim in heapq.nsmallest(room, candidates, key=ranks.__getitem__):
                    connections.discard(victim)
                    victim.close_now()
                    self.evicted += 1
            else:
                self.refused += 1
                if ranks:
                    self._full_until = now + FULL_RECHECK_S
            if now - self._warned_at >= CAP_WARNING_INTERVAL_S:
                self._warned_at = now
                log.warning(
                    "listener at its cap of %d connections: %d closed to make room, %d refused so far",
                    self.max_connections,
                    self.evicted,
                    self.refused,
                )
            if not candidates:
                return False
        connections.add(newcomer)
        return True

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen; returns the port bound (the one chosen for port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            host,
            port,
            ssl=ssl_context,
            reuse_address=True,
            ssl_handshake_timeout=HEAD_TIMEOUT_S if ssl_context is not None else None,
        )
        self._sweeper = loop.create_task(self._sweep(), name="http-sweep")
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        """Close connections idle too long or sending a head too slowly."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = loop.time()
            for connection in [c for c in self.connections if c.overdue(now)]:
                connection.close_now()

    async def close(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Stop listening; idle connections close at once, busy ones after their reply
        (or after ``grace`` seconds)."""
        if self._server is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._server.close()
        for connection in list(self.connections):
            connection.close_when_idle()
        workers = [c._worker for c in self.connections if c._worker is not None]
        if workers:
            _, late = await asyncio.wait(workers, timeout=grace)
            for connection in list(self.connections):
                if connection._transport is not None:
                    connection._transport.abort()
            for worker in late:
                worker.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._server.wait_closed()
        self._server = None
