"""Schema migrations of the SQL store (Alembic), run by ``SqlStore.start()`` on every engine.

The Alembic configuration is built here in code, so a deployed node needs no ``alembic.ini``:
``upgrade_to_head(engine)`` brings any database to the newest revision, and
``python -m dari.stores.migrations <alembic command>`` runs Alembic by hand (e.g. ``history``,
or ``revision --autogenerate -m "..."`` for contributors) against ``DARI_STORE__URL``.

Databases made before migrations existed (``metadata.create_all``, no ``alembic_version``
table) are adopted: if they hold exactly the baseline tables with at least the baseline
columns they are stamped at the baseline revision, then upgraded. Nothing is dropped or
rewritten, so their data stays. A partial or unrecognised schema is refused with a message.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from dari.protocol.errors import MigrationError as MigrationError  # part of the one error tree

MIGRATIONS_DIR = Path(__file__).resolve().parent
BASELINE = "0001"
# The tables and columns revision 0001 creates: what create_all made before migrations existed.
BASELINE_COLUMNS: dict[str, frozenset[str]] = {
    "conversations": frozenset({"id", "project_id", "agent_name", "thread_id", "created_at"}),
    "messages": frozenset(
        {
            "id",
            "conversation_id",
            "role",
            "content",
            "images",
            "steps",
            "status",
            "request_id",
            "node_id",
            "created_at",
            "updated_at",
        }
    ),
    "chat_requests": frozenset({"user_id", "client_message_id", "request_id", "created_at"}),
    "clients": frozenset({"client_id", "user_id", "created_at"}),
    "tasks": frozenset(
        {
            "id",
            "project_id",
            "agent_name",
            "task",
            "status",
            "result",
            "origin_agent",
            "origin_thread",
            "created_at",
            "finished_at",
        }
    ),
}
# Any constant works; it only has to be the same on every node.
_PG_LOCK_KEY = 0x64617269  # "dari"




def make_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for dari's migrations, without any ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ini interpolation
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _adopt_legacy(connection: Connection, config: Config) -> None:
    """Stamp a database made by ``create_all`` (no ``alembic_version``) at the baseline."""
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables:
        return
    present = tables & BASELINE_COLUMNS.keys()
    if not present:
        return  # a fresh database: the upgrade creates everything
    if present != BASELINE_COLUMNS.keys():
        missing = sorted(BASELINE_COLUMNS.keys() - present)
        raise MigrationError(
            f"the database has some of dari's tables but not {missing} and no alembic_version "
            "table: it was not made by dari, or its creation was interrupted. Move it aside "
            "or finish it by hand, then stamp it (python -m dari.stores.migrations stamp 0001)."
        )
    inspector = inspect(connection)
    for table, expected in BASELINE_COLUMNS.items():
        columns = {column["name"] for column in inspector.get_columns(table)}
        if not expected <= columns:
            raise MigrationError(
                f"table {table!r} lacks column(s) {sorted(expected - columns)}: this database "
                "predates the schema dari can adopt automatically"
            )
    command.stamp(config, BASELINE)


def upgrade(connection: Connection) -> None:
    """Bring the database on ``connection`` to the newest revision (inside its transaction)."""
    if connection.dialect.name == "postgresql":
        # Nodes starting together take turns; the lock ends with the transaction. PostgreSQL's
        # DDL is transactional, so a node that waited finds the schema done and does nothing.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    config = make_config(connection=connection)
    _adopt_legacy(connection, config)
    command.upgrade(config, "head")


async def upgrade_to_head(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(upgrade)
