"""Guards on every TCP connection, before the HTTP layer hands a request to the app.

uvicorn holds the request line and headers itself and never times them out: a socket that
sends ``GET / HTTP/1.1\\r\\nHost: x`` and stalls (slowloris) stays open for good, and nothing
caps how many sockets one address, or everyone, may hold. So dari runs uvicorn's httptools
protocol with:

- a header timeout: the request line and headers must arrive within ``server.header_timeout_s``
  of the connection opening (or of the next request starting on a kept-alive connection),
  else the connection gets 408 and is closed;
- connection caps: past ``server.max_connections_per_ip`` sockets from one address, or
  ``server.max_connections`` in all, a new connection gets 503 and is closed before anything
  of it is read. A socket upgraded to WebSocket counts until it closes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dari.app.refusals import note_refusal


def _response(status: str, body: str, *extra: str) -> bytes:
    head = [
        f"HTTP/1.1 {status}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(body)}",
        "connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


BUSY = _response("503 Service Unavailable", "too many connections\n", "retry-after: 1")
TIMED_OUT = _response("408 Request Timeout", "request headers took too long\n")


class ConnectionLimits:
    """Open TCP connections of one server, in all and per peer address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._open: dict[asyncio.BaseTransport, str] = {}
        self._per_ip: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, transport: asyncio.BaseTransport, ip: str) -> bool:
        if len(self._open) >= self.max_total or self._per_ip[ip] >= self.max_per_ip:
            return False
        self._open[transport] = ip
        self._per_ip[ip] += 1
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        ip = self._open.pop(transport, None)
        if ip is None:
            return  # refused, or already released
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]


class GuardedHttpProtocol(HttpToolsProtocol):
    # Set per server by guarded_http_protocol.
    header_timeout_s: ClassVar[float] = 10.0
    limits: ClassVar[ConnectionLimits] = ConnectionLimits(10_000, 2_000)
    _ws_classes: ClassVar[dict[type[Any], type[Any]]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        if self.ws_protocol_class is not None:
            self.ws_protocol_class = self._released_on_close(self.ws_protocol_class)

    @classmethod
    def _released_on_close(cls, ws_class: type[Any]) -> type[Any]:
        """The WebSocket protocol class, releasing the connection's slot when it closes (an
        upgraded socket is no longer this protocol's: its connection_lost is not called)."""
        released = cls._ws_classes.get(ws_class)
        if released is None:
            limits = cls.limits

            class Released(ws_class):  # type: ignore[misc]
                def connection_made(self, transport: asyncio.BaseTransport) -> None:
                    self._guarded_transport = transport
                    super().connection_made(transport)

                def connection_lost(self, exc: Exception | None) -> None:
                    limits.release(self._guarded_transport)
                    super().connection_lost(exc)

            released = cls._ws_classes[ws_class] = Released
        return released

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ip = self.client[0] if self.client else "unix"
        if not self.limits.admit(transport, ip):
            note_refusal(503, "too many connections", "-", ip)
            transport.write(BUSY)
            transport.close()
            return
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self.limits.release(self.transport)
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.header_timeout_s, self._headers_timed_out
            )

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        ip = self.client[0] if self.client else "unix"
        note_refusal(408, "request headers took too long", "-", ip)
        self.transport.write(TIMED_OUT)
        self.transport.close()


def guarded_http_protocol(
    header_timeout_s: float, max_connections: int, max_connections_per_ip: int
) -> type[GuardedHttpProtocol]:
    """A protocol class for one server: its own timeout and its own count of connections."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "limits": ConnectionLimits(max_connections, max_connections_per_ip),
            "_ws_classes": {},
        },
    )
