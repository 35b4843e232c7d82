"""The statements every chat runs: its request and message, its conversation the first time,
its history, the answer's row, the checkpoints and the final save; and a client's owner, once
per client.

On PostgreSQL they run through SQLAlchemy Core like every other statement (:class:`CoreChatSql`).
On SQLite they run on the stdlib driver directly (:class:`SqliteChatSql`): a write costs about
20 µs of CPU there and SQLAlchemy's execution around it about 100 µs more, on the one thread
every chat's statements share, four to six times per chat; a history of twenty messages costs
about a millisecond through SQLAlchemy's rows. The SQL text is compiled once from the same
tables and every value goes through its column type's own bind (and result) processor, so the
rows are the ones SQLAlchemy would write and read (a test compares them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Insert,
    Integer,
    Select,
    Update,
    bindparam,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from dari.stores.schema import chat_requests, clients, conversations, messages

# The columns each write sets (the callers pass exactly these keys).
CLIENT_FIELDS = ("client_id", "user_id", "created_at")
REQUEST_FIELDS = ("user_id", "client_message_id", "request_id", "created_at")
CONVERSATION_FIELDS = ("project_id", "agent_name", "thread_id", "scope", "owner", "created_at")
CONVERSATION_KEY = ("project_id", "agent_name", "thread_id", "scope")
MESSAGE_FIELDS = (
    "conversation_id",
    "role",
    "content",
    "images",
    "steps",
    "status",
    "request_id",
    "node_id",
    "author",
    "user_id",
    "created_at",
    "updated_at",
)
ANSWER_FIELDS = (
    "content",
    "status",
    "steps",
    "reasoning",
    "usage",
    "finish_reason",
    "tools",
    "interrupts",
    "updated_at",
)

Values = Mapping[str, Any]

_BY_KEY = [conversations.c[name] == bindparam(name) for name in CONVERSATION_KEY]
# A conversation's id by its key (also the subquery of the store's "answered" check).
CONVERSATION_OF = select(conversations.c.id).where(*_BY_KEY)
OWNERSHIP_OF = select(conversations.c.id, conversations.c.owner, conversations.c.shared).where(
    *_BY_KEY
)


class OwnerRow(NamedTuple):
    """A conversation's row id, owner and shared flag."""

    id: int
    owner: str
    shared: bool


