"""The gateway's parts, built from settings and started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from dari.agents.directory import AgentDirectory
from dari.auth.base import Authenticator, NoAuth
from dari.buses import Bus, open_bus
from dari.conversations.service import Conversations
from dari.hub.connection import Connection
from dari.hub.delivery import Delivery
from dari.hub.hub import Hub
from dari.protocol.errors import CloseCode, ConfigError, DariError
from dari.runner.queue import ConversationQueue
from dari.runner.quota import UserQuotas
from dari.runner.runner import Runner
from dari.settings import Settings
from dari.stores.base import Store, open_store
from dari.supervise import dump_tasks_on_signal, supervise

__all__ = ["ConfigError", "Gateway"]

log = logging.getLogger("dari")
_READY_TIMEOUT_S = 2.0
_FLUSH_TIMEOUT_S = 2.0  # a drain's wait for sockets to be sent what their logs hold
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def build_authenticator(settings: Settings) -> Authenticator:
    if settings.auth.mode == "none":
        if not settings.server.is_loopback():
            raise ConfigError(
                f"refusing to serve {settings.server.host} with auth.mode = 'none': anyone could "
                'connect. Turn auth on ([auth] mode = "jwt" with a secret or public key, or '
                "DARI_AUTH__MODE=jwt), or bind to 127.0.0.1."
            )
        return NoAuth()
    from dari.auth.jwt import JwtAuthenticator

    return JwtAuthenticator(settings.auth)


# The one place where one node and several part ways: every other module sees the interfaces.


def build_delivery(settings: Settings, bus: Bus) -> Delivery:
    """``replay.url`` picks the engine: ``memory://`` (one node) or Redis (several nodes,
    which then also need the Redis bus to wake and cancel each other)."""
    replay = settings.replay
    if replay.url == "memory://":
        if settings.bus.url != "memory://":
            raise ConfigError(
                "bus.url is Redis but replay.url is memory://: several nodes need "
                "replay.url = redis://… as well (the same Redis is fine)"
            )
        from dari.hub.delivery_memory import MemoryDelivery
        from dari.hub.replay import MemoryReplayLog

        return MemoryDelivery(
            MemoryReplayLog(
                replay.max_frames,
                replay.max_age_s,
                replay.max_client_bytes,
                replay.max_total_bytes,
            )
        )
    if replay.url.startswith(_REDIS_SCHEMES):
        if not settings.bus.url.startswith(_REDIS_SCHEMES):
            raise ConfigError(
                "replay.url is Redis but bus.url is memory://: nodes could not wake or cancel "
                "each other. Set bus.url = redis://… too (the same Redis is fine)"
            )
        from dari.hub.delivery_redis import RedisDelivery
        from dari.hub.replay_redis import RedisReplayLog

        # Shared by every node: a client resumes on any of them with seq going on at +1.
        log_ = RedisReplayLog(
            replay.url,
            replay.max_frames,
            replay.max_age_s,
            max_client_bytes=replay.max_client_bytes,
        )
        return RedisDelivery(log_, bus, replay.idle_client_ttl_s)
    raise ConfigError(
        f"replay.url {replay.url!r}: use memory:// (one node) or redis://host:port/db (several)"
    )


def queue_factory(delivery: Delivery) -> Callable[[Runner], ConversationQueue]:
    """The conversation queue of the engine ``build_delivery`` chose."""
    from dari.hub.delivery_redis import RedisDelivery

    if isinstance(delivery, RedisDelivery):
        from dari.runner.queue_redis import RedisQueue

        return lambda runner: RedisQueue(runner, delivery)
    from dari.runner.queue_memory import MemoryQueue

    return MemoryQueue


def build_quotas(settings: Settings, delivery: Delivery) -> UserQuotas:
    """Per-user fair use of the engine ``build_delivery`` chose: in this process's memory on
    one node, in Redis (shared by the nodes) on several."""
    from dari.hub.delivery_redis import RedisDelivery

    if isinstance(delivery, RedisDelivery):
        from dari.runner.quota_redis import RedisQuotas

        return RedisQuotas(settings.limits, delivery.redis, delivery.prefix)
    from dari.runner.quota_memory import MemoryQuotas

    return MemoryQuotas(settings.limits)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.bus: Bus = open_bus(settings.bus.url, settings.effective_node_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.authenticator = build_authenticator(settings)
        self.store: Store = open_store(settings.store.url)
        self.delivery = build_delivery(settings, self.bus)
        self.replay = self.delivery.replay
        self.hub = Hub(self.delivery, settings.replay.idle_client_ttl_s)
        self.directory = AgentDirectory(settings)
        self.quotas = build_quotas(settings, self.delivery)  # per user, over every node
        self.runner = Runner(
            settings,
            self.hub,
            self.store,
            self.directory,
            queue_factory(self.delivery),
            self.quotas,
        )
        # Which conversation a user's names mean, and who may use it (conversations/).
        self.conversations = Conversations(
            settings, self.store, self.hub, self.bus, self.runner, self.directory
        )
        self.runner.audience = self.conversations.audience  # reports reach their owner
        self._janitor: asyncio.Task[None] | None = None
        self.draining = False  # SIGTERM came: /readyz answers 503 (see drain)

    async def start(self) -> None:
        await self.store.start()
        # Redis may be down at start: the node starts anyway (not ready) and connects later.
        await self.bus.start()
        await self.delivery.start()  # refuses a node id that a live node already uses
        # One node alone on its store: whatever is left streaming was its previous process's.
        mine = self.runner.node_id if self.settings.clustered else None
        interrupted = await self.store.fail_interrupted(mine)
        if interrupted:
            log.warning("marked %d answer(s) interrupted by the last stop as failed", interrupted)
        await self.directory.start()
        await self.runner.start()
        await self.conversations.start()
        self.bus.on_reconnect(self.hub.wake_all)  # wakes sent while cut off were lost
        self._janitor = supervise(self._sweep(), "forgetting idle clients")
        dump_tasks_on_signal()  # kill -USR1: what every task waits on, in the log

    async def _sweep(self) -> None:
        # Often enough that a client that left is forgotten soon after its frames expire.
        interval = min(60.0, max(0.5, self.settings.replay.max_age_s / 6))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.hub.forget_idle()
            except Exception:
                log.exception("forgetting idle clients failed")

    async def drain(self, hurry: asyncio.Event) -> None:
        """On SIGTERM, before the server stops: not ready at once; answers running here get
        ``server.drain_s`` (until ``hurry`` is set) to finish, then are cut and saved; leases
        are let go; each socket is sent what its log holds, then closed with 1012 so that its
        client reconnects elsewhere and resumes."""
        self.draining = True
        log.info("draining: up to %g s for the answers running here", self.settings.server.drain_s)
        await self.runner.drain(self.settings.server.drain_s, hurry)
        connections = self.hub.connections()
        if connections:
            await asyncio.wait(
                [asyncio.ensure_future(self._flush(c)) for c in connections],
                timeout=_FLUSH_TIMEOUT_S,
            )
        for connection in self.hub.connections():
            await connection.close(CloseCode.SERVICE_RESTART, "the gateway is restarting")
        log.info("drained; stopping")

    async def _flush(self, connection: Connection) -> None:
        if type(connection) is not Connection:
            return  # an HTTP stream's sink (app/streams.py): its endpoint reads the log itself
        head = (await self.replay.position(connection.client_id)).head
        await connection.flush(head, _FLUSH_TIMEOUT_S)

    async def stop(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        await self.runner.close()
        for connection in self.hub.connections():
            await connection.close(1001, "server shutting down")
        await self.directory.aclose()
        await self.delivery.close()
        await self.bus.close()
        await self.store.close()

    async def ready(self) -> dict[str, str]:
        """Each shared engine's state, ``"ok"`` or why not; the node is ready when all are ok.

        Checked on every call, so a node turns ready again by itself when Redis comes back.
        """
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                await self.store.ping()
            checks["store"] = "ok"
        except Exception:
            checks["store"] = "unreachable"
        checks["bus"] = "ok" if self.bus.healthy else "unreachable"
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                await self.delivery.ping()
            checks["replay"] = "ok"
        except (DariError, TimeoutError):
            checks["replay"] = "unreachable"
        return checks
