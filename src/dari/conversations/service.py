"""Conversations owned by users, for the WebSocket session, REST and the runner.

``open`` turns a principal's names into the conversation they mean and checks that the user
may use it; ``audience`` says which clients get a conversation's project-level frames (reports);
``listing``, ``history`` and ``act`` serve the ``threads``/``thread``/``history`` frames and
their REST twins. A thread another user owns is refused with ``forbidden``, as a project or
agent the user may not use is: the same code for every frame (chat, history, subscribe, cancel,
thread), so no frame tells more than another.

Several nodes: deleting and unsharing are announced on the bus (channel ``dari:threads``), so
every node redacts the deleted history from the logs it serves and drops the subscriptions of
users who lost a thread. A node that missed the message (bus cut off) still refuses those
users' frames (access is read from the store); its sockets may replay the deleted frames until
their replay window passes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson

from dari.agents.directory import AgentDirectory
from dari.auth.base import ALL, Principal
from dari.buses.base import Bus, BusError, BusMessage
from dari.conversations.policy import ThreadPolicy
from dari.conversations.redaction import Redactions
from dari.hub.hub import Audience, ClientState, Hub
from dari.protocol.errors import (
    AccessError,
    DariError,
    ErrorCode,
    LookupFailed,
    ProtocolError,
    Unavailable,
)
from dari.protocol.frames import ConversationKey
from dari.protocol.pages import ENVELOPE_BYTES, message_bytes, shrink
from dari.runner.runner import Runner
from dari.settings import Settings
from dari.stores.base import Store
from dari.stores.threads import ConversationRecord, ConversationView, Ownership

log = logging.getLogger("dari.conversations")

CHANNEL = "dari:threads"
TITLE_CHARS = 60
_LISTING_ROUNDS = 8  # pages read to fill one listing when many rows are filtered out
# Messages read first for a history page; later reads are sized by what still fits.
_FIRST_READ = 24


def title_of(record: ConversationRecord) -> str:
    """The rename, else the first words of the first user message (about 60 characters, cut
    between words), else the thread's name."""
    if record.title:
        return record.title
    words = re.sub(r"\s+", " ", record.first_words or "").strip()
    if not words:
        return record.key.thread_id
    if len(words) <= TITLE_CHARS:
        return words
    cut = words[:TITLE_CHARS]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