class CoreChatSql:
    """The writes on SQLAlchemy Core, for any dialect."""

    def __init__(self, dialect: str) -> None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # ON CONFLICT DO NOTHING: a row another node (or a resend) inserted first is not an
        # error and needs no savepoint; the row count says whether this call inserted it.
        self._insert_request = insert(chat_requests).on_conflict_do_nothing()
        self._insert_client = insert(clients).on_conflict_do_nothing()
        self._owner_of = select(clients.c.user_id).where(
            clients.c.client_id == bindparam("client_id")
        )
        self._insert_conversation = insert(conversations).on_conflict_do_nothing()
        self._conversation_of = CONVERSATION_OF
        self._ownership_of = OWNERSHIP_OF
        self._insert_message = messages.insert()
        self._update_message = update(messages).where(messages.c.id == bindparam("message_id"))
        newest_first = messages.c.id.desc()
        limit = bindparam("limit", type_=Integer)
        in_conversation = messages.c.conversation_id == bindparam("conversation_id")
        self._history = select(messages).where(in_conversation).order_by(newest_first).limit(limit)
        self._history_before = (
            select(messages)
            .where(in_conversation & (messages.c.id < bindparam("before")))
            .order_by(newest_first)
            .limit(limit)
        )

    def insert_request(self, conn: Connection, values: Values) -> bool:
        """Record a client's chat id; False if it was recorded before."""
        return bool(conn.execute(self._insert_request, dict(values)).rowcount)

    def owner_of(self, conn: Connection, client_id: str) -> str | None:
        found = conn.execute(self._owner_of, {"client_id": client_id}).scalar()
        return None if found is None else str(found)

    def insert_client(self, conn: Connection, values: Values) -> None:
        """Record a client's owner unless another writer just did."""
        conn.execute(self._insert_client, dict(values))

    def conversation_of(self, conn: Connection, key: Values) -> int | None:
        found = conn.execute(self._conversation_of, dict(key)).scalar()
        return None if found is None else int(found)

    def insert_conversation(self, conn: Connection, values: Values) -> None:
        """Create a conversation unless another writer just did."""
        conn.execute(self._insert_conversation, dict(values))

    def ownership_of(self, conn: Connection, key: Values) -> OwnerRow | None:
        """The conversation's id, owner and shared flag, by its key's columns."""
        row = conn.execute(self._ownership_of, dict(key)).first()
        return None if row is None else OwnerRow(int(row.id), str(row.owner), bool(row.shared))

    def insert_message(self, conn: Connection, values: Values) -> int:
        """Add a message; returns its id."""
        result = conn.execute(self._insert_message, dict(values))
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def update_answer(self, conn: Connection, message_id: int, values: Values) -> None:
        """Checkpoint or finally save an answer's row."""
        conn.execute(self._update_message, {**values, "message_id": message_id})

    def history(
        self, conn: Connection, conversation_id: int, limit: int, before: int | None
    ) -> list[Mapping[str, Any]]:
        """Up to ``limit`` messages of the conversation, newest first; with ``before``, only
        those older than that message."""
        params: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit}
        if before is None:
            return [dict(row._mapping) for row in conn.execute(self._history, params)]
        params["before"] = before
        return [dict(row._mapping) for row in conn.execute(self._history_before, params)]


class SqliteChatSql(CoreChatSql):
    """The same writes on the stdlib ``sqlite3`` connection under the SQLAlchemy one, inside
    the transaction the store's worker opened."""

    def __init__(self) -> None:
        super().__init__("sqlite")
        dialect = sqlite.dialect()
        self._request = _Compiled(
            sqlite.insert(chat_requests).values(_binds(REQUEST_FIELDS)).on_conflict_do_nothing(),
            chat_requests.c,
            dialect,
        )
        self._client = _Compiled(
            sqlite.insert(clients).values(_binds(CLIENT_FIELDS)).on_conflict_do_nothing(),
            clients.c,
            dialect,
        )
        self._owner = _Compiled(self._owner_of, clients.c, dialect)
        self._conversation = _Compiled(
            sqlite.insert(conversations)
            .values(_binds(CONVERSATION_FIELDS))
            .on_conflict_do_nothing(),
            conversations.c,
            dialect,
        )
        self._lookup = _Compiled(self._conversation_of, conversations.c, dialect)
        self._ownership = _Compiled(self._ownership_of, conversations.c, dialect)
        self._message = _Compiled(
            messages.insert().values(_binds(MESSAGE_FIELDS)), messages.c, dialect
        )
        self._answer = _Compiled(
            update(messages)
            .where(messages.c.id == bindparam("message_id"))
            .values(_binds(ANSWER_FIELDS)),
            messages.c,
            dialect,
        )
        self._recent = _Compiled(self._history, messages.c, dialect)
        self._older = _Compiled(self._history_before, messages.c, dialect)

    def insert_request(self, conn: Connection, values: Values) -> bool:
        return bool(self._request.run(conn, values).rowcount)

    def owner_of(self, conn: Connection, client_id: str) -> str | None:
        row = self._owner.run(conn, {"client_id": client_id}).fetchone()
        return None if row is None else str(row[0])

    def insert_client(self, conn: Connection, values: Values) -> None:
        self._client.run(conn, values)

    def conversation_of(self, conn: Connection, key: Values) -> int | None:
        row = self._lookup.run(conn, key).fetchone()
        return None if row is None else int(row[0])

    def insert_conversation(self, conn: Connection, values: Values) -> None:
        self._conversation.run(conn, values)

    def ownership_of(self, conn: Connection, key: Values) -> OwnerRow | None:
        row = self._ownership.run(conn, key).fetchone()
        return None if row is None else OwnerRow(int(row[0]), str(row[1]), bool(row[2]))

    def insert_message(self, conn: Connection, values: Values) -> int:
        return int(self._message.run(conn, values).lastrowid)

    def update_answer(self, conn: Connection, message_id: int, values: Values) -> None:
        self._answer.run(conn, {**values, "message_id": message_id})

    def history(
        self, conn: Connection, conversation_id: int, limit: int, before: int | None
    ) -> list[Mapping[str, Any]]:
        params: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit}
        if before is None:
            return self._recent.rows(conn, params)
        params["before"] = before
        return self._older.rows(conn, params)


