"""Alembic migrations of the SQL store: fresh databases, repeated starts, concurrent starts,
and databases made by ``metadata.create_all`` before migrations existed (adopted in place)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dari.protocol.frames import ConversationKey
from dari.stores.migrations import MigrationError, make_config
from dari.stores.migrations.__main__ import main as migrations_cli
from dari.stores.schema import chat_requests, conversations, messages, metadata
from dari.stores.sql import SqlStore
from tests.cluster.services import fresh_pg_database, pg_url

KEY = ConversationKey("p1", "집사", "main")
HEAD = ScriptDirectory.from_config(make_config()).get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database that no dari has touched."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'dari.db'}"
        return
    async with fresh_pg_database("dari_mig") as name:
        yield pg_url(name)


async def _with_engine(url: str, work: Any) -> Any:
    engine: AsyncEngine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def _schema_diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _baseline_without_version(conn: Connection) -> None:
    config = make_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "0001")
    conn.execute(text("DROP TABLE alembic_version"))


def _legacy_rows(conn: Connection) -> int:
    """A chat and its answer written with the baseline's columns; returns the answer's id."""
    now = datetime.now(UTC)
    conversation = conn.execute(
        conversations.insert().values(**KEY.fields(), created_at=now)
    ).inserted_primary_key[0]
    ids = []
    for role, content, request_id in (("user", "old", "r-1"), ("assistant", "old answer", "r-1")):
        row = conn.execute(
            messages.insert().values(
                conversation_id=conversation,
                role=role,
                content=content,
                images=[],
                steps=[],
                status="complete",
                request_id=request_id,
                created_at=now,
                updated_at=now,
            )
        )
        ids.append(int(row.inserted_primary_key[0]))
    conn.execute(
        chat_requests.insert().values(
            user_id="alice", client_message_id="m1", request_id="r-1", created_at=now
        )
    )
    return ids[-1]


def _version(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]


async def _started(url: str) -> SqlStore:
    store = SqlStore(url)
    await store.start()
    return store


async def test_a_fresh_database_upgraded_to_head_has_exactly_the_schema(database_url: str) -> None:
    store = await _started(database_url)
    await store.close()
    assert HEAD == "0005"
    assert await _with_engine(database_url, _version) == [HEAD]
    # Autogenerate's comparison of the migrated database with schema.py finds nothing to do.
    assert await _with_engine(database_url, _schema_diff) == []


async def test_starting_twice_changes_nothing(database_url: str) -> None:
    store = await _started(database_url)
    accepted = await store.accept_chat(
        user_id="alice", client_message_id="m1", request_id="r-1", key=KEY, message="hi", images=[]
    )
    await store.close()
    again = await _started(database_url)
    try:
        assert [m.content for m in await again.history(KEY, 10)] == ["hi"]
        duplicate = await again.accept_chat(
            user_id="alice",
            client_message_id="m1",
            request_id="r-2",
            key=KEY,
            message="hi",
            images=[],
        )
        assert duplicate.duplicate and duplicate.request_id == accepted.request_id
    finally:
        await again.close()
    assert await _with_engine(database_url, _version) == [HEAD]
    assert await _with_engine(database_url, _schema_diff) == []


async def test_nodes_starting_together_on_one_fresh_postgresql_all_start() -> None:
    async with fresh_pg_database("dari_mig") as name:
        url = pg_url(name)
        # The advisory lock makes them take turns; without it two would CREATE TABLE at once.
        stores = await asyncio.gather(*(_started(url) for _ in range(3)))
        for store in stores:
            await store.close()
        assert await _with_engine(url, _version) == [HEAD]


async def test_a_create_all_database_is_stamped_and_keeps_its_data(database_url: str) -> None:
    # What dari did before migrations: create_all of the baseline schema (what revision 0001
    # creates), with no alembic_version table.
    await _with_engine(database_url, _baseline_without_version)
    # Rows as that older dari wrote them: only the baseline's columns (today's store code
    # would write columns of later revisions).
    answer_id = await _with_engine(database_url, _legacy_rows)
    assert "alembic_version" not in await _with_engine(
        database_url, lambda conn: inspect(conn).get_table_names()
    )

    store = await _started(database_url)
    try:
        history = await store.history(KEY, 10)
        assert [(m.content, m.status) for m in history] == [
            ("old", "complete"),
            ("old answer", "complete"),
        ]
        assert history[0].id == answer_id - 1
        # The idempotency key written before the upgrade still holds.
        resent = await store.accept_chat(
            user_id="alice",
            client_message_id="m1",
            request_id="r-9",
            key=KEY,
            message="old",
            images=[],
        )
        assert resent.duplicate and resent.request_id == "r-1"
        # Ids keep counting from where they were (the sequences were not recreated).
        newer = await store.begin_answer(KEY, "r-2", "node-a")
        assert newer > answer_id
    finally:
        await store.close()
    assert await _with_engine(database_url, _version) == [HEAD]
    assert await _with_engine(database_url, _schema_diff) == []


async def test_a_partial_schema_without_alembic_version_is_refused(database_url: str) -> None:
    await _with_engine(database_url, lambda conn: conversations.create(conn))
    store = SqlStore(database_url)
    with pytest.raises(MigrationError, match="not made by dari"):
        await store.start()
    await store.close()
    tables = await _with_engine(database_url, lambda conn: inspect(conn).get_table_names())
    assert tables == ["conversations"]  # left as it was


def test_the_migrations_command_runs_alembic_without_an_ini_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "cli.db"
    monkeypatch.setenv("DARI_STORE__URL", f"sqlite+aiosqlite:///{database}")
    assert migrations_cli(["upgrade", "head"]) == 0
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
