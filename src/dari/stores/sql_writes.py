"""The writes every chat makes: its request and message, its conversation the first time, the
answer's row, the checkpoints and the final save; and a client's owner, once per client.

On PostgreSQL they run through SQLAlchemy Core like every other statement (:class:`CoreWrites`).
On SQLite they run on the stdlib driver directly (:class:`SqliteWrites`): such a statement
costs about 20 µs of CPU there and SQLAlchemy's execution around it about 100 µs more, on the
one thread every chat's writes share, four to six times per chat. The SQL text is compiled once
from the same tables and every value goes through its column type's own bind processor, so
the rows are the ones SQLAlchemy would write (a test compares them) and every read sees no
difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Column, Connection, Insert, Update, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

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


class CoreWrites:
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
        self._conversation_of = select(conversations.c.id).where(
            *(conversations.c[name] == bindparam(name) for name in CONVERSATION_KEY)
        )
        self._insert_message = messages.insert()
        self._update_message = update(messages).where(messages.c.id == bindparam("message_id"))

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

    def insert_message(self, conn: Connection, values: Values) -> int:
        """Add a message; returns its id."""
        result = conn.execute(self._insert_message, dict(values))
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def update_answer(self, conn: Connection, message_id: int, values: Values) -> None:
        """Checkpoint or finally save an answer's row."""
        conn.execute(self._update_message, {**values, "message_id": message_id})


class SqliteWrites(CoreWrites):
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

    def insert_message(self, conn: Connection, values: Values) -> int:
        return int(self._message.run(conn, values).lastrowid)

    def update_answer(self, conn: Connection, message_id: int, values: Values) -> None:
        self._answer.run(conn, {**values, "message_id": message_id})


def writes_for(dialect: str) -> CoreWrites:
    return SqliteWrites() if dialect == "sqlite" else CoreWrites(dialect)


# --- compiling once ------------------------------------------------------------------------

_BIND_PREFIX = "v_"  # a bind may not share its column's name in VALUES or SET


def _binds(fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: bindparam(_BIND_PREFIX + name) for name in fields}


class _Compiled:
    """A statement's SQLite text and, per positional parameter, the value's name and its
    column type's bind processor."""

    __slots__ = ("_params", "sql")

    def __init__(self, statement: Insert | Update | Any, columns: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        params: list[tuple[str, Callable[[Any], Any] | None]] = []
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

    def run(self, conn: Connection, values: Values) -> Any:
        """Execute on the driver's connection; returns the driver's cursor."""
        bound = [
            values[name] if process is None else process(values[name])
            for name, process in self._params
        ]
        driver = conn.connection.driver_connection
        assert driver is not None, "a live connection"
        return driver.execute(self.sql, bound)
