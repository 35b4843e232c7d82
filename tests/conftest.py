"""Shared fixtures: real servers on loopback ports, real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import RunningServer, make_settings, start_server

ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def server_factory(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start servers with settings overrides; all are stopped after the test."""
    running: list[RunningServer] = []

    async def factory(port: int = 0, **overrides: Any) -> RunningServer:
        server = await start_server(make_settings(tmp_path, **overrides), port=port)
        running.append(server)
        return server

    yield factory
    for server in running:
        if not server.task.done():
            await server.stop()


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    return await server_factory()
