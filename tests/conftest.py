from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.serving import AppClients


@pytest.fixture
async def app_client() -> AsyncIterator[AppClients]:
    clients = AppClients()
    try:
        yield clients
    finally:
        await clients.close()
