"""The registry of clients: who is attached where, who listens to what, and delivery.

A client (a ``client_id``) outlives its sockets: its subscriptions and its replay log stay
while it reconnects. Delivering a frame to a client means appending it to the client's log and
waking the client's writer. What may cross nodes (shared subscriptions, logs, wakes) goes
through the ``Delivery`` chosen from the settings (``hub/delivery.py``); the hub itself is the
same on one node and on many.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from dari.auth.base import Principal
from dari.hub.clients import Clients, ClientState
from dari.hub.connection import Connection
from dari.hub.delivery import Delivery
from dari.protocol.errors import AccessError, ErrorCode
from dari.protocol.frames import ConversationKey, Frame

__all__ = ["Audience", "ClientState", "Hub", "StaleConnection"]

K = TypeVar("K")
# Keeps those of the given client ids a frame may go to (see publish_project).
Audience = Callable[[list[str]], Awaitable[list[str]]]


class StaleConnection(Exception):
    """A newer connection of the same client_id is already attached."""


class Hub:
    def __init__(self, delivery: Delivery, idle_client_ttl_s: float = 3600.0) -> None:
        self.delivery = delivery
        self.replay = delivery.replay
        self.idle_client_ttl_s = idle_client_ttl_s
        self.clients: Clients = {}
        delivery.bind(self.clients)
        self._generation = 0
        self._open_per_user: Counter[str] = Counter()
        self._conversation_subs: dict[ConversationKey, set[str]] = {}
        self._project_subs: dict[str, set[str]] = {}

    # --- clients and sockets ---------------------------------------------------------------

    def client(
        self, client_id: str, principal: Principal, *, ephemeral: bool = False
    ) -> ClientState:
        """The client's state, created on first use; its principal is updated to ``principal``.

        Subscriptions the new principal may no longer use are dropped (a narrower token).
        """
        state = self.clients.get(client_id)
        if state is None:
            state = ClientState(client_id, principal.user_id, principal, ephemeral=ephemeral)
            self.clients[client_id] = state
            return state
        if state.user_id != principal.user_id:
            raise AccessError("client_id belongs to another user", code=ErrorCode.FORBIDDEN)
        state.principal = principal
        for key in [
            k for k in state.conversations if not principal.can_use(k.project_id, k.agent_name)
        ]:
            self.unsubscribe(client_id, key)
        for project in [p for p in state.projects if not principal.can_see_project(p)]:
            self.unsubscribe_project(client_id, project)
        return state

    async def restore(self, state: ClientState) -> None:
        """Take up the subscriptions the client made on any node, as far as its principal
        still allows."""
        client_id, principal = state.client_id, state.principal
        conversations, projects = await self.delivery.subscriptions(client_id)
        for project in projects:
            if principal.can_see_project(project):
                self.subscribe_project(client_id, project)
            else:
                await self.delivery.unsubscribe_project(client_id, project)
        for key in conversations:
            if principal.can_use(key.project_id, key.agent_name):
                self.subscribe(client_id, key)
            else:
                await self.delivery.unsubscribe(client_id, key)

    async def watch(self, connection: Connection) -> None:
        """Frames logged on any node for this client wake ``connection``'s writer here."""
        await self.delivery.attached(connection.client_id)

    async def wake_all(self) -> None:
        """Re-read every attached client's log (wakes may have been lost)."""
        for connection in self.connections():
            connection.notify()

    def next_generation(self) -> int:
        """A number for a handshake as it arrives; later handshakes get larger numbers, on this
        node and, as far as the nodes' clocks agree, across nodes (nanoseconds since the epoch):
        the socket that arrived last is the client's."""
        self._generation = max(self._generation + 1, time.time_ns())
        return self._generation

    def attach(self, connection: Connection) -> Connection | None:
        """Make ``connection`` the client's socket; return the one it replaces, if any.

        Handshakes take turns at awaits, so an older one (a socket the client already gave up
        on) can reach this point after a newer one: it must not displace the newer socket.
        Raises :class:`StaleConnection` then.
        """
        state = self.clients[connection.client_id]
        previous = state.connection
        if previous is not None and previous.generation > connection.generation:
            raise StaleConnection(connection.client_id)
        state.connection = connection
        state.last_seen = time.monotonic()
        if previous is None:
            self._open_per_user[state.user_id] += 1
        return previous

    def open_connections(self, user_id: str) -> int:
        """Sockets of ``user_id`` attached to this node."""
        return self._open_per_user[user_id]

    async def detach(self, connection: Connection) -> None:
        state = self.clients.get(connection.client_id)
        if state is None or state.connection is not connection:
            return
        state.connection = None
        state.last_seen = time.monotonic()
        self._open_per_user[state.user_id] -= 1
        if self._open_per_user[state.user_id] <= 0:
            del self._open_per_user[state.user_id]
        await self.delivery.detached(connection.client_id)
        if state.ephemeral:
            await self.forget(connection.client_id)

    async def forget(self, client_id: str) -> None:
        state = self.clients.pop(client_id, None)
        if state is not None:
            for key in state.conversations:
                self._discard(self._conversation_subs, key, client_id)
            for project in state.projects:
                self._discard(self._project_subs, project, client_id)
        # Another node may serve this client now: its shared state goes only if not.
        await self.delivery.forget(client_id, force=state is not None and state.ephemeral)

    async def forget_idle(self) -> int:
        """Drop clients absent for longer than the idle TTL (their logs have expired anyway)."""
        horizon = time.monotonic() - self.idle_client_ttl_s
        idle = [
            cid
            for cid, state in self.clients.items()
            if state.connection is None and state.last_seen < horizon
        ]
        for client_id in idle:
            await self.forget(client_id)
        await self.delivery.refresh(
            [s.client_id for s in self.clients.values() if s.connection is not None]
        )
        return len(idle)

    def connections(self) -> list[Connection]:
        return [s.connection for s in self.clients.values() if s.connection is not None]

    # --- subscriptions ---------------------------------------------------------------------

    def subscribe(self, client_id: str, key: ConversationKey) -> None:
        self.clients[client_id].conversations.add(key)
        self._conversation_subs.setdefault(key, set()).add(client_id)

    def unsubscribe(self, client_id: str, key: ConversationKey) -> None:
        self.clients[client_id].conversations.discard(key)
        self._discard(self._conversation_subs, key, client_id)

    def subscribe_project(self, client_id: str, project_id: str) -> None:
        self.clients[client_id].projects.add(project_id)
        self._project_subs.setdefault(project_id, set()).add(client_id)

    def unsubscribe_project(self, client_id: str, project_id: str) -> None:
        state = self.clients[client_id]
        state.projects.discard(project_id)
        self._discard(self._project_subs, project_id, client_id)
        for key in [k for k in state.conversations if k.project_id == project_id]:
            self.unsubscribe(client_id, key)

    async def join(self, client_id: str, key: ConversationKey) -> None:
        """Subscribe, on every node."""
        self.subscribe(client_id, key)
        await self.delivery.subscribe(client_id, key)

    async def leave(self, client_id: str, key: ConversationKey) -> None:
        self.unsubscribe(client_id, key)
        await self.delivery.unsubscribe(client_id, key)

    async def join_project(self, client_id: str, project_id: str) -> None:
        self.subscribe_project(client_id, project_id)
        await self.delivery.subscribe_project(client_id, project_id)

    async def leave_project(self, client_id: str, project_id: str) -> None:
        keys = [k for k in self.clients[client_id].conversations if k.project_id == project_id]
        self.unsubscribe_project(client_id, project_id)
        await self.delivery.unsubscribe_project(client_id, project_id)
        for key in keys:
            await self.delivery.unsubscribe(client_id, key)

    @staticmethod
    def _discard(index: dict[K, set[str]], key: K, client_id: str) -> None:
        members = index.get(key)
        if members is not None:
            members.discard(client_id)
            if not members:
                del index[key]

    def conversation_subscribers(self, key: ConversationKey) -> set[str]:
        return set(self._conversation_subs.get(key, ()))

    def project_subscribers(self, project_id: str) -> set[str]:
        """Clients here subscribed to the project or to any conversation in it.

        Whether each may see a given frame is decided by ``publish_project``.
        """
        members = set(self._project_subs.get(project_id, ()))
        for key, subscribers in self._conversation_subs.items():
            if key.project_id == project_id:
                members |= subscribers
        return members & self.clients.keys()

    # --- delivery --------------------------------------------------------------------------

    async def send(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        """Log ``frame`` for one client and wake its writer; returns the frame's seq."""
        return await self.delivery.send(client_id, frame, merge_key)

    async def send_many(
        self, client_ids: Iterable[str], frame: Frame, merge_key: str | None = None
    ) -> int:
        return await self.delivery.send_many(tuple(client_ids), frame, merge_key)

    async def publish(
        self,
        key: ConversationKey,
        frame: Frame,
        merge_key: str | None = None,
        gather_s: float = 0.0,
    ) -> int:
        """Log a conversation's ``frame`` for its subscribers and wake their writers;
        ``gather_s``: an answer's piece whose sending may wait that long for more pieces
        (see Connection.notify)."""
        local = self._conversation_subs.get(key, ())
        return await self.delivery.publish(key, local, frame, merge_key, gather_s)

    async def snapshots(self, client_id: str, keys: Iterable[ConversationKey]) -> int | None:
        """Log for the client a snapshot of each answer running in ``keys``, wherever it
        runs; live pieces follow."""
        return await self.delivery.snapshots(client_id, keys)

    async def publish_project(
        self, project_id: str, frame: Frame, audience: Audience | None = None
    ) -> int:
        """Log ``frame`` for the clients subscribed to the project (or one of its
        conversations) who may see it; ``audience`` narrows them (a private conversation's
        report: its owner's clients)."""
        # The frame names its project, so can_see_frame checks project (and agent) access.
        frame.setdefault("project_id", project_id)
        clients = self.clients
        subscribers = [
            cid
            for cid in self.project_subscribers(project_id)
            if clients[cid].principal.can_see_frame(frame)
        ]
        # Clients held by other nodes are filtered there, when their writer renders.
        elsewhere = await self.delivery.project_subscribers(project_id)
        subscribers.extend(cid for cid in elsewhere if cid not in clients)
        if audience is not None:
            subscribers = await audience(subscribers)
        return await self.send_many(subscribers, frame)

    async def broadcast(self, frame: Frame, project_id: str | None = None) -> int:
        if project_id is not None:
            return await self.publish_project(project_id, frame)
        everyone = set(self.clients) | await self.delivery.all_clients()
        return await self.send_many(everyone, frame)
