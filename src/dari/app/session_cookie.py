"""The browser sign-in: a token pasted into the UI becomes an httpOnly, SameSite cookie.

Keeping the token in a cookie the page's scripts cannot read means an XSS in rendered model
output cannot steal it. The WebSocket handshake then authenticates by that cookie.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from dari.app.gateway import Gateway
from dari.auth.base import Credentials

router = APIRouter(prefix="/api/auth")


class SessionIn(BaseModel):
    token: str = Field(min_length=1, max_length=16_384)


@router.post("/session")
async def open_session(body: SessionIn, request: Request, response: Response) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    principal = gateway.authenticator.authenticate(Credentials(bearer=body.token))
    auth = gateway.settings.auth
    max_age = None
    if principal.expires_at is not None:
        import time

        max_age = max(0, int(principal.expires_at - time.time()))
    response.set_cookie(
        auth.cookie_name,
        body.token,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=auth.cookie_secure,
        path="/",
    )
    return {"user": principal.user_id, "admin": principal.admin}


@router.delete("/session")
async def close_session(request: Request, response: Response) -> dict[str, str]:
    gateway: Gateway = request.app.state.gateway
    response.delete_cookie(gateway.settings.auth.cookie_name, path="/")
    return {"status": "signed out"}
