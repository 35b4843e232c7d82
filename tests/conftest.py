"""Shared fixtures: real servers on loopback ports, real clients, a Redis of a test's own; and
a check that the run left the machine's own PostgreSQL and Redis as it found them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.engines import SessionRedis, session_redis
from tests.support.machine_services import MACHINE_SERVICES, ServicesSnapshot
from tests.support.redis_server import RedisServer, redis_server
from tests.support.server import RunningServer, make_settings, start_server

_AT_START = pytest.StashKey[ServicesSnapshot]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_AT_START] = MACHINE_SERVICES.snapshot()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a service of the machine that answered at the start is gone, or Redis
    was restarted: tests must never stop a service they did not start."""
    before = session.stash.get(_AT_START, None)
    if before is None:
        return
    problems = before.lost_in(MACHINE_SERVICES.snapshot(), MACHINE_SERVICES)
    if not problems:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")
        reporter.write_sep("=", "a service of the machine was disturbed", red=True, bold=True)
        for problem in problems:
            reporter.write_line(problem, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture(scope="session")
def engine_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionRedis]:
    """One redis-server of the run's own for the tests that run on the Redis engine."""
    with session_redis(tmp_path_factory.mktemp("engine-redis")) as server:
        yield server


@pytest.fixture
def engine() -> str:
    """The engine servers of a test run on. Modules that hold for both engines override this
    with ``params=ENGINES`` (see ``tests/support/engines.py``)."""
    return "memory"


@pytest.fixture
def engine_settings(request: pytest.FixtureRequest, engine: str) -> dict[str, Any]:
    """Settings overrides that put a server on ``engine`` (Redis: emptied for each test)."""
    if engine == "memory":
        return {}
    redis: SessionRedis = request.getfixturevalue("engine_redis")
    redis.flush()
    return {"bus": {"url": redis.url}, "replay": {"url": redis.url}}


@pytest.fixture
async def server_factory(
    tmp_path: Path, engine_settings: dict[str, Any]
) -> AsyncIterator[ServerFactory]:
    """Start servers with settings overrides (on the test's engine); all are stopped after
    the test."""
    running: list[RunningServer] = []

    async def factory(port: int = 0, **overrides: Any) -> RunningServer:
        merged = {**engine_settings}
        for key, value in overrides.items():
            base = merged.get(key)
            both = isinstance(base, dict) and isinstance(value, dict)
            merged[key] = {**base, **value} if both else value  # type: ignore[dict-item]
        settings = make_settings(tmp_path, **merged)
        server = await start_server(settings, port=port)
        running.append(server)
        return server

    yield factory
    for server in running:
        if not server.task.done():
            await server.stop()


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    return await server_factory()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop, restart or empty."""
    async with redis_server(tmp_path / "redis") as server:
        yield server
