"""The machine's real PostgreSQL and Redis, for the cluster and bus/replay contract tests.

When a service cannot be reached, its tests are skipped, or fail when
``DARI_TEST_REQUIRE_SERVICES=1`` (the project's test command sets it).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from tests.support.waiting import eventually

PG_ADMIN_DSN = os.environ.get(
    "DARI_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DARI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(problem: str) -> None:
    """Skip the test, or fail it when the services are required."""
    if os.environ.get("DARI_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{problem} (DARI_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(f"{problem}; set DARI_TEST_REQUIRE_SERVICES=1 to make this a failure")


def pg_url(database: str, drivername: str = "postgresql+asyncpg") -> str:
    url = make_url(PG_ADMIN_DSN).set(drivername=drivername, database=database)
    return url.render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_pg_database(prefix: str = "dari_test") -> AsyncIterator[str]:
    """Create an empty PostgreSQL database; yield its name; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        await _admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {exc!r}")
    try:
        yield name
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def require_redis() -> str:
    """The test Redis URL, after checking that Redis answers."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        unavailable(f"Redis at {REDIS_URL} is not reachable: {exc!r}")
    finally:
        await client.aclose()
    return REDIS_URL


# The machine's Redis, as the project's CI starts it (no persistence: a restart loses data).
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await process.wait()


async def _redis_answers() -> bool:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    except (OSError, RedisError):
        return False
    finally:
        await client.aclose()


@asynccontextmanager
async def redis_stopped() -> AsyncIterator[None]:
    """Shut the machine's Redis down (losing its data) and start it again afterwards."""
    if REDIS_URL != "redis://127.0.0.1:6379/0":
        pytest.skip("restarts only the machine's own Redis on 127.0.0.1:6379")
    await _run("redis-cli", "-p", "6379", "shutdown", "nosave")
    await eventually(lambda: _negate(_redis_answers()), timeout=10)
    try:
        yield
    finally:
        await _run(*REDIS_START)
        await eventually(_redis_answers, timeout=10)


async def _negate(answer: Awaitable[bool]) -> bool:
    return not await answer


async def kill_connections(name: str) -> int:
    """Kill the Redis connections whose client name is ``name`` (like ``CLIENT KILL TYPE
    pubsub``, but sparing other programs that share the machine's Redis)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        ids = [entry["id"] for entry in await client.client_list() if entry.get("name") == name]
        for client_id in ids:
            await client.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        await client.aclose()
