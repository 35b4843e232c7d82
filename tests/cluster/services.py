"""The machine's real PostgreSQL and Redis, for the cluster and bus/replay contract tests.

When a service cannot be reached, its tests are skipped, or fail when
``DARI_TEST_REQUIRE_SERVICES=1`` (the project's test command sets it). Tests never stop,
restart or empty them: PostgreSQL tests work in a database of their own, and tests on the
machine's Redis under a key prefix of their own. A test that stops or restarts Redis, or runs
dari on Redis, starts a redis-server of its own (``tests/support/redis_server.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

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
    """The machine's Redis (or DARI_TEST_REDIS_URL), after checking that it answers: for tests
    that work under a key prefix of their own."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        unavailable(f"Redis at {REDIS_URL} is not reachable: {exc!r}")
    finally:
        await client.aclose()
    return REDIS_URL


async def kill_connections(url: str, name: str) -> int:
    """Kill the connections to the Redis at ``url`` whose client name is ``name`` (like
    ``CLIENT KILL TYPE pubsub``, but sparing every other client of that Redis)."""
    client = aioredis.Redis.from_url(url)
    try:
        ids = [entry["id"] for entry in await client.client_list() if entry.get("name") == name]
        for client_id in ids:
            await client.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        await client.aclose()
