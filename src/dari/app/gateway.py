"""The gateway's parts, built from settings and started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dari.agents.directory import AgentDirectory
from dari.auth.base import Authenticator, NoAuth
from dari.buses import Bus, open_bus
from dari.hub.hub import Hub
from dari.hub.replay import MemoryReplayLog, ReplayLog
from dari.protocol.errors import DariError
from dari.runner.runner import Runner
from dari.settings import Settings
from dari.stores.base import Store, open_store

if TYPE_CHECKING:
    from dari.hub.shared import SharedHub

log = logging.getLogger("dari")
_READY_TIMEOUT_S = 2.0


@runtime_checkable
class _Remote(Protocol):
    """A replay log on a server (Redis): checked by /readyz, closed at stop."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class ConfigError(Exception):
    """Settings that cannot work; the message says how to fix them."""


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


def build_replay(settings: Settings) -> ReplayLog:
    replay = settings.replay
    if replay.url == "memory://":
        return MemoryReplayLog(replay.max_frames, replay.max_age_s)
    if replay.url.startswith(("redis://", "rediss://", "unix://")):
        from dari.hub.replay_redis import RedisReplayLog

        # Shared by every node: a client resumes on any of them with seq going on at +1.
        return RedisReplayLog(replay.url, replay.max_frames, replay.max_age_s)
    raise ConfigError(
        f"replay.url {replay.url!r}: use memory:// (one node) or redis://host:port/db (several)"
    )


def build_shared(replay: ReplayLog, bus: Bus, settings: Settings) -> SharedHub | None:
    """With the replay log in Redis, several nodes may serve the same clients: subscriptions,
    queues and wakes are shared too. One node on ``memory://`` shares nothing."""
    if isinstance(replay, MemoryReplayLog):
        if settings.bus.url != "memory://":
            raise ConfigError(
                "bus.url is Redis but replay.url is memory://: several nodes need "
                "replay.url = redis://… as well (the same Redis is fine)"
            )
        return None
    from dari.hub.replay_redis import RedisReplayLog
    from dari.hub.shared import SharedHub

    if not isinstance(replay, RedisReplayLog):
        return None
    return SharedHub(replay, bus, settings.replay.idle_client_ttl_s)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.bus: Bus = open_bus(settings.bus.url, settings.effective_node_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.authenticator = build_authenticator(settings)
        self.store: Store = open_store(settings.store.url)
        self.replay = build_replay(settings)
        self.hub = Hub(
            self.replay,
            settings.replay.idle_client_ttl_s,
            build_shared(self.replay, self.bus, settings),
            settings.effective_node_id,
        )
        self.directory = AgentDirectory(settings)
        self.runner = Runner(settings, self.hub, self.store, self.directory)
        self._janitor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.start()
        # Redis may be down at start: the node starts anyway (not ready) and connects later.
        await self.bus.start()
        if isinstance(self.replay, _Remote):
            try:
                await self.replay.ping()
            except DariError as exc:
                log.warning("%s; retrying on use, /readyz says not ready meanwhile", exc.message)
        # One node alone on its store: whatever is left streaming was its previous process's.
        mine = self.runner.node_id if self.settings.clustered else None
        interrupted = await self.store.fail_interrupted(mine)
        if interrupted:
            log.warning("marked %d answer(s) interrupted by the last stop as failed", interrupted)
        await self.directory.start()
        await self.runner.start()
        self.bus.on_reconnect(self.hub.wake_all)  # wakes sent while cut off were lost
        self._janitor = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                await self.hub.forget_idle()
            except Exception:
                log.exception("forgetting idle clients failed")

    async def stop(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        await self.runner.close()
        for connection in self.hub.connections():
            await connection.close(1001, "server shutting down")
        await self.directory.aclose()
        await self.bus.close()
        if isinstance(self.replay, _Remote):
            await self.replay.close()
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
        if isinstance(self.replay, _Remote):
            try:
                async with asyncio.timeout(_READY_TIMEOUT_S):
                    await self.replay.ping()
                checks["replay"] = "ok"
            except (DariError, TimeoutError):
                checks["replay"] = "unreachable"
        return checks
