"""A ``redis-server`` of a test's own: a free loopback port, no persistence, a temporary dir.

The machine's Redis (127.0.0.1:6379) is shared with other programs and other test runs: a test
may use it only under a key prefix of its own, and must never stop, restart or empty it. Tests
that stop or restart Redis, and tests that run dari on Redis (whose keys have a fixed prefix),
use one of these instead. It is stopped by its process, never by a command sent to a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.support.waiting import eventually

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """``append_only``: keep an append-only file (fsync on every write), so a restart keeps
    the data, as a deployment that wants queued chats to survive a Redis restart runs it."""

    def __init__(self, directory: Path, *, append_only: bool = False) -> None:
        self.directory = directory
        self.append_only = append_only
        self.port = _free_port()
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start (again, on the same port) and return once it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            problem = "redis-server is not installed (Debian package redis-server)"
            if os.environ.get("DARI_TEST_REQUIRE_SERVICES") == "1":
                pytest.fail(f"{problem} (DARI_TEST_REQUIRE_SERVICES=1)", pytrace=False)
            pytest.skip(problem)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            *(["--appendonly", "yes", "--appendfsync", "always"] if self.append_only
              else ["--appendonly", "no"]),
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await eventually(self.answers, timeout=START_TIMEOUT_S)

    async def stop(self) -> None:
        """Stop the process this object started (SIGTERM, then SIGKILL); its data is lost unless
        it keeps an append-only file."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def answers(self) -> bool:
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            return bool(await client.ping())
        except (OSError, RedisError):
            return False
        finally:
            await client.aclose()

    @contextlib.asynccontextmanager
    async def stopped(self) -> AsyncIterator[None]:
        """Down (with its data lost) inside the block, up again on the same port after it."""
        await self.stop()
        try:
            yield
        finally:
            await self.start()


@contextlib.asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[RedisServer]:
    """A started :class:`RedisServer`, stopped afterwards."""
    server = RedisServer(directory)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
