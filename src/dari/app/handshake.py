"""uvicorn's websockets-sansio protocol with two guards on the opening handshake.

- A request the WebSocket layer cannot parse (a header line over 8 KiB, too many headers, a
  request line too long, garbage) gets the answer ``websockets`` already prepared (431, 414)
  or a plain close. uvicorn does not send it and leaves the connection open with no timeout.
- A socket whose handshake has not completed ``server.handshake_timeout_s`` after it opened
  is closed, so half-open upgrades cannot pile up.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


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


def guarded_protocol(handshake_timeout_s: float) -> type[GuardedWebSocketProtocol]:
    return type(
        "GuardedWebSocketProtocol",
        (GuardedWebSocketProtocol,),
        {"handshake_timeout_s": handshake_timeout_s},
    )
