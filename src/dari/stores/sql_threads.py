"""``ThreadStore`` on SQLAlchemy Core, run by the SQL store's worker (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from dari.protocol.frames import DEFAULT_THREAD, ConversationKey
from dari.stores.cache import BoundedCache
from dari.stores.schema import clients, conversation_reads, conversations, messages
from dari.stores.sql_chat import CoreChatSql, OwnerRow
from dari.stores.threads import (
    ConversationRecord,
    ConversationView,
    DeletedHistory,
    Ownership,
    ThreadStore,
)
from dari.stores.workers import Worker

_FIRST_WORDS = 240  # characters of the first user message read for a title
_CACHED_OWNERS = 100_000  # conversations whose owner a node remembers

c, m, r = conversations.c, messages.c, conversation_reads.c


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def key_params(key: ConversationKey) -> dict[str, str]:
    """The conversation's row, by the columns of its unique constraint."""
    return {**key.fields(), "scope": key.scope}


class SqlThreads(ThreadStore):
    def __init__(
        self, worker: Worker, dialect: str, client_owners: dict[str, str], chat: CoreChatSql
    ) -> None:
        self._worker = worker
        # A chat's first use of a thread claims it: on the statements every chat runs.
        self._chat = chat
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        upsert = insert(conversation_reads)
        # A marker only moves forward: an older read never hides newer messages again.
        self._upsert_read = upsert.on_conflict_do_update(
            index_elements=[r.user_id, r.conversation_id],
            set_={
                "message_id": case(
                    (upsert.excluded.message_id > r.message_id, upsert.excluded.message_id),
                    else_=r.message_id,
                )
            },
        )
        self._newest = select(func.max(m.id)).where(m.conversation_id == bindparam("cid"))
        # Owners never change once recorded: cached by key (the shared flag is not).
        self._owners: BoundedCache[ConversationKey, str | None] = BoundedCache(_CACHED_OWNERS)
        self._client_owners = client_owners  # the SQL store's cache, shared

    # --- ownership ---------------------------------------------------------------------------

    def cached_owner(self, key: ConversationKey) -> str | None:
        return self._owners.get(key)

    def _read(self, conn: Connection, key: ConversationKey) -> OwnerRow | None:
        return self._chat.ownership_of(conn, key_params(key))

    def _remember(self, key: ConversationKey, row: OwnerRow | None) -> Ownership | None:
        if row is None:
            return None
        self._owners[key] = row.owner
        return Ownership(row.owner, bool(row.shared))

    async def ownership(self, key: ConversationKey) -> Ownership | None:
        row = await self._worker.run(lambda conn: self._read(conn, key))
        return self._remember(key, row)

    async def claim(self, key: ConversationKey, user_id: str) -> Ownership:
        if self._owners.get(key) == user_id:
            return Ownership(user_id, False)  # the owner may use it whatever the flag says

        def claim(conn: Connection) -> OwnerRow | None:
            row = self._read(conn, key)
            if row is None:
                values = {**key_params(key), "owner": user_id, "created_at": _now()}
                self._chat.insert_conversation(conn, values)
                # Whoever inserted first (this call, another node, a chat) owns it.
                row = self._read(conn, key)
            return row

        ownership = self._remember(key, await self._worker.run(claim))
        assert ownership is not None
        return ownership

    async def _update(self, key: ConversationKey, **values: Any) -> None:
        def change(conn: Connection) -> None:
            row = self._read(conn, key)
            if row is not None:
                conn.execute(update(conversations).where(c.id == row.id).values(**values))

        await self._worker.run(change)

    async def set_shared(self, key: ConversationKey, shared: bool) -> None:
        await self._update(key, shared=shared)

    async def rename(self, key: ConversationKey, title: str | None) -> None:
        await self._update(key, title=title)

    async def delete_history(self, key: ConversationKey) -> DeletedHistory:
        def wipe(conn: Connection) -> DeletedHistory:
            row = self._read(conn, key)
            if row is None:
                return DeletedHistory(frozenset(), None)
            cid = row.id
            ids = conn.execute(
                select(m.request_id)
                .distinct()
                .where((m.conversation_id == cid) & m.request_id.is_not(None))
            ).scalars()
            request_ids = frozenset(str(value) for value in ids)
            newest = conn.execute(self._newest, {"cid": cid}).scalar()
            conn.execute(delete(conversation_reads).where(r.conversation_id == cid))
            conn.execute(delete(messages).where(m.conversation_id == cid))
            conn.execute(update(conversations).where(c.id == cid).values(title=None, shared=False))
            return DeletedHistory(request_ids, None if newest is None else int(newest))

        return await self._worker.run(wipe)

    async def mark_read(self, key: ConversationKey, user_id: str) -> None:
        def mark(conn: Connection) -> None:
            row = self._read(conn, key)
            if row is None:
                return
            newest = conn.execute(self._newest, {"cid": row.id}).scalar()
            if newest is not None:
                values = {"user_id": user_id, "conversation_id": row.id, "message_id": newest}
                conn.execute(self._upsert_read, values)

        await self._worker.run(mark)

    # --- listing -----------------------------------------------------------------------------

    async def conversations(
        self, view: ConversationView, limit: int, before: int | None = None
    ) -> list[ConversationRecord]:
        query = _listing(view, limit, before)

        def read(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(query).all())

        return [_record(row) for row in await self._worker.run(read)]

    async def client_owners(self, client_ids: Collection[str]) -> Mapping[str, str]:
        known = {cid: self._client_owners[cid] for cid in client_ids if cid in self._client_owners}
        missing = [cid for cid in client_ids if cid not in known]
        if missing:
            statement = select(clients.c.client_id, clients.c.user_id).where(
                clients.c.client_id.in_(bindparam("ids", expanding=True))
            )
            rows = await self._worker.run(
                lambda conn: conn.execute(statement, {"ids": missing}).all()
            )
            for client_id, user_id in rows:
                known[str(client_id)] = self._client_owners[str(client_id)] = str(user_id)
        return known


