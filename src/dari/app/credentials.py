"""What a request or a WebSocket handshake offers to prove who it is."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from dari.auth.base import Credentials


def credentials_of(
    connection: HTTPConnection, cookie_name: str, *, allow_query_token: bool
) -> Credentials:
    """``Authorization: Bearer``, the session cookie and, where allowed, ``?token=``.

    Only WebSocket handshakes take ``?token=`` (browsers cannot set their headers).
    """
    header = connection.headers.get("authorization", "")
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else ""
    query = connection.query_params.get("token") if allow_query_token else None
    return Credentials(
        bearer=bearer or None,
        query_token=query or None,
        cookie=connection.cookies.get(cookie_name) or None,
    )
