"""Security headers on the chat UI's responses (the page, its scripts and styles).

The UI is plain modules and a stylesheet from this origin: no inline script or style element,
styles set through the DOM only, sockets and fetches to this origin. So the policy can be
"self" throughout; a framing page or an injected script from elsewhere gets nothing.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dari.settings import Settings


def content_security_policy(settings: Settings) -> str:
    # Images come as data: URLs, or from the hosts limits.image_url_hosts allows.
    image_hosts = " ".join(
        f"https://{host} http://{host}" for host in settings.limits.image_url_hosts
    )
    # The page exchanges a sign-in code at the provider's token endpoint itself (PKCE).
    oidc = settings.auth.oidc if settings.auth.mode == "jwt" else None
    token_origin = f" {_origin(oidc.token_endpoint)}" if oidc else ""
    directives = [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src 'self' data: {image_hosts}".rstrip(),
        f"connect-src 'self'{token_origin}",  # CSP 3: 'self' covers ws:/wss: to this host
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def ui_headers(settings: Settings) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", content_security_policy(settings).encode()),
        (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers without CSP 2
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
    ]


class WithHeaders:
    """Adds fixed headers to every HTTP response of the wrapped app."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.headers = headers
        self._names = {name for name, _ in headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", []) if h[0].lower() not in self._names]
                message = {**message, "headers": [*kept, *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
