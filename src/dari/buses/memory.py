"""The in-process bus: nodes are ``MemoryBus`` objects sharing one ``MemoryBroker``.

A gateway on ``memory://`` gets a broker of its own, so it hears nothing (it is the only
node). Tests give several buses one broker to stand for several nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dari.buses.base import Bus, BusMessage, Handler

log = logging.getLogger("dari.bus")


class MemoryBroker:
    def __init__(self) -> None:
        self.buses: list[MemoryBus] = []


class MemoryBus(Bus):
    def __init__(
        self, node_id: str, broker: MemoryBroker | None = None, max_pending: int = 10_000
    ) -> None:
        super().__init__(node_id)
        self.broker = broker or MemoryBroker()
        # Bounded like a Redis subscriber's output buffer; past it messages are dropped.
        self._inbox: asyncio.Queue[BusMessage] = asyncio.Queue(max_pending)
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.broker.buses.append(self)
        self._reader = asyncio.create_task(self._read(), name=f"bus-reader-{self.node_id}")
        self.healthy = True

    async def close(self) -> None:
        self.healthy = False
        if self in self.broker.buses:
            self.broker.buses.remove(self)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def publish(self, channel: str, payload: bytes) -> None:
        message = BusMessage(channel, payload, self.node_id)
        for bus in self.broker.buses:
            if bus.node_id != self.node_id and channel in bus._handlers:
                bus._offer(message)

    def _offer(self, message: BusMessage) -> None:
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            log.warning(
                "bus %s: inbox full, dropped a message on %s", self.node_id, message.channel
            )

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        self._remove(channel, handler)

    async def _read(self) -> None:
        while True:
            message = await self._inbox.get()
            for handler in tuple(self._handlers.get(message.channel, ())):
                try:
                    await handler(message)
                except Exception:
                    log.exception("bus handler for %s failed", message.channel)
