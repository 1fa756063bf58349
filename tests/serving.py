"""Tests' way to serve an ExtenderApp's routes (or any routes) on a real local port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp

from tfsched.allocation.state import ClusterState
from tfsched.extender.app import ExtenderApp
from tfsched.extender.bind import Binder, MemoryPodWriter
from tfsched.extender.httpserver import MAX_CONNECTIONS, HttpServer, Routes


def memory_app(state: ClusterState, **kwargs) -> ExtenderApp:
    """The app over ``state`` with binds written to the state itself."""
    return ExtenderApp(state, Binder(state, MemoryPodWriter(state)), **kwargs)


@contextlib.asynccontextmanager
async def listening(routes: Routes, max_connections: int = MAX_CONNECTIONS) -> AsyncIterator[tuple[HttpServer, int]]:
    """``routes`` served on 127.0.0.1 for the block: the server and its port."""
    server = HttpServer(routes, max_connections)
    port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def serving(app: ExtenderApp | Routes) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session whose relative URLs reach ``app`` served on 127.0.0.1."""
    routes = app.routes() if isinstance(app, ExtenderApp) else app
    async with listening(routes) as (_, port), aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
        yield session


class AppClients:
    """``await app_client(app)``: a session on ``app`` served until the test ends."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()

    async def __call__(self, app: ExtenderApp | Routes) -> aiohttp.ClientSession:
        return await self._stack.enter_async_context(serving(app))

    async def close(self) -> None:
        await self._stack.aclose()
