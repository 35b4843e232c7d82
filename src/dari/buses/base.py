"""The bus interface: fire-and-forget messages between the nodes of one deployment.

Delivery is at most once, like Redis pub/sub: a message published while a node is cut off
from the bus never reaches that node. So the bus carries only hints (wake up, cancel) whose
loss the receiver can repair: durable state lives in the replay logs and the store, and a node
that reconnects is told so (``on_reconnect``) and re-reads what it may have missed.

Every message carries its sender's node id; a node never receives its own messages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from dari.protocol.errors import BusError as BusError  # part of the one error tree


@dataclass(frozen=True, slots=True)
class BusMessage:
    channel: str
    payload: bytes
    sender: str  # node id of the publisher


Handler = Callable[[BusMessage], Awaitable[None]]
ReconnectHandler = Callable[[], Awaitable[None]]




class Bus(ABC):
    """Channels of opaque payloads. Handlers run one at a time in the bus's reader task, in
    the order messages arrive, so they must be quick: hand long work to a task of your own."""

    node_id: str
    healthy: bool  # False while the bus cannot deliver (e.g. disconnected from Redis)

    def __init__(self, node_id: str) -> None:
        if not node_id or "\x00" in node_id:
            raise ValueError("a bus node id must be non-empty and free of NUL characters")
        self.node_id = node_id
        self.healthy = False
        self._handlers: dict[str, list[Handler]] = {}
        self._reconnect_handlers: list[ReconnectHandler] = []

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every other node subscribed to ``channel``.

        Raises ``BusError`` when the bus cannot take the message.
        """

    @abstractmethod
    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` for every message other nodes publish on ``channel``.

        Returns once the subscription is active, or at once while the bus is disconnected:
        the subscription is then made on reconnection.
        """

    @abstractmethod
    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        """Stop calling ``handler`` for ``channel`` (the channel is dropped with its last one)."""

    def _remove(self, channel: str, handler: Handler) -> bool:
        """Forget ``handler``; True when ``channel`` has no handler left."""
        handlers = self._handlers.get(channel)
        if handlers is not None and handler in handlers:
            handlers.remove(handler)
        if handlers is not None and not handlers:
            del self._handlers[channel]
            return True
        return False

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        """Call ``handler`` after the bus came back from a disconnection (messages may be lost)."""
        self._reconnect_handlers.append(handler)


def open_bus(url: str, node_id: str) -> Bus:
    """The bus named by ``url``: ``memory://`` or ``redis://``, ``rediss://``, ``unix://``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from dari.buses.memory import MemoryBus

        return MemoryBus(node_id)
    if scheme in ("redis", "rediss", "unix"):
        from dari.buses.redis import RedisBus

        return RedisBus(url, node_id)
    raise ValueError(f"bus.url {url!r}: use memory:// or redis://host:port/db")