class Conversations:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        hub: Hub,
        bus: Bus,
        runner: Runner,
        directory: AgentDirectory,
    ) -> None:
        self.policy = ThreadPolicy.from_settings(settings)
        self.store = store
        self.hub = hub
        self.bus = bus
        self.runner = runner
        self.directory = directory
        self.max_history_bytes = settings.limits.history_max_bytes
        # Logs keep frames for max_age_s; a little longer covers a frame logged just before.
        self.redactions = Redactions(self.policy, settings.replay.max_age_s + 60)

    async def start(self) -> None:
        await self.bus.subscribe(CHANNEL, self._on_message)

    # --- names to conversations ------------------------------------------------------------

    def key(
        self, principal: Principal, project_id: str, agent_name: str, thread_id: str
    ) -> ConversationKey:
        """The conversation ``principal`` means by these names (no ownership check: for
        leaving one, which is always allowed)."""
        principal.require(project_id, agent_name)
        return self.policy.key(principal.user_id, project_id, agent_name, thread_id)

    async def open(
        self,
        principal: Principal,
        project_id: str,
        agent_name: str,
        thread_id: str,
        *,
        claim: bool = False,
    ) -> ConversationKey:
        """The conversation these names mean, if the principal may use it; ``forbidden`` if
        not. ``claim``: a thread nobody has used yet becomes the user's (chat, subscribe), so
        nobody else can start it meanwhile."""
        key = self.key(principal, project_id, agent_name, thread_id)
        self.directory.get(project_id, agent_name)  # unknown names before any row is made
        if not self.policy.needs_owner(key):
            return key
        user = principal.user_id
        threads = self.store.threads
        if threads.cached_owner(key) == user:
            return key
        ownership = await (threads.claim(key, user) if claim else threads.ownership(key))
        if not self.policy.may_use(key, user, ownership):
            raise AccessError(
                f"no access to thread {thread_id!r} of {project_id}/{agent_name}",
                code=ErrorCode.FORBIDDEN,
            )
        return key

    async def may_use(self, principal: Principal, key: ConversationKey) -> bool:
        """Whether the principal may use ``key`` (a conversation named by the server, e.g. a
        task's origin)."""
        if not principal.can_use(key.project_id, key.agent_name):
            return False
        if not self.policy.needs_owner(key):
            return self.policy.may_use(key, principal.user_id, None)
        ownership = await self.store.threads.ownership(key)
        return self.policy.may_use(key, principal.user_id, ownership)

    def report_target(
        self, project_id: str, agent_name: str, thread_id: str, user_id: str
    ) -> ConversationKey:
        """Where an external report to these names goes: ``user_id``'s default thread when it
        is per user, else the thread itself."""
        return self.policy.key(user_id, project_id, agent_name, thread_id)

    # --- who gets a conversation's project-level frames -------------------------------------

    async def audience(self, key: ConversationKey) -> Audience | None:
        """For a private conversation, the filter that keeps its owner's clients; None for a
        shared one (every client of the project whose principal may use the agent)."""
        if self.policy.open_to_all(key):
            return None
        owner: str | None = key.scope
        if not owner:
            ownership = await self.store.threads.ownership(key)
            if ownership is None or ownership.shared or ownership.owner is None:
                return None
            owner = ownership.owner
        return self._clients_of(owner)

    def _clients_of(self, user_id: str) -> Audience:
        clients, threads = self.hub.clients, self.store.threads

        async def keep(client_ids: list[str]) -> list[str]:
            local = {cid: clients[cid].user_id for cid in client_ids if cid in clients}
            others = [cid for cid in client_ids if cid not in local]
            owners = {**(await threads.client_owners(others) if others else {}), **local}
            return [cid for cid in client_ids if owners.get(cid) == user_id]

        return keep

    async def prune(self, state: ClientState) -> None:
        """Drop the client's subscriptions to threads its user may no longer use (unshared
        while it was away: the subscription was restored from another node's record)."""
        threads = self.store.threads
        for key in list(state.conversations):
            if not self.policy.needs_owner(key) or threads.cached_owner(key) == state.user_id:
                continue
            ownership = await threads.ownership(key)
            if not self.policy.may_use(key, state.user_id, ownership):
                await self.hub.leave(state.client_id, key)

    # --- reading -----------------------------------------------------------------------------

    async def history(
        self,
        principal: Principal,
        project_id: str,
        agent_name: str,
        thread_id: str,
        limit: int,
        before: int | None,
    ) -> dict[str, Any]:
        """A page of the conversation's history: the newest ``limit`` messages older than
        ``before`` that fit in ``limits.max_history_bytes``, oldest first. ``more`` says
        whether older messages exist, and ``before`` is then the cursor of the next page. A
        message larger than a page on its own comes cut (``shrink``). The newest page also
        marks the conversation read."""
        key = await self.open(principal, project_id, agent_name, thread_id)
        budget = self.max_history_bytes - ENVELOPE_BYTES
        page: list[dict[str, Any]] = []  # newest first
        used, cursor, more = 0, before, False
        while True:
            # Read in steps, so that a page of large messages never loads `limit` of them.
            left = limit - len(page)
            want = min(left, _FIRST_READ if not page else (budget - used) * len(page) // used + 1)
            records = await self.store.history(key, want + 1, cursor)  # one more: older exist?
            older = len(records) > want
            batch = records[-want:] if older else records
            full = False
            for record in reversed(batch):
                wire = record.to_wire()
                size = message_bytes(wire)
                if used + size > budget:
                    if page:
                        full = True
                        break
                    wire = shrink(wire, budget)
                    size = message_bytes(wire)
                page.append(wire)
                used += size
            if full or (older and len(page) >= limit):
                more = True
                break
            if not older:
                break
            cursor = batch[0].id
        if before is None and page:
            await self.store.threads.mark_read(key, principal.user_id)
        return {
            **key.fields(),
            "messages": page[::-1],
            "more": more,
            "before": page[-1]["id"] if more else None,
        }

    async def listing(
        self,
        principal: Principal,
        *,
        project_id: str | None = None,
        agent_name: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> dict[str, Any]:
        """The principal's conversations and those shared with them, newest activity first:
        ``{"items": [...], "next": cursor or null}``."""
        if project_id is not None:
            principal.require(project_id, agent_name)
        view = ConversationView(
            user_id=principal.user_id,
            everything=self.policy.single_user,
            projects=None if ALL in principal.projects else frozenset(principal.projects),
            project_id=project_id,
            agent_name=agent_name,
            shared_threads=self.policy.declared,
        )
        found: list[ConversationRecord] = []
        cursor, exhausted = before, False
        for _ in range(_LISTING_ROUNDS):
            rows = await self.store.threads.conversations(view, limit + 1, cursor)
            exhausted = len(rows) <= limit
            for row in rows:
                cursor = row.last_message_id
                if self._listable(principal, row):
                    found.append(row)
            if exhausted or len(found) > limit:
                break
        page = found[:limit]
        if len(found) > limit:
            next_cursor: int | None = page[-1].last_message_id
        else:
            next_cursor = None if exhausted else cursor
        return {"items": [self._item(principal, row) for row in page], "next": next_cursor}

    def _listable(self, principal: Principal, row: ConversationRecord) -> bool:
        key = row.key
        if not principal.can_use(key.project_id, key.agent_name):
            return False
        try:
            self.directory.get(key.project_id, key.agent_name)
        except DariError:
            return False  # an agent no longer configured
        return True

    def _item(self, principal: Principal, row: ConversationRecord) -> dict[str, Any]:
        ownership = Ownership(row.owner, row.shared)
        return {
            **row.key.fields(),
            "title": title_of(row),
            "updated_at": row.updated_at.isoformat(),
            "message_id": row.last_message_id,  # its newest message: the listing's cursor
            "unread": row.unread,
            "shared": self.policy.shared(row.key, ownership),
            "mine": self.policy.single_user or row.owner == principal.user_id,
        }

    # --- managing ----------------------------------------------------------------------------

    async def act(
        self,
        principal: Principal,
        action: str,
        project_id: str,
        agent_name: str,
        thread_id: str,
        title: str | None = None,
    ) -> dict[str, Any]:
        """rename, delete, share or unshare a thread; its state afterwards."""
        key = self.key(principal, project_id, agent_name, thread_id)
        self.directory.get(project_id, agent_name)
        threads = self.store.threads
        ownership = await threads.ownership(key)
        if ownership is None:
            raise LookupFailed(f"no thread {thread_id!r} in {project_id}/{agent_name}")
        user = principal.user_id
        # An admin of the project manages any of its threads (moderation), without reading it.
        if not (self.policy.may_use(key, user, ownership) or principal.admin):
            raise AccessError(
                f"no access to thread {thread_id!r} of {project_id}/{agent_name}",
                code=ErrorCode.FORBIDDEN,
            )
        declared = self.policy.declared_shared(project_id, thread_id)
        owns = ownership.owner == user and not declared  # a declared room is the project's
        if not (self.policy.single_user or owns or principal.admin):
            raise AccessError(
                f"only the owner of thread {thread_id!r} or an admin may {action} it",
                code=ErrorCode.FORBIDDEN,
            )
        if action == "rename":
            await threads.rename(key, title)
        elif action == "delete":
            await self._delete(key)
        else:
            await self._share(key, ownership, share=action == "share")
        after = await threads.ownership(key)
        return {
            **key.fields(),
            "action": action,
            "title": title if action == "rename" else None,
            "shared": self.policy.shared(key, after),
        }

    async def _delete(self, key: ConversationKey) -> None:
        if await self.runner.queue.depth(key):
            raise Unavailable(
                "an answer is running or waiting in this thread; cancel it first",
                code=ErrorCode.BUSY,
            )
        deleted = await self.store.threads.delete_history(key)
        self.redactions.add(key, deleted.request_ids, deleted.last_message_id)
        await self._announce(
            {
                "op": "deleted",
                "key": key.parts(),
                "request_ids": sorted(deleted.request_ids),
                "last": deleted.last_message_id,
            }
        )

    async def _share(self, key: ConversationKey, ownership: Ownership, *, share: bool) -> None:
        if key.scope:
            raise ProtocolError(
                f"thread {key.thread_id!r} is each user's own; a project shares it in its "
                "settings (shared_threads)"
            )
        if self.policy.declared_shared(key.project_id, key.thread_id):
            if share:
                return
            raise ProtocolError(f"thread {key.thread_id!r} is shared by the settings")
        if not share and ownership.owner is None:
            raise ProtocolError(
                f"thread {key.thread_id!r} predates owners: nobody would keep it; delete it"
            )
        await self.store.threads.set_shared(key, share)
        if not share:
            assert ownership.owner is not None
            await self._drop_others(key, ownership.owner)
            await self._announce({"op": "unshared", "key": key.parts(), "owner": ownership.owner})

    async def _drop_others(self, key: ConversationKey, owner: str) -> None:
        """Subscriptions to ``key`` held here by clients of other users end."""
        for client_id in self.hub.conversation_subscribers(key):
            state = self.hub.clients.get(client_id)
            if state is not None and state.user_id != owner:
                await self.hub.leave(client_id, key)

    # --- between nodes -----------------------------------------------------------------------

    async def _announce(self, message: dict[str, Any]) -> None:
        try:
            await self.bus.publish(CHANNEL, orjson.dumps(message))
        except BusError as exc:
            # The store is the authority; other nodes only redact and unsubscribe sooner.
            log.warning("could not tell other nodes about a thread change: %s", exc)

    async def _on_message(self, message: BusMessage) -> None:
        data = orjson.loads(message.payload)
        key = ConversationKey(*data["key"])
        if data["op"] == "deleted":
            self.redactions.add(key, frozenset(data["request_ids"]), data["last"])
        elif data["op"] == "unshared":
            await self._drop_others(key, data["owner"])
