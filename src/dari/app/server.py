"""Running the app on uvicorn with the settings' network options (used by the CLI and tests).

On SIGTERM (or Ctrl+C) uvicorn stops listening, closes every WebSocket with 1012 at once and
cancels what is left after ``timeout_graceful_shutdown``; only then does the app's lifespan end.
``DrainingServer`` first runs the gateway's drain (``Gateway.drain``: not ready, answers given
``server.drain_s`` to finish, leases let go, sockets flushed and closed with 1012) while
everything still listens, and lets uvicorn's own shutdown begin after it. A second signal cuts
the drain short.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from dari.app.factory import create_app
from dari.app.gateway import Gateway
from dari.app.http_guard import guarded_http_protocol
from dari.settings import Settings
from dari.transport import guarded_protocol

log = logging.getLogger("dari")
_AFTER_DRAIN_S = 5


def uvicorn_config(
    settings: Settings, app: FastAPI | None = None, **overrides: object
) -> uvicorn.Config:
    ws: object = settings.server.ws_backend
    if ws in ("auto", "websockets-sansio"):
        # The same protocol, plus handshake guards (unparseable requests, handshake timeout);
        # uvicorn's own choice where that protocol is not available (see dari.transport).
        ws = guarded_protocol(settings.server.handshake_timeout_s) or ws
    server = settings.server
    options: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        # Header timeout and connection caps, before uvicorn's HTTP layer sees a request.
        "http": guarded_http_protocol(
            server.header_timeout_s, server.max_connections, server.max_connections_per_ip
        ),
        "ws": ws,
        # The WebSocket layer itself refuses frames and fragmented messages over the limit (1009).
        "ws_max_size": settings.limits.hard_max_bytes,
        "ws_per_message_deflate": server.per_message_deflate,
        # Protocol-level pings; a peer that does not answer within one more interval is dropped.
        "ws_ping_interval": settings.heartbeat_s,
        "ws_ping_timeout": settings.heartbeat_s,
        "timeout_keep_alive": 5,
        # The drain runs before uvicorn's shutdown begins; this bounds what is left after it
        # (and, where no drain ran, gives HTTP streams as long as a drain would).
        "timeout_graceful_shutdown": math.ceil(settings.server.drain_s) + _AFTER_DRAIN_S,
        "lifespan": "on",
        "log_level": "info",
        "access_log": False,
    }
    options.update(overrides)
    return uvicorn.Config(app or create_app(settings), **options)  # type: ignore[arg-type]


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining the gateway on the first SIGTERM/SIGINT before it stops."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._loop = asyncio.get_running_loop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the loop: hand the work to the loop.
        if self._loop is None or not self.started or self.should_exit:
            super().handle_exit(sig, frame)  # starting up, or stopping already: uvicorn's way
            return
        self._captured_signals.append(sig)  # uvicorn re-raises it once stopped
        self._loop.call_soon_threadsafe(self._on_signal)

    def _on_signal(self) -> None:
        if self._drain is None:
            self._drain = asyncio.create_task(self._run_drain(), name="dari: drain")
        else:
            log.warning("second signal: cutting the drain short")
            self._hurry.set()

    async def _run_drain(self) -> None:
        try:
            await self.gateway.drain(self._hurry)
        except Exception:
            log.exception("draining failed; stopping now")
        finally:
            self.should_exit = True


def serve(settings: Settings) -> None:
    app = create_app(settings)
    sys.setswitchinterval(settings.server.switch_interval_ms / 1000)
    DrainingServer(uvicorn_config(settings, app), app.state.gateway).run()
