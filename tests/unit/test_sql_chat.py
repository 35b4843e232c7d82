"""SQLite's chat statements skip SQLAlchemy's execution: they must write and read exactly its
rows."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, update

from dari.stores.schema import conversations, metadata
from dari.stores.sql_chat import CoreChatSql, OwnerRow, SqliteChatSql

WHEN = datetime(2026, 12, 1, 10, 30, 5, 123456, tzinfo=UTC)
KEY = {"project_id": "p", "agent_name": "a", "thread_id": "스레드 1", "scope": ""}


def _message(conversation_id: int, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "conversation_id": conversation_id,
        "role": "user",
        "content": '안녕 "quoted" \\ and \U0001f600',
        "images": ["data:image/png;base64,AAAA"],
        "steps": [],
        "status": "complete",
        "request_id": "r-1",
        "node_id": None,
        "author": None,
        "user_id": "u1",
        "created_at": WHEN,
        "updated_at": WHEN,
    }
    return {**values, **changes}


def _answer(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "content": "the answer",
        "status": "complete",
        "steps": [{"name": "search", "status": "finished", "nested": {"x": [1, 2.5, None]}}],
        "reasoning": "thought",
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        "finish_reason": "length",
        "tools": None,
        "interrupts": [{"interrupt_id": "i-1", "state": "pending", "payload": {"q": "?"}}],
        "updated_at": WHEN + timedelta(seconds=1),
    }
    return {**values, **changes}


def _write_everything(conn: Connection, writes: CoreChatSql) -> list[bool]:
    """The writes of two chats and their answers; returns what insert_request said."""
    said = []
    with conn.begin():
        said.append(
            writes.insert_request(
                conn,
                {
                    "user_id": "u1",
                    "client_message_id": "c1",
                    "request_id": "r-1",
                    "created_at": WHEN,
                },
            )
        )
        said.append(
            writes.insert_request(
                conn,
                {
                    "user_id": "u1",
                    "client_message_id": "c1",
                    "request_id": "r-2",
                    "created_at": WHEN,
                },
            )
        )
        assert writes.owner_of(conn, "client-1") is None
        writes.insert_client(conn, {"client_id": "client-1", "user_id": "u1", "created_at": WHEN})
        writes.insert_client(conn, {"client_id": "client-1", "user_id": "u2", "created_at": WHEN})
        assert writes.owner_of(conn, "client-1") == "u1"
        assert writes.conversation_of(conn, KEY) is None
        assert writes.ownership_of(conn, KEY) is None
        writes.insert_conversation(conn, {**KEY, "owner": "u1", "created_at": WHEN})
        writes.insert_conversation(conn, {**KEY, "owner": "u2", "created_at": WHEN})  # no-op
        conversation_id = writes.conversation_of(conn, KEY)
        assert conversation_id == 1
        assert writes.ownership_of(conn, KEY) == OwnerRow(1, "u1", False)
        conn.execute(update(conversations).values(shared=True))
        assert writes.ownership_of(conn, KEY) == OwnerRow(1, "u1", True)
        assert writes.ownership_of(conn, {**KEY, "scope": "someone"}) is None
        first = writes.insert_message(conn, _message(conversation_id))
        answer = writes.insert_message(
            conn,
            _message(
                conversation_id,
                role="assistant",
                content="",
                images=[],
                status="streaming",
                node_id="n1",
                user_id=None,
            ),
        )
        assert (first, answer) == (1, 2)
        writes.update_answer(conn, answer, _answer(status="streaming", usage=None))
        writes.update_answer(conn, answer, _answer())
        report = writes.insert_message(
            conn, _message(conversation_id, role="report", author="helper", images=[])
        )
        writes.update_answer(conn, report, _answer(steps=[], reasoning=None, interrupts=None))
    return said


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    raw = sqlite3.connect(path)
    try:
        return {
            table: raw.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("chat_requests", "clients", "conversations", "messages")
        }
    finally:
        raw.close()


def _database(
    path: Path, writes: CoreChatSql
) -> tuple[dict[str, list[tuple[Any, ...]]], list[bool]]:
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    try:
        with engine.connect() as conn:
            said = _write_everything(conn, writes)
    finally:
        engine.dispose()
    return _rows(path), said


def test_the_driver_writes_store_the_same_rows_as_sqlalchemy(tmp_path: Path) -> None:
    core_rows, core_said = _database(tmp_path / "core.db", CoreChatSql("sqlite"))
    fast_rows, fast_said = _database(tmp_path / "fast.db", SqliteChatSql())
    assert core_said == fast_said == [True, False]
    assert len(core_rows["messages"]) == 3
    assert fast_rows == core_rows


@pytest.mark.parametrize("writes", [CoreChatSql("sqlite"), SqliteChatSql()], ids=["core", "driver"])
def test_rows_written_by_either_read_back_through_sqlalchemy(
    tmp_path: Path, writes: CoreChatSql
) -> None:
    from sqlalchemy import select

    from dari.stores.schema import messages

    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    metadata.create_all(engine)
    try:
        with engine.connect() as conn:
            _write_everything(conn, writes)
            row = conn.execute(select(messages).where(messages.c.id == 2)).one()
    finally:
        engine.dispose()
    assert row.steps == _answer()["steps"]
    assert row.usage == _answer()["usage"]
    assert row.interrupts == _answer()["interrupts"]
    assert row.tools is None
    assert row.updated_at == (WHEN + timedelta(seconds=1)).replace(tzinfo=None)
    assert row.finish_reason == "length"


def test_the_driver_reads_history_as_sqlalchemy_does(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    metadata.create_all(engine)
    core, fast = CoreChatSql("sqlite"), SqliteChatSql()
    try:
        with engine.connect() as conn:
            _write_everything(conn, core)
            with conn.begin():
                # Infinity: json.dumps writes it, orjson refuses it; the reader falls back.
                core.update_answer(conn, 1, _answer(steps=[{"score": float("inf")}], usage=None))
            with conn.begin():
                by_core = core.history(conn, 1, 10, None)
                by_driver = fast.history(conn, 1, 10, None)
                older_core = core.history(conn, 1, 10, 3)
                older_driver = fast.history(conn, 1, 10, 3)
                assert fast.history(conn, 1, 1, None) == core.history(conn, 1, 1, None)
                assert fast.history(conn, 2, 10, None) == []
    finally:
        engine.dispose()
    assert [row["id"] for row in by_core] == [3, 2, 1]  # newest first
    assert [row["id"] for row in older_core] == [2, 1]
    assert by_driver == by_core
    assert older_driver == older_core
    assert by_driver[2]["steps"] == [{"score": float("inf")}]
    assert by_driver[1]["created_at"] == WHEN.replace(tzinfo=None)
    assert by_driver[1]["usage"] == _answer()["usage"]
