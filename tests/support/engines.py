"""The two engines a test can run a server on: ``memory`` (one node) and ``redis`` (the
several-node engine: replay logs, subscriptions, queues and wakes in Redis).

A module whose behaviour must hold on both overrides the ``engine`` fixture::

    @pytest.fixture(params=ENGINES)
    def engine(request: pytest.FixtureRequest) -> str:
        return str(request.param)

Servers from ``server_factory`` then run once per engine. The Redis engine uses one
redis-server of the run's own (never the machine's), emptied before each test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import RedisError

ENGINES = ("memory", "redis")
START_TIMEOUT_S = 10.0


class SessionRedis:
    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def flush(self) -> None:
        """Empty it: it is this run's own, so nothing else's data is lost."""
        with contextlib.closing(self.client()) as client:
            client.flushall()

    def answers(self) -> bool:
        try:
            with contextlib.closing(self.client()) as client:
                return bool(client.ping())
        except (OSError, RedisError):
            return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def session_redis(directory: Path) -> Iterator[SessionRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        problem = "redis-server is not installed (Debian package redis-server)"
        if os.environ.get("DARI_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{problem} (DARI_TEST_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(problem)
    server = SessionRedis(_free_port())
    process = subprocess.Popen(
        [
            binary, "--bind", "127.0.0.1", "--port", str(server.port), "--save", "",
            "--appendonly", "no", "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the engine's redis-server did not start ({directory})")
            time.sleep(0.05)  # polling a process start-up, not synchronising a test
        yield server
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
