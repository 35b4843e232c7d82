"""Store fixtures: every contract test runs against SQLite (a file) and the real PostgreSQL.

PostgreSQL: one fresh database per test session (``dari_test_<random>``), emptied before each
test and dropped at the end. When PostgreSQL cannot be reached the PostgreSQL tests are
skipped, or fail when ``DARI_TEST_REQUIRE_SERVICES=1`` (the project's test command sets it).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dari.stores.schema import metadata
from dari.stores.sql import SqlStore

PG_ADMIN_DSN = os.environ.get(
    "DARI_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
T = TypeVar("T")


def _run(coroutine: Awaitable[T]) -> T:
    """Run admin work on a private loop (sync session fixtures; the tests' loops stay alone)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def _dsn(database: str, drivername: str = "postgresql") -> str:
    url = make_url(PG_ADMIN_DSN).set(drivername=drivername, database=database)
    return url.render_as_string(hide_password=False)


async def _create_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The name of a fresh PostgreSQL database for this session."""
    name = f"dari_test_{uuid.uuid4().hex[:12]}"
    problem = None
    try:
        _run(_create_database(name))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        problem = f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {exc!r}"
    if problem is not None:
        if os.environ.get("DARI_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{problem} (DARI_TEST_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(f"{problem}; set DARI_TEST_REQUIRE_SERVICES=1 to make this a failure")
    try:
        yield name
    finally:
        _run(_drop_database(name))


async def _empty_tables(database: str) -> None:
    conn = await asyncpg.connect(_dsn(database), timeout=5)
    try:
        existing = {
            row["tablename"]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        # DELETE, children first: much faster than TRUNCATE on tables this small.
        for table in reversed(metadata.sorted_tables):
            if table.name in existing:
                await conn.execute(f'DELETE FROM "{table.name}"')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty store of the engine under test."""
    if engine == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'dari.db'}"
    database: str = request.getfixturevalue("postgres_database")
    _run(_empty_tables(database))
    return _dsn(database, drivername="postgresql+asyncpg")


StoreFactory = Callable[[], Awaitable[SqlStore]]


@pytest.fixture
async def open_store(store_url: str) -> AsyncIterator[StoreFactory]:
    """Open (start) stores on the URL under test; all are closed after the test."""
    opened: list[SqlStore] = []

    async def factory() -> SqlStore:
        store = SqlStore(store_url)
        await store.start()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: StoreFactory) -> SqlStore:
    return await open_store()