def _visible(view: ConversationView) -> list[ColumnElement[bool]]:
    """Conditions for the rows of ``view``: those the user may use, under the names that reach
    them (a per-user default thread is reached only by its user)."""
    conditions: list[ColumnElement[bool]] = []
    if view.projects is not None:
        conditions.append(c.project_id.in_(sorted(view.projects)))
    if view.project_id is not None:
        conditions.append(c.project_id == view.project_id)
    if view.agent_name is not None:
        conditions.append(c.agent_name == view.agent_name)
    if view.everything:
        conditions.append(c.scope == "")
        return conditions
    user = view.user_id
    pairs = sorted(view.shared_threads)
    declared = [and_(c.project_id == p, c.thread_id == t) for p, t in pairs]
    conditions.append(or_(c.owner == user, c.shared, *declared))
    main_shared = sorted({p for p, t in pairs if t == DEFAULT_THREAD})
    conditions.append(
        or_(
            c.thread_id != DEFAULT_THREAD,
            and_(c.scope == "", c.project_id.in_(main_shared)) if main_shared else false(),
            and_(c.scope == user, c.project_id.not_in(main_shared)),
        )
    )
    return conditions


def _listing(view: ConversationView, limit: int, before: int | None) -> Any:
    user = view.user_id
    newest = select(func.max(m.id)).where(m.conversation_id == c.id).scalar_subquery()
    listed = (
        select(
            c.id,
            c.project_id,
            c.agent_name,
            c.thread_id,
            c.scope,
            c.owner,
            c.shared,
            c.title,
            newest.label("last_id"),
            func.coalesce(r.message_id, 0).label("read_upto"),
        )
        .select_from(
            conversations.outerjoin(
                conversation_reads, and_(r.conversation_id == c.id, r.user_id == user)
            )
        )
        .where(*_visible(view))
        .subquery("listed")
    )
    first_words = (
        select(func.substr(m.content, 1, _FIRST_WORDS))
        .where((m.conversation_id == listed.c.id) & (m.role == "user"))
        .order_by(m.id)
        .limit(1)
        .scalar_subquery()
    )
    updated = select(m.created_at).where(m.id == listed.c.last_id).scalar_subquery()
    asked = messages.alias("asked")
    own = or_(
        and_(m.role == "user", m.user_id == user),
        and_(
            m.role == "assistant",
            exists().where(
                (asked.c.conversation_id == m.conversation_id)
                & (asked.c.request_id == m.request_id)
                & (asked.c.role == "user")
                & (asked.c.user_id == user)
            ),
        ),
    )
    unread = (
        select(func.count())
        .select_from(messages)
        .where((m.conversation_id == listed.c.id) & (m.id > listed.c.read_upto) & not_(own))
        .scalar_subquery()
    )
    query = (
        select(
            listed,
            first_words.label("first_words"),
            updated.label("updated_at"),
            unread.label("unread"),
        )
        .where(listed.c.last_id.is_not(None))
        .order_by(listed.c.last_id.desc())
        .limit(bindparam("limit", limit, type_=Integer))
    )
    if before is not None:
        query = query.where(listed.c.last_id < before)
    return query


def _record(row: Row[Any]) -> ConversationRecord:
    return ConversationRecord(
        key=ConversationKey(row.project_id, row.agent_name, row.thread_id, row.scope),
        owner=row.owner,
        shared=bool(row.shared),
        title=row.title,
        first_words=row.first_words,
        updated_at=_aware(row.updated_at),
        last_message_id=int(row.last_id),
        unread=int(row.unread),
    )
