"""dari's LangGraph checkpointer, on the store's own database, for graphs that keep their own
memory (``history = "checkpointer"``) but were compiled without a checkpointer.

Every node of a deployment shares the store's database, so a conversation's graph state is the
same whichever node runs its next answer, and survives restarts:

- SQLite (``sqlite+aiosqlite:///data/dari.db``): ``AsyncSqliteSaver`` (``langgraph-checkpoint-
  sqlite``) in a file beside the store's, ``dari.langgraph.db`` (its tables stay out of the
  store's migrations); an in-memory store gets LangGraph's ``InMemorySaver``.
- PostgreSQL: ``AsyncPostgresSaver`` (``langgraph-checkpoint-postgres``, psycopg) in the same
  database, its tables created by its own ``setup()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy.engine import make_url

Closer = Callable[[], Awaitable[None]]
CHECKPOINT_FILE = "{stem}.langgraph.db"


async def _nothing() -> None:
    return None


async def open_checkpointer(store_url: str) -> tuple[BaseCheckpointSaver[str], Closer]:
    """A checkpointer on the store's database, and how to close it."""
    url = make_url(store_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database
        if not database or database == ":memory:":
            return InMemorySaver(), _nothing
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        store = Path(database)
        path = store.with_name(CHECKPOINT_FILE.format(stem=store.stem))
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        await connection.execute("PRAGMA journal_mode=WAL")
        sqlite_saver = AsyncSqliteSaver(connection)
        await sqlite_saver.setup()
        return sqlite_saver, connection.close
    if backend == "postgresql":
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        pool: AsyncConnectionPool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=4,
            open=False,
            # What AsyncPostgresSaver expects of its connections (its documentation).
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        )
        await pool.open()
        postgres_saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await postgres_saver.setup()
        return postgres_saver, pool.close
    raise ValueError(f"no LangGraph checkpointer for a {backend!r} store")
