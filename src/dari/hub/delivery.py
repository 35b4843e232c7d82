"""The delivery interface: how a frame reaches clients' logs and the sockets that read them.

The hub keeps this node's registry (clients, their principals and sockets, local
subscription indexes) and hands everything that may cross nodes to a ``Delivery``, chosen
once from the settings (``build_delivery``):

- ``MemoryDelivery`` (``delivery_memory.py``): one node. Logs live in process memory, appends
  never await, and a running answer's progress is the runner's own record of it.
- ``RedisDelivery`` (``delivery_redis.py``): several nodes. Logs, subscriptions, socket
  ownership and answer progress live in Redis; the node holding a socket is woken over the bus.

Nothing outside the two implementations and the factory knows which one is in use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable

from dari.hub.clients import Clients
from dari.hub.replay import ReplayLog
from dari.protocol.frames import ConversationKey, Frame
from dari.runner.jobs import Progress


class Delivery(ABC):
    replay: ReplayLog

    def __init__(self) -> None:
        self.clients: Clients = {}

    def bind(self, clients: Clients) -> None:
        """Share the hub's registry: deliveries notify the sockets attached here."""
        self.clients = clients

    # --- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None:
        """Connect to what the delivery needs (may fail softly: ``ping`` tells readiness)."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise a ``DariError`` when frames cannot be delivered now."""

    @abstractmethod
    async def close(self) -> None: ...

    # --- subscriptions recorded beyond this node -------------------------------------------

    @abstractmethod
    async def subscriptions(self, client_id: str) -> tuple[set[ConversationKey], set[str]]:
        """The conversations and projects the client subscribed to on any node."""

    @abstractmethod
    async def subscribe(self, client_id: str, key: ConversationKey) -> None: ...

    @abstractmethod
    async def unsubscribe(self, client_id: str, key: ConversationKey) -> None: ...

    @abstractmethod
    async def subscribe_project(self, client_id: str, project_id: str) -> None: ...

    @abstractmethod
    async def unsubscribe_project(self, client_id: str, project_id: str) -> None: ...

    @abstractmethod
    async def project_subscribers(self, project_id: str) -> set[str]:
        """Clients subscribed to the project (or one of its conversations) on other nodes."""

    @abstractmethod
    async def all_clients(self) -> set[str]:
        """Every client known on any node (broadcasts)."""

    # --- sockets ---------------------------------------------------------------------------

    @abstractmethod
    async def attached(self, client_id: str) -> None:
        """A socket of ``client_id`` was attached here: frames logged anywhere wake it."""

    @abstractmethod
    async def detached(self, client_id: str) -> None: ...

    @abstractmethod
    async def refresh(self, attached: Iterable[str]) -> None:
        """The clients whose sockets this node holds are still around (run periodically)."""

    @abstractmethod
    async def forget(self, client_id: str, *, force: bool = False) -> None:
        """Drop the client's log and shared state (``force``: even if another node may serve
        it; for socket-bound ids nobody can come back with)."""

    # --- delivery --------------------------------------------------------------------------

    @abstractmethod
    async def send(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        """Log ``frame`` for one client and wake its writer; returns the frame's seq."""

    @abstractmethod
    async def send_many(
        self, client_ids: Collection[str], frame: Frame, merge_key: str | None = None
    ) -> int:
        """Log ``frame`` for each client (each numbers its own copy); returns how many."""

    @abstractmethod
    async def publish(
        self,
        key: ConversationKey,
        local: Collection[str],
        frame: Frame,
        merge_key: str | None = None,
        gather_s: float = 0.0,
    ) -> int:
        """Log a conversation's ``frame`` for its subscribers (``local``: those known here);
        ``gather_s`` is passed to the writers this node wakes (Connection.notify)."""

    # --- answers in progress -----------------------------------------------------------------

    @abstractmethod
    async def answer_began(self, progress: Progress) -> None:
        """An answer started on this node: snapshots show its progress from now on."""

    @abstractmethod
    async def answer_ended(self, progress: Progress) -> None:
        """The answer ended and was saved: no snapshot shows it any more."""

    @abstractmethod
    async def snapshots(self, client_id: str, keys: Iterable[ConversationKey]) -> int | None:
        """Log for the client a ``snapshot`` of each answer running in ``keys`` (anywhere);
        pieces logged after it follow it in the client's log, none falls in between. Returns
        the seq of the first snapshot logged (None: no answer was running)."""
