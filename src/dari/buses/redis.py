"""The Redis bus: pub/sub on one dedicated connection per node, reconnected with back-off.

A payload travels as ``<sender node id> NUL <payload>``: receivers drop their own echoes.
The reader task owns the subscriber connection; it pings Redis every ``ping_interval_s`` and
treats three silent intervals as a lost connection, so a frozen Redis or a dead network path
is noticed without waiting for TCP. ``healthy`` is true from the moment every subscription is
confirmed until the connection fails. Publishing uses a separate small pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Iterator
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from dari.buses.base import Bus, BusError, BusMessage, Handler

log = logging.getLogger("dari.bus")

_SEP = b"\x00"
_READY = b"dari-ready"  # the pong that follows our SUBSCRIBEs: they are all in effect


def redis_client(
    url: str,
    name: str,
    *,
    retries: int = 1,
    timeout_s: float = 2.0,
    max_connections: int = 64,
    **options: Any,
) -> Redis:
    """A client that fails fast: ``retries`` immediate retries (one lets a pooled connection
    that died in a Redis restart be replaced), then the error reaches the caller.

    The pool blocks (up to ``timeout_s``) when all its connections are busy, rather than
    failing the command: under a burst, hundreds of answers log frames at once, and redis-py's
    default pool raises "Too many connections" past 100."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        client_name=name,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), retries),
        **options,
    )
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # closing the client closes its pool
    return client


def safe_url(url: str) -> str:
    """``url`` without credentials, for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def reconnect_delays(initial: float = 0.1, maximum: float = 5.0) -> Iterator[float]:
    """Exponential back-off with jitter in [ceiling/2, ceiling], so a node retries soon after
    a blip but a crowd of nodes does not hammer a Redis that is coming back."""
    ceiling = initial
    while True:
        yield random.uniform(ceiling / 2, ceiling)
        ceiling = min(maximum, ceiling * 2)


class RedisBus(Bus):
    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        ping_interval_s: float = 1.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        super().__init__(node_id)
        self.url = url
        self.ping_interval_s = ping_interval_s
        self.connect_timeout_s = connect_timeout_s
        self._publisher = redis_client(url, f"dari-bus-pub:{node_id}", timeout_s=connect_timeout_s)
        # No retries here: the reader decides when and how to reconnect.
        self._listener = redis_client(
            url, f"dari-bus:{node_id}", retries=0, timeout_s=connect_timeout_s
        )
        self._control = f"dari:bus:node:{node_id}"  # always subscribed: keeps pub/sub mode
        self._pubsub: PubSub | None = None  # set while a session's subscriptions are made
        self._sent: set[str] = set()  # channels subscribed on the current connection
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._ready = asyncio.Event()
        self._sessions = 0  # healthy sessions so far; after the first, a new one is a reconnect
        self._reader: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._supervise(), name=f"bus-reader-{self.node_id}")
        self._reader.add_done_callback(self._reader_ended)
        # A node may start while Redis is down (it serves its own clients meanwhile), so wait
        # only briefly; /readyz says not ready until the reader connects.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.connect_timeout_s):
                await self._ready.wait()
        if not self.healthy:
            log.warning("bus: Redis at %s unreachable; retrying in background", safe_url(self.url))

    async def close(self) -> None:
        self.healthy = False
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for task in list(self._side_tasks):
            task.cancel()
        await self._publisher.aclose()
        await self._listener.aclose()

    def _reader_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("bus reader stopped: %r; the bus is down", task.exception())
            self.healthy = False

    # --- publish and subscribe ---------------------------------------------------------------

    async def publish(self, channel: str, payload: bytes) -> None:
        try:
            await self._publisher.publish(channel, self.node_id.encode() + _SEP + payload)
        except (RedisError, OSError) as exc:
            raise BusError(f"cannot publish on {channel}: {exc}") from exc

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)
        pubsub = self._pubsub
        if pubsub is None or channel in self._sent:
            return  # the reader subscribes it when it (re)connects, or already has
        self._sent.add(channel)
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = confirmed
        try:
            await pubsub.subscribe(channel)
            async with asyncio.timeout(self.connect_timeout_s):
                await confirmed
        except (RedisError, OSError, TimeoutError, RuntimeError) as exc:
            # The reader notices the broken connection and subscribes again on reconnection.
            # (RuntimeError: redis-py reconnecting the connection for two callers at once.)
            log.info("bus: subscribing to %s not confirmed yet (%s)", channel, exc)
        finally:
            self._confirmations.pop(channel, None)

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        if not self._remove(channel, handler) or channel not in self._sent:
            return
        self._sent.discard(channel)
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                await pubsub.unsubscribe(channel)
            except (RedisError, OSError, RuntimeError) as exc:
                # The reader reconnects and subscribes only the channels still wanted.
                # (RuntimeError: redis-py reconnecting the connection for two callers at once.)
                log.info("bus: unsubscribing from %s failed (%s)", channel, exc)

    # --- the reader --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        delays = reconnect_delays()
        while True:
            sessions = self._sessions
            try:
                await self._session()
            except (RedisError, OSError) as exc:
                if self.healthy or sessions == 0:
                    log.warning("bus: Redis connection lost (%s); reconnecting", exc)
            except Exception:
                log.exception("bus reader failed; restarting it")
            self.healthy = False
            self._ready.clear()
            if self._sessions > sessions:
                delays = reconnect_delays()  # it worked for a while: start again from short
            await asyncio.sleep(next(delays))

    async def _session(self) -> None:
        pubsub = self._listener.pubsub()
        try:
            sent: set[str] = set()
            wanted = {self._control, *self._handlers}
            while wanted - sent:  # subscribe() calls may add channels meanwhile
                missing = wanted - sent
                await pubsub.subscribe(*missing)
                sent |= missing
                wanted = {self._control, *self._handlers}
            self._sent, self._pubsub = sent, pubsub
            await pubsub.ping(_READY)  # its pong comes after every subscription took effect
            await self._listen(pubsub)
        finally:
            self._pubsub = None
            self._sent = set()
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_heard = last_ping = loop.time()
        while True:
            message = await pubsub.get_message(timeout=self.ping_interval_s)
            now = loop.time()
            if message is not None:
                last_heard = now
                await self._handle(message)
            elif now - last_heard > 3 * self.ping_interval_s:
                raise ConnectionError("Redis stopped answering pings")
            if now - last_ping >= self.ping_interval_s:
                await pubsub.ping()
                last_ping = now

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            await self._deliver(message["channel"].decode(), message["data"])
        elif kind == "subscribe":
            confirmed = self._confirmations.get(message["channel"].decode())
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif kind == "pong" and message["data"] == _READY:
            self.healthy = True
            self._ready.set()
            self._sessions += 1
            if self._sessions > 1:
                log.info("bus: reconnected to Redis at %s", safe_url(self.url))
                for handler in self._reconnect_handlers:
                    self._spawn(handler())

    async def _deliver(self, channel: str, data: bytes) -> None:
        sender, sep, payload = data.partition(_SEP)
        if not sep:
            log.warning("bus: dropped a message on %s without a sender", channel)
            return
        node = sender.decode(errors="replace")
        if node == self.node_id:
            return  # our own echo
        message = BusMessage(channel, payload, node)
        for handler in tuple(self._handlers.get(channel, ())):
            try:
                await handler(message)
            except Exception:
                log.exception("bus handler for %s failed", channel)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("bus reconnect handler failed")

        task = asyncio.create_task(run())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
