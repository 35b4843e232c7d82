"""The SQL store on SQLAlchemy 2 async: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Select, event, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dari.protocol.frames import ConversationKey
from dari.stores.base import (
    AcceptedChat,
    MessageRecord,
    Role,
    Status,
    Store,
    TaskRecord,
    TaskStatus,
)
from dari.stores.migrations import upgrade_to_head
from dari.stores.schema import chat_requests, clients, conversations, messages, tasks

_SQLITE_BEGIN = "dari_sqlite_begin"
_REMEMBERED_REQUESTS = 50_000


def _consume_exception(future: asyncio.Future[AcceptedChat]) -> None:
    # Resends that waited on a failed write get its exception; with none waiting, it is
    # still retrieved here, so asyncio does not report it as never retrieved.
    if not future.cancelled():
        future.exception()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything is stored in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class SqlStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite = url.startswith("sqlite")
        self._engine: AsyncEngine | None = None
        # SQLite has one writer at a time; serialising writes here avoids "database is locked".
        self._write_lock = asyncio.Lock() if self._sqlite else None
        self._conversation_ids: dict[ConversationKey, int] = {}
        self._owners: dict[str, str] = {}  # client_id -> user_id, once committed
        # (user_id, client message id) -> the write saving that chat right now
        self._saving: dict[tuple[str, str], asyncio.Future[AcceptedChat]] = {}
        # (user_id, client message id) -> request_id of committed chats, newest last
        self._requests: OrderedDict[tuple[str, str], str] = OrderedDict()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("store not started")
        return self._engine

    async def start(self) -> None:
        url = make_url(self.url)
        if self._sqlite:
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(url, connect_args={"timeout": 30})

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                # The driver's own transaction handling breaks SAVEPOINT (a nested block would
                # commit at once); SQLAlchemy's documented recipe: autocommit driver + our BEGIN.
                dbapi_connection.isolation_level = None
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            @event.listens_for(engine.sync_engine, "begin")
            def _begin(conn: Any) -> None:
                # Writers take the write lock up front (IMMEDIATE): a deferred transaction that
                # reads, then writes, can hit SQLite's lock-upgrade deadlock across processes.
                mode = conn.get_execution_options().get(_SQLITE_BEGIN, "")
                conn.exec_driver_sql(f"BEGIN {mode}".strip())
        else:
            engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        self._engine = engine
        # Alembic on both engines, not create_all: create_all never alters an existing table,
        # so a later schema change would silently miss databases made by an older dari.
        await upgrade_to_head(engine)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.connect() as conn:
            await conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
            async with conn.begin():
                yield conn

    async def _conversation_id(self, conn: AsyncConnection, key: ConversationKey) -> int:
        cached = self._conversation_ids.get(key)
        if cached is not None:
            return cached
        where = (
            (conversations.c.project_id == key.project_id)
            & (conversations.c.agent_name == key.agent_name)
            & (conversations.c.thread_id == key.thread_id)
        )
        found = (await conn.execute(select(conversations.c.id).where(where))).scalar()
        if found is not None:
            # Committed by someone: safe to remember. A row this transaction inserts is not
            # remembered, since a rollback would leave the cache pointing at nothing.
            self._conversation_ids[key] = int(found)
        else:
            try:
                async with conn.begin_nested():
                    result = await conn.execute(
                        conversations.insert().values(**key.fields(), created_at=_now())
                    )
                    found = cast(int, result.inserted_primary_key[0])  # type: ignore[index]
            except IntegrityError:  # another node created it first
                found = (await conn.execute(select(conversations.c.id).where(where))).scalar_one()
        return int(found)

    async def _insert_message(
        self,
        conn: AsyncConnection,
        key: ConversationKey,
        role: Role,
        content: str,
        *,
        images: list[str] | None = None,
        status: Status = "complete",
        request_id: str | None = None,
        node_id: str | None = None,
        author: str | None = None,
    ) -> tuple[int, datetime]:
        """Add a message to ``key``'s conversation; returns its id and creation time."""
        conversation_id = await self._conversation_id(conn, key)
        now = _now()
        result = await conn.execute(
            messages.insert().values(
                conversation_id=conversation_id,
                role=role,
                content=content,
                images=images or [],
                steps=[],
                status=status,
                request_id=request_id,
                node_id=node_id,
                author=author,
                created_at=now,
                updated_at=now,
            )
        )
        return int(result.inserted_primary_key[0]), now  # type: ignore[index]

    async def claim_client(self, client_id: str, user_id: str) -> str:
        # An owner never changes once recorded, so reconnects are answered from memory and
        # never queue behind writes (a reconnect storm would otherwise pile up handshakes).
        owner = self._owners.get(client_id)
        if owner is not None:
            return owner
        query = select(clients.c.user_id).where(clients.c.client_id == client_id)
        async with self.engine.connect() as conn:
            found = (await conn.execute(query)).scalar()
        if found is None:
            try:
                async with self._writing() as conn:
                    await conn.execute(
                        clients.insert().values(
                            client_id=client_id, user_id=user_id, created_at=_now()
                        )
                    )
                found = user_id
            except IntegrityError:  # another connection or node claimed it first
                async with self.engine.connect() as conn:
                    found = (await conn.execute(query)).scalar_one()
        self._owners[str(client_id)] = str(found)
        return str(found)

    async def accept_chat(
        self,
        *,
        user_id: str,
        client_message_id: str | None,
        request_id: str,
        key: ConversationKey,
        message: str,
        images: list[str],
    ) -> AcceptedChat:
        if client_message_id is None:
            return await self._accept(user_id, None, request_id, key, message, images)
        # Clients resend unacknowledged chats after every reconnect: a resend is answered from
        # memory, a read, or the write already saving it, so each chat costs one write.
        flight = (user_id, client_message_id)
        saving = self._saving.get(flight)
        if saving is not None:
            first = await asyncio.shield(saving)
            return AcceptedChat(request_id=first.request_id, duplicate=True, message_id=None)
        original = await self._known_request(user_id, client_message_id)
        if original is not None:
            return AcceptedChat(request_id=original, duplicate=True, message_id=None)
        saving = self._saving.get(flight)  # another resend may have started while we read
        if saving is not None:
            first = await asyncio.shield(saving)
            return AcceptedChat(request_id=first.request_id, duplicate=True, message_id=None)
        future: asyncio.Future[AcceptedChat] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume_exception)
        self._saving[flight] = future
        try:
            accepted = await self._accept(
                user_id, client_message_id, request_id, key, message, images
            )
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self._saving[flight]
        future.set_result(accepted)
        return accepted

    async def _accept(
        self,
        user_id: str,
        client_message_id: str | None,
        request_id: str,
        key: ConversationKey,
        message: str,
        images: list[str],
    ) -> AcceptedChat:
        async with self._writing() as conn:
            if client_message_id is not None:
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            chat_requests.insert().values(
                                user_id=user_id,
                                client_message_id=client_message_id,
                                request_id=request_id,
                                created_at=_now(),
                            )
                        )
                except IntegrityError:  # accepted meanwhile, by another socket or node
                    winner = (
                        await conn.execute(self._request_query(user_id, client_message_id))
                    ).scalar_one()
                    return AcceptedChat(request_id=str(winner), duplicate=True, message_id=None)
            message_id, _ = await self._insert_message(
                conn, key, "user", message, images=images, request_id=request_id
            )
        if client_message_id is not None:
            self._remember_request(user_id, client_message_id, request_id)
        return AcceptedChat(request_id=request_id, duplicate=False, message_id=message_id)

    @staticmethod
    def _request_query(user_id: str, client_message_id: str) -> Select[str]:
        return select(chat_requests.c.request_id).where(
            (chat_requests.c.user_id == user_id)
            & (chat_requests.c.client_message_id == client_message_id)
        )

    async def _known_request(self, user_id: str, client_message_id: str) -> str | None:
        known = self._requests.get((user_id, client_message_id))
        if known is not None:
            return known
        async with self.engine.connect() as conn:
            found = (await conn.execute(self._request_query(user_id, client_message_id))).scalar()
        if found is not None:
            self._remember_request(user_id, client_message_id, str(found))
        return None if found is None else str(found)

    def _remember_request(self, user_id: str, client_message_id: str, request_id: str) -> None:
        requests = self._requests
        requests[(user_id, client_message_id)] = request_id
        if len(requests) > _REMEMBERED_REQUESTS:
            requests.popitem(last=False)  # the oldest; it is still found by a read

    async def begin_answer(self, key: ConversationKey, request_id: str, node_id: str) -> int:
        async with self._writing() as conn:
            message_id, _ = await self._insert_message(
                conn,
                key,
                "assistant",
                "",
                status="streaming",
                request_id=request_id,
                node_id=node_id,
            )
            return message_id

    async def save_answer(
        self, message_id: int, content: str, status: Status, steps: list[dict[str, Any]]
    ) -> None:
        async with self._writing() as conn:
            await conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(content=content, status=status, steps=steps, updated_at=_now())
            )

    async def add_report(
        self, key: ConversationKey, content: str, task_id: str, author: str | None = None
    ) -> MessageRecord:
        async with self._writing() as conn:
            message_id, now = await self._insert_message(
                conn, key, "report", content, request_id=task_id, author=author
            )
        return MessageRecord(
            id=message_id,
            role="report",
            content=content,
            images=[],
            status="complete",
            request_id=task_id,
            created_at=now,
            author=author,
        )

    async def history(
        self, key: ConversationKey, limit: int, before: int | None = None
    ) -> list[MessageRecord]:
        if limit <= 0:
            return []
        async with self.engine.connect() as conn:
            conversation_id = (
                await conn.execute(
                    select(conversations.c.id).where(
                        (conversations.c.project_id == key.project_id)
                        & (conversations.c.agent_name == key.agent_name)
                        & (conversations.c.thread_id == key.thread_id)
                    )
                )
            ).scalar()
            if conversation_id is None:
                return []
            query = select(messages).where(messages.c.conversation_id == conversation_id)
            if before is not None:
                query = query.where(messages.c.id < before)
            rows = (await conn.execute(query.order_by(messages.c.id.desc()).limit(limit))).all()
        return [
            MessageRecord(
                id=int(row.id),
                role=row.role,
                content=row.content,
                images=list(row.images or []),
                status=row.status,
                request_id=row.request_id,
                created_at=_aware(row.created_at),
                steps=list(row.steps or []),
                author=row.author,
            )
            for row in reversed(rows)
        ]

    async def fail_interrupted(self, node_id: str) -> int:
        async with self._writing() as conn:
            result = await conn.execute(
                update(messages)
                .where((messages.c.status == "streaming") & (messages.c.node_id == node_id))
                .values(status="failed", updated_at=_now())
            )
            return int(result.rowcount)

    async def create_task(
        self,
        task_id: str,
        project_id: str,
        agent_name: str,
        task: str,
        origin: ConversationKey | None,
    ) -> TaskRecord:
        now = _now()
        async with self._writing() as conn:
            await conn.execute(
                tasks.insert().values(
                    id=task_id,
                    project_id=project_id,
                    agent_name=agent_name,
                    task=task,
                    status="running",
                    origin_agent=origin.agent_name if origin else None,
                    origin_thread=origin.thread_id if origin else None,
                    created_at=now,
                )
            )
        return TaskRecord(task_id, project_id, agent_name, task, "running", None, origin, now, None)

    async def finish_task(self, task_id: str, status: TaskStatus, result: str) -> TaskRecord:
        async with self._writing() as conn:
            await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id)
                .values(status=status, result=result, finished_at=_now())
            )
        record = await self.get_task(task_id)
        if record is None:
            raise KeyError(task_id)
        return record

    async def get_task(self, task_id: str) -> TaskRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
        if row is None:
            return None
        origin = (
            ConversationKey(row.project_id, row.origin_agent, row.origin_thread)
            if row.origin_agent
            else None
        )
        return TaskRecord(
            id=row.id,
            project_id=row.project_id,
            agent_name=row.agent_name,
            task=row.task,
            status=row.status,
            result=row.result,
            origin=origin,
            created_at=_aware(row.created_at),
            finished_at=_aware(row.finished_at) if row.finished_at else None,
        )