def chat_sql_for(dialect: str) -> CoreChatSql:
    return SqliteChatSql() if dialect == "sqlite" else CoreChatSql(dialect)


# --- compiling once ------------------------------------------------------------------------

_BIND_PREFIX = "v_"  # a bind may not share its column's name in VALUES or SET


def _binds(fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: bindparam(_BIND_PREFIX + name) for name in fields}


class _Compiled:
    """A statement's SQLite text and, per positional parameter, the value's name and its
    column type's bind processor."""

    __slots__ = ("_fixed", "_params", "_results", "sql")

    def __init__(self, statement: Insert | Update | Any, columns: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        params: list[tuple[str, Callable[[Any], Any] | None]] = []
        # Values the statement fixes itself (SQLite's OFFSET 0 after a LIMIT).
        self._fixed = {
            name: value for name, value in compiled.params.items() if value is not None
        }
        for bind in compiled.positiontup or ():
            name = bind.removeprefix(_BIND_PREFIX)
            column: Column[Any] | None = columns.get(name)
            # The dialect's own implementation of the type (e.g. SQLite's DATETIME format).
            process = (
                None
                if column is None
                else column.type.dialect_impl(dialect).bind_processor(dialect)
            )
            params.append((name, process))
        self._params = tuple(params)
        # A select's columns, in order, with their type's result processor.
        results: list[tuple[str, Callable[[Any], Any] | None]] = []
        if isinstance(statement, Select):
            for selected in statement.selected_columns:
                results.append((selected.name, _reader(selected.type, dialect)))
        self._results = tuple(results)

    def run(self, conn: Connection, values: Values) -> Any:
        """Execute on the driver's connection; returns the driver's cursor."""
        if self._fixed:
            values = {**self._fixed, **values}
        bound = [
            values[name] if process is None else process(values[name])
            for name, process in self._params
        ]
        driver = conn.connection.driver_connection
        assert driver is not None, "a live connection"
        return driver.execute(self.sql, bound)

    def rows(self, conn: Connection, values: Values) -> list[Mapping[str, Any]]:
        """A select's rows, each value as its column's type reads it."""
        columns = self._results
        return [
            {
                name: value if process is None or value is None else process(value)
                for (name, process), value in zip(columns, row, strict=True)
            }
            for row in self.run(conn, values).fetchall()
        ]


def _reader(kind: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """How a stored value of this type is read: as SQLAlchemy reads it, faster for the two
    types a history is mostly made of (the test compares both reads)."""
    process = kind.dialect_impl(dialect).result_processor(dialect, None)
    if isinstance(kind, JSON):
        return _json_reader(process)
    if isinstance(kind, DateTime) and process is not None:
        return _datetime_reader(process)
    return process


def _json_reader(slow: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:  # e.g. NaN, which json.dumps writes and orjson refuses
            return json.loads(value) if slow is None else slow(value)

    return read


def _datetime_reader(slow: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        try:
            return datetime.fromisoformat(value)  # SQLite's "YYYY-MM-DD HH:MM:SS.ffffff"
        except (TypeError, ValueError):
            return slow(value)

    return read
