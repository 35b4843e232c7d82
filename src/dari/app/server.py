"""Running the app on uvicorn with the settings' network options (used by the CLI and tests)."""

from __future__ import annotations

import uvicorn

from dari.app.factory import create_app
from dari.app.http_guard import guarded_http_protocol
from dari.settings import Settings
from dari.transport import guarded_protocol


def uvicorn_config(settings: Settings, **overrides: object) -> uvicorn.Config:
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
        "timeout_graceful_shutdown": 10,
        "lifespan": "on",
        "log_level": "info",
        "access_log": False,
    }
    options.update(overrides)
    return uvicorn.Config(create_app(settings), **options)  # type: ignore[arg-type]


def serve(settings: Settings) -> None:
    uvicorn.Server(uvicorn_config(settings)).run()
