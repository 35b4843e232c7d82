"""Cross-site WebSocket hijacking defence: browser handshakes must come from an allowed origin.

CORS does not apply to WebSocket handshakes, so the server checks ``Origin`` itself. Clients
that are not browsers send no ``Origin`` and are not affected. Matching is exact (scheme, host
and port), so look-alikes such as ``https://app.example.com.evil.com`` and ``null`` fail.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from dari.settings import Settings


def own_origins(connection: HTTPConnection, settings: Settings) -> set[str]:
    host = connection.headers.get("host")
    if not host:
        return set()
    return {f"http://{host}", f"https://{host}"}


def origin_allowed(connection: HTTPConnection, settings: Settings) -> bool:
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    allowed = set(settings.auth.allowed_origins) or own_origins(connection, settings)
    return origin in allowed
