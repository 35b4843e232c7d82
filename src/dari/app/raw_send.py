"""Hand the WebSocket writer the server's own ``send``, under the framework's wrappers.

Every frame dari streams would otherwise pass through Starlette's ``WebSocket.send`` state
checks and the exception middleware's ``send`` wrapper, a few microseconds each, per token.
This middleware sits outermost in the app and records the server's ``send`` in the scope;
the writer uses it for data frames only. Accept and close still go through Starlette, so its
view of the socket's state stays right.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from dari.hub.connection import SERVER_SEND


class ExposeServerSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)
