"""Synchronous data-frame writes on uvicorn's WebSocket protocol, under the ASGI ``send``.

Each frame through ASGI costs an awaited ``send`` and one ``transport.write`` (a system call):
per token, that is most of the gateway's CPU. When the server is uvicorn with its
websockets-sansio protocol (dari's default), the writer can instead frame every ready message
with the protocol's own ``websockets`` connection and hand them to the transport in one write,
without awaiting. Everything else (handshake, receive, ping/pong, close) stays on the ASGI
path, so the app is unchanged and any other server still works through ``send``.

Only the protocol object's ``conn``, ``transport``, ``writable`` (flow control) and state flags
are touched; ``for_send`` returns ``None`` for any other server or when they are missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


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
        protocol = getattr(send, "__self__", None)
        if not isinstance(protocol, WebSocketsSansIOProtocol):
            return None
        if not all(hasattr(protocol, name) for name in ("conn", "transport", "writable")):
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
