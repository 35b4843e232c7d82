"""Everything that knows the ASGI server dari runs on (uvicorn), in one place.

The app itself speaks plain ASGI and works on any server. On uvicorn's websockets-sansio
protocol (the default, and the version range ``pyproject.toml`` declares is the one the tests
run), three things go below ASGI, each with a tested fallback to the plain path:

- ``DirectSocket``: a socket's writer frames every ready message with the protocol's own
  ``websockets`` connection and hands them to the transport in one write, without awaiting.
  For another server, or a uvicorn whose protocol lacks the attributes used, ``for_send``
  returns None and the writer awaits the ASGI ``send`` instead.
- ``ExposeServerSend``: records the server's own ``send`` in the scope, so data frames skip
  Starlette's per-frame state checks; accept and close still go through Starlette.
- ``guarded_protocol``: the websockets-sansio protocol with handshake guards (an upgrade the
  WebSocket layer cannot parse gets its 431/414 answer; a handshake not done within
  ``server.handshake_timeout_s`` is closed). None when that protocol is not available: the
  server then runs uvicorn's own choice, without the guards.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # a uvicorn without it: plain ASGI everywhere
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

SERVER_SEND = "dari.server_send"  # the scope key ExposeServerSend fills
# What DirectSocket touches on the protocol object; without any of them it is not used.
_PROTOCOL_ATTRIBUTES = ("conn", "transport", "writable", "disconnected", "close_sent")


# --- direct writes --------------------------------------------------------------------------


class DirectSocket:
    __slots__ = ("_conn", "_protocol", "_transport", "_writable")

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._conn = protocol.conn
        self._transport: asyncio.Transport = protocol.transport
        self._writable: asyncio.Event = protocol.writable

    @staticmethod
    def for_send(send: Callable[..., Any] | None) -> DirectSocket | None:
        """The direct path behind an ASGI ``send``, if the server is one it knows."""
        if WebSocketsSansIOProtocol is None:
            return None
        protocol = getattr(send, "__self__", None)
        if not isinstance(protocol, WebSocketsSansIOProtocol):
            return None
        if not all(hasattr(protocol, name) for name in _PROTOCOL_ATTRIBUTES):
            return None
        conn = protocol.conn
        if not (hasattr(conn, "send_text") and hasattr(conn, "data_to_send")):
            return None
        if not isinstance(protocol.writable, asyncio.Event):
            return None
        return DirectSocket(protocol)

    @property
    def gone(self) -> bool:
        """The peer is gone or a close was sent: no more data frames."""
        protocol = self._protocol
        return bool(protocol.disconnected or protocol.close_sent or self._transport.is_closing())

    @property
    def writable(self) -> bool:
        """False while the transport's buffer is above its high-water mark."""
        return self._writable.is_set()

    async def wait_writable(self) -> None:
        await self._writable.wait()

    def write_texts(self, texts: list[bytes]) -> None:
        """Frame ``texts`` as text messages and write them with one system call."""
        conn = self._conn
        for text in texts:
            conn.send_text(text)
        self._transport.write(b"".join(conn.data_to_send()))


# --- the server's own send ------------------------------------------------------------------


class ExposeServerSend:
    """Outermost middleware: the writer uses the server's ``send`` for data frames only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


# --- handshake guards -----------------------------------------------------------------------


def guarded_protocol(handshake_timeout_s: float) -> type[Any] | None:
    """uvicorn's websockets-sansio protocol with the handshake guards, or None without it."""
    if WebSocketsSansIOProtocol is None:
        return None
    return type(
        "GuardedWebSocketProtocol",
        (_guarded_base(),),
        {"handshake_timeout_s": handshake_timeout_s},
    )


@functools.cache
def _guarded_base() -> type[Any]:
    assert WebSocketsSansIOProtocol is not None

    class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
        handshake_timeout_s = 10.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._handshake_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._handshake_timer = self.loop.call_later(
                self.handshake_timeout_s, self._handshake_timed_out
            )

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # A request the WebSocket layer cannot parse: send the answer websockets prepared
            # (uvicorn leaves the connection open with no answer and no timeout).
            failed = not self.handshake_initiated and self.conn.handshake_exc is not None
            if failed and not self.transport.is_closing():
                self.transport.write(b"".join(self.conn.data_to_send()))
                self.transport.close()

        def _handshake_timed_out(self) -> None:
            self._handshake_timer = None
            if not self.handshake_complete and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
                self._handshake_timer = None
            super().connection_lost(exc)

    return GuardedWebSocketProtocol
