"""The SQL store on SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL by URL.

Each operation is one synchronous function over a ``Connection``, run by a worker
(``dari.stores.workers``): on SQLite a thread of its own with group commit, on PostgreSQL the
async engine. Statements are built once and executed with parameters, so the per-call cost is
binding values, not building and compiling SQL; the statements every chat runs (its writes and
its history) go through ``dari.stores.sql_chat``, which on SQLite runs them on the driver
directly.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, bindparam, select, text, update
from sqlalchemy.engine import make_url

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
from dari.stores.cache import BoundedCache
from dari.stores.migrations import upgrade
from dari.stores.schema import chat_requests, messages, tasks
from dari.stores.sql_chat import CONVERSATION_OF, chat_sql_for
from dari.stores.sql_threads import SqlThreads, key_params
from dari.stores.workers import Worker, make_worker

_REMEMBERED_REQUESTS = 50_000
_CACHED = 100_000  # conversation ids and client owners kept in memory at most
A = TypeVar("A")
B = TypeVar("B")


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


def _mapped(source: asyncio.Future[A], convert: Callable[[A], B]) -> asyncio.Future[B]:
    """A future of ``convert(result)``; errors and cancellation pass through."""
    mapped: asyncio.Future[B] = asyncio.get_running_loop().create_future()

    def settle(source: asyncio.Future[A]) -> None:
        if mapped.done():
            return
        if source.cancelled():
            mapped.cancel()
        elif (error := source.exception()) is not None:
            mapped.set_exception(error)
        else:
            mapped.set_result(convert(source.result()))

    source.add_done_callback(settle)
    return mapped


def _order(key: ConversationKey) -> str:
    """The worker's ordering key: one conversation's operations run in submission order."""
    return "\x00".join(key.parts())


class _Statements:
    """The statements the store runs besides those of every chat (``sql_chat``), built once."""

    def __init__(self) -> None:
        self.request_of = select(chat_requests.c.request_id).where(
            (chat_requests.c.user_id == bindparam("user_id"))
            & (chat_requests.c.client_message_id == bindparam("client_message_id"))
        )
        self.answered = (
            select(messages.c.id)
            .where(
                (messages.c.conversation_id == CONVERSATION_OF.scalar_subquery())
                & (messages.c.request_id == bindparam("request_id"))
                & (messages.c.role == "assistant")
            )
            .limit(1)
        )
        # A paused answer (``interrupted``) is as unfinished as a streaming one.
        unfinished = messages.c.status.in_(("streaming", "interrupted"))
        self.fail_streaming = (
            update(messages)
            .where(unfinished & (messages.c.node_id == bindparam("node")))
            .values(status="failed", updated_at=bindparam("now"))
        )
        self.fail_all_streaming = (
            update(messages).where(unfinished).values(status="failed", updated_at=bindparam("now"))
        )
        self.insert_task = tasks.insert()
        self.update_task = update(tasks).where(tasks.c.id == bindparam("task_id"))
        self.task_of = select(tasks).where(tasks.c.id == bindparam("task_id"))
        self.running_tasks = (
            select(tasks).where(tasks.c.status == "running").order_by(tasks.c.created_at)
        )


def _message_record(row: Mapping[str, Any]) -> MessageRecord:
    return MessageRecord(
        id=int(row["id"]),
        role=row["role"],
        content=row["content"],
        images=list(row["images"] or []),
        status=row["status"],
        request_id=row["request_id"],
        created_at=_aware(row["created_at"]),
        steps=list(row["steps"] or []),
        author=row["author"],
        reasoning=row["reasoning"] or "",
        usage=row["usage"],
        finish_reason=row["finish_reason"],
        tools=list(row["tools"] or []),
        interrupts=list(row["interrupts"] or []),
    )


def _task_record(row: Row[Any]) -> TaskRecord:
    origin = (
        ConversationKey(row.project_id, row.origin_agent, row.origin_thread, row.origin_scope or "")
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


class SqlStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self._sql = _Statements()
        self._chat = chat_sql_for(parsed.get_backend_name())  # what every chat runs
        self._worker: Worker = make_worker(parsed)
        self._started = False
        # Caches of facts that never change once committed, so repeats cost no query.
        self._conversation_ids: BoundedCache[ConversationKey, int] = BoundedCache(_CACHED)
        self._owners: BoundedCache[str, str] = BoundedCache(_CACHED)  # client_id -> user_id
        self.threads = SqlThreads(
            self._worker, parsed.get_backend_name(), self._owners, self._chat
        )
        # (user_id, client message id) -> the write saving that chat right now
        self._saving: dict[tuple[str, str], asyncio.Future[AcceptedChat]] = {}
        # (user_id, client message id) -> request_id of committed chats, newest last
        self._requests: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def start(self) -> None:
        url = make_url(self.url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        await self._worker.start()
        self._started = True
        # Alembic on both engines, not create_all: create_all never alters an existing table,
        # so a later schema change would silently miss databases made by an older dari.
        await self._worker.run(upgrade)

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self._worker.close()

    async def ping(self) -> None:
        await self._worker.run(lambda conn: conn.execute(text("SELECT 1")).scalar())

    # --- conversations and messages (run on the worker) -----------------------------------

    def _conversation_id(
        self, conn: Connection, key: ConversationKey, owner: str | None = None
    ) -> int:
        """The conversation's id, created if new (owned by ``owner``, or by the user of a
        per-user thread). Not cached here: the caller caches it once the transaction has
        committed (a rolled-back id would point at nothing)."""
        cached = self._conversation_ids.get(key)
        if cached is not None:
            return cached
        fields = key_params(key)
        chat = self._chat
        found = chat.conversation_of(conn, fields)
        if found is None:
            values = {**fields, "owner": owner or key.scope or None, "created_at": _now()}
            chat.insert_conversation(conn, values)
            found = chat.conversation_of(conn, fields)
            assert found is not None, "inserted, or inserted by another writer"
        return found

    def _insert_message(
        self,
        conn: Connection,
        key: ConversationKey,
        role: Role,
        content: str,
        *,
        images: list[str] | None = None,
        status: Status = "complete",
        request_id: str | None = None,
        node_id: str | None = None,
        author: str | None = None,
        user_id: str | None = None,
    ) -> tuple[int, int, datetime]:
        """Add a message to ``key``'s conversation (created if new, owned by ``user_id``);
        returns the conversation's id (for the caller to cache once committed), the message's
        id and creation time."""
        conversation_id = self._conversation_id(conn, key, user_id)
        now = _now()
        message_id = self._chat.insert_message(
            conn,
            {
                "conversation_id": conversation_id,
                "role": role,
                "content": content,
                "images": images or [],
                "steps": [],
                "status": status,
                "request_id": request_id,
                "node_id": node_id,
                "author": author,
                "user_id": user_id,
                "created_at": now,
                "updated_at": now,
            },
        )
        return conversation_id, message_id, now

    def _add_message(
        self, key: ConversationKey, role: Role, content: str, **fields: Any
    ) -> asyncio.Future[tuple[int, datetime]]:
        """Queue the insert now; the future resolves to the message's id and creation time."""

        def add(conn: Connection) -> tuple[int, int, datetime]:
            return self._insert_message(conn, key, role, content, **fields)

        def remember(result: tuple[int, int, datetime]) -> tuple[int, datetime]:
            conversation_id, message_id, now = result
            self._conversation_ids[key] = conversation_id  # committed: safe to remember
            return message_id, now

        return _mapped(self._worker.submit(add, _order(key)), remember)

    # --- the Store interface ----------------------------------------------------------------

    async def claim_client(self, client_id: str, user_id: str) -> str:
        # An owner never changes once recorded, so reconnects are answered from memory and
        # never queue behind writes (a reconnect storm would otherwise pile up handshakes).
        owner = self._owners.get(client_id)
        if owner is not None:
            return owner

        chat = self._chat

        def claim(conn: Connection) -> str:
            found = chat.owner_of(conn, client_id)
            if found is None:
                values = {"client_id": client_id, "user_id": user_id, "created_at": _now()}
                chat.insert_client(conn, values)
                # Whoever inserted first (this call, or another node meanwhile) owns it.
                found = chat.owner_of(conn, client_id)
                assert found is not None, "inserted, or inserted by another writer"
            return found

        owner = await self._worker.run(claim)
        self._owners[str(client_id)] = owner
        return owner

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
        # memory or by the write already saving it, so each chat costs one operation.
        flight = (user_id, client_message_id)
        known = self._requests.get(flight)
        if known is not None:
            return AcceptedChat(request_id=known, duplicate=True, message_id=None)
        saving = self._saving.get(flight)
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
        sql = self._sql

        def accept(conn: Connection) -> tuple[AcceptedChat, int | None]:
            if client_message_id is not None:
                ids = {"user_id": user_id, "client_message_id": client_message_id}
                inserted = self._chat.insert_request(
                    conn, {**ids, "request_id": request_id, "created_at": _now()}
                )
                if not inserted:  # accepted before: by an earlier connection, or another node
                    winner = conn.execute(sql.request_of, ids).scalar_one()
                    return AcceptedChat(str(winner), duplicate=True, message_id=None), None
            conversation_id, message_id, _ = self._insert_message(
                conn, key, "user", message, images=images, request_id=request_id, user_id=user_id
            )
            return AcceptedChat(request_id, duplicate=False, message_id=message_id), (
                conversation_id
            )

        accepted, conversation_id = await self._worker.run(accept, _order(key))
        if conversation_id is not None:
            self._conversation_ids[key] = conversation_id
        if client_message_id is not None:
            self._remember_request(user_id, client_message_id, accepted.request_id)
        return accepted

    async def answered(self, key: ConversationKey, request_id: str) -> bool:
        params = {**key_params(key), "request_id": request_id}
        found = await self._worker.run(
            lambda conn: conn.execute(self._sql.answered, params).scalar(), _order(key)
        )
        return found is not None

    async def find_request(self, user_id: str, client_message_id: str) -> str | None:
        flight = (user_id, client_message_id)
        known = self._requests.get(flight)
        if known is not None:
            return known
        saving = self._saving.get(flight)
        if saving is not None:
            return (await asyncio.shield(saving)).request_id
        ids = {"user_id": user_id, "client_message_id": client_message_id}
        found = await self._worker.run(
            lambda conn: conn.execute(self._sql.request_of, ids).scalar()
        )
        if found is None:
            return None
        self._remember_request(user_id, client_message_id, str(found))
        return str(found)

    def _remember_request(self, user_id: str, client_message_id: str, request_id: str) -> None:
        requests = self._requests
        requests[(user_id, client_message_id)] = request_id
        if len(requests) > _REMEMBERED_REQUESTS:
            requests.popitem(last=False)  # the oldest; the database still knows it

    def begin_answer(
        self, key: ConversationKey, request_id: str, node_id: str
    ) -> asyncio.Future[int]:
        added = self._add_message(
            key, "assistant", "", status="streaming", request_id=request_id, node_id=node_id
        )
        return _mapped(added, lambda result: result[0])

    async def save_answer(
        self,
        message_id: int,
        content: str,
        status: Status,
        steps: list[dict[str, Any]],
        *,
        reasoning: str = "",
        usage: dict[str, int] | None = None,
        finish_reason: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        interrupts: list[dict[str, Any]] | None = None,
    ) -> None:
        values = {
            "content": content,
            "status": status,
            "steps": steps,
            "reasoning": reasoning or None,
            "usage": usage,
            "finish_reason": finish_reason,
            "tools": tools or None,
            "interrupts": interrupts or None,
            "updated_at": _now(),
        }
        # Ordered per message: a checkpoint still queued when the answer ends must not be
        # committed after (and over) the final save.
        await self._worker.run(
            lambda conn: self._chat.update_answer(conn, message_id, values),
            f"message:{message_id}",
        )

    async def add_report(
        self, key: ConversationKey, content: str, task_id: str, author: str | None = None
    ) -> MessageRecord:
        message_id, now = await self._add_message(
            key, "report", content, request_id=task_id, author=author
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
        chat = self._chat

        def read(conn: Connection) -> list[Mapping[str, Any]]:
            conversation_id = self._conversation_ids.get(key)
            if conversation_id is None:
                conversation_id = chat.conversation_of(conn, key_params(key))
                if conversation_id is None:
                    return []
            return chat.history(conn, conversation_id, limit, before)

        rows = await self._worker.run(read, _order(key))
        return [_message_record(row) for row in reversed(rows)]

    async def fail_interrupted(self, node_id: str | None) -> int:
        def fail(conn: Connection) -> int:
            if node_id is None:
                statement = self._sql.fail_all_streaming
                return int(conn.execute(statement, {"now": _now()}).rowcount)
            return int(
                conn.execute(self._sql.fail_streaming, {"node": node_id, "now": _now()}).rowcount
            )

        return await self._worker.run(fail)

    async def create_task(
        self,
        task_id: str,
        project_id: str,
        agent_name: str,
        task: str,
        origin: ConversationKey | None,
    ) -> TaskRecord:
        now = _now()
        values = {
            "id": task_id,
            "project_id": project_id,
            "agent_name": agent_name,
            "task": task,
            "status": "running",
            "result": None,
            "origin_agent": origin.agent_name if origin else None,
            "origin_thread": origin.thread_id if origin else None,
            "origin_scope": origin.scope if origin else None,
            "created_at": now,
            "finished_at": None,
        }
        await self._worker.run(lambda conn: conn.execute(self._sql.insert_task, values))
        return TaskRecord(task_id, project_id, agent_name, task, "running", None, origin, now, None)

    async def finish_task(self, task_id: str, status: TaskStatus, result: str) -> TaskRecord:
        sql = self._sql

        def finish(conn: Connection) -> Row[Any] | None:
            conn.execute(
                sql.update_task,
                {"task_id": task_id, "status": status, "result": result, "finished_at": _now()},
            )
            return conn.execute(sql.task_of, {"task_id": task_id}).first()

        row = await self._worker.run(finish)
        if row is None:
            raise KeyError(task_id)
        return _task_record(row)

    async def get_task(self, task_id: str) -> TaskRecord | None:
        row = await self._worker.run(
            lambda conn: conn.execute(self._sql.task_of, {"task_id": task_id}).first()
        )
        return None if row is None else _task_record(row)

    async def running_tasks(self) -> list[TaskRecord]:
        rows = await self._worker.run(lambda conn: conn.execute(self._sql.running_tasks).all())
        return [_task_record(row) for row in rows]
