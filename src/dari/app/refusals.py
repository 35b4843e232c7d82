"""Refused connections: logged at info (never a token or query string) and counted by code.

A refusal is the client's doing or a guard working, not a server error; but an operator must
see them: a wave of 4401s is an expired signing key, a wave of 503s a connection flood.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter
from starlette.websockets import WebSocket, WebSocketState

log = logging.getLogger("dari.refusals")

REFUSALS = Counter(
    "dari_refusals_total",
    "Connections refused or closed by a guard: WebSocket close code (4401, 4403, 1008), or "
    "HTTP status (403 for an upgrade refused before accept, 503 past a connection cap, 408 "
    "for a request whose headers did not arrive in time)",
    ["code"],
)


def note_refusal(code: int, reason: str, path: str, peer: str | None) -> None:
    REFUSALS.labels(str(code)).inc()
    log.info("refused %s from %s: %d %s", path, peer or "unknown", code, reason)


def note_socket_refusal(websocket: WebSocket, code: int, reason: str) -> None:
    """Count and log a refusal of ``websocket`` (closed with ``code``, or 403 before accept)."""
    accepted = websocket.application_state != WebSocketState.CONNECTING
    peer = websocket.client.host if websocket.client else None
    # The path only: the query string may carry ?token=.
    note_refusal(code if accepted else 403, reason, websocket.url.path, peer)


async def refuse(websocket: WebSocket, code: int, reason: str) -> None:
    """Close ``websocket`` with ``code``. Before it is accepted, the client gets HTTP 403."""
    note_socket_refusal(websocket, code, reason)
    await websocket.close(code=code, reason=reason)
