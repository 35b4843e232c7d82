"""Cross-site WebSocket hijacking: browser handshakes from foreign origins are refused (HTTP 403)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH, bearer, handshake, token

APP = "https://app.example.com"
AUTH = {**HS_AUTH, "allowed_origins": [APP]}
PATH = "/ws/chat/origin-client"

FOREIGN = [
    "https://evil.example",
    "null",
    "https://app.example.com.evil.com",
    "https://evil.com/https://app.example.com",
    "http://app.example.com",
    "https://app.example.com:8443",
    "https://sub.app.example.com",
    "https://app.example.co",
    "",
]


@pytest.mark.parametrize("origin", FOREIGN, ids=[o or "empty" for o in FOREIGN])
async def test_foreign_origin_refused_before_upgrade(
    server_factory: ServerFactory, origin: str
) -> None:
    server = await server_factory(auth=AUTH)
    # A valid token does not help: the browser would attach it for the attacker's page.
    with pytest.raises(InvalidStatus) as info:
        await handshake(server.ws(PATH), bearer(token()), origin=Origin(origin))
    assert info.value.response.status_code == 403


async def test_foreign_origin_with_cookie_refused(server_factory: ServerFactory) -> None:
    server = await server_factory(auth=AUTH)
    with pytest.raises(InvalidStatus) as info:
        await handshake(
            server.ws(PATH),
            {"Cookie": f"dari_session={token()}"},
            origin=Origin("https://evil.example"),
        )
    assert info.value.response.status_code == 403


async def test_configured_origin_accepted(server_factory: ServerFactory) -> None:
    server = await server_factory(auth=AUTH)
    outcome = await handshake(server.ws(PATH), bearer(token()), origin=Origin(APP))
    assert outcome.welcome is not None


async def test_no_origin_is_a_non_browser_client_and_accepted(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(auth=AUTH)
    assert (await handshake(server.ws(PATH), bearer(token()))).welcome is not None


async def test_second_dialect_checks_origin_too(server_factory: ServerFactory) -> None:
    server = await server_factory(auth=AUTH)
    with pytest.raises(InvalidStatus):
        await handshake(
            server.ws("/api/chat/ws/t1"), bearer(token()), origin=Origin("https://evil.example")
        )


async def test_without_allow_list_only_the_own_origin_passes(server_factory: ServerFactory) -> None:
    server = await server_factory()  # auth none on loopback, no allowed_origins
    own = Origin(f"http://127.0.0.1:{server.port}")
    assert (await handshake(server.ws(PATH), origin=own)).welcome is not None
    with pytest.raises(InvalidStatus):
        await handshake(server.ws(PATH), origin=Origin("http://evil.example"))


# --- DNS rebinding -------------------------------------------------------------------------


async def raw_status(port: int, path: str, host: str, origin: str | None) -> int:
    """Send a handshake by hand (to choose the Host header) and return the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        async with asyncio.timeout(5):
            status_line = await reader.readline()
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_loopback_host_header_accepted(server_factory: ServerFactory) -> None:
    server = await server_factory()
    host = f"127.0.0.1:{server.port}"
    assert await raw_status(server.port, PATH, host, f"http://{host}") == 101


async def test_dns_rebinding_host_refused_when_auth_is_off(server_factory: ServerFactory) -> None:
    # evil.example re-resolves to 127.0.0.1: the browser sends Host and Origin of evil.example,
    # which match each other, so the same-host origin rule lets the attacker's page in.
    server = await server_factory()
    host = f"evil.example:{server.port}"
    assert await raw_status(server.port, PATH, host, f"http://{host}") in (400, 403)


async def test_dns_rebinding_host_refused_on_rest_when_auth_is_off(
    server_factory: ServerFactory,
) -> None:
    # Without auth everyone is admin: a rebound page must not start or stop agents either.
    server = await server_factory()
    async with httpx.AsyncClient(base_url=server.http) as http:
        evil = {
            "Host": f"evil.example:{server.port}",
            "Origin": f"http://evil.example:{server.port}",
        }
        assert (
            await http.post("/api/projects/project_001/agents/echo/stop", headers=evil)
        ).status_code in (400, 403)
        assert (
            await http.get("/api/projects", headers={"Host": f"localhost:{server.port}"})
        ).status_code == 200


# --- cookies on REST -----------------------------------------------------------------------


async def test_cookie_authenticated_post_from_a_foreign_origin_is_refused(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(auth=AUTH)
    cookie = {"dari_session": token("root", admin=True)}
    agent = "/api/projects/project_001/agents/echo"
    async with httpx.AsyncClient(base_url=server.http, cookies=cookie) as http:
        assert (await http.post(f"{agent}/start", headers={"Origin": APP})).status_code == 200
        foreign = await http.post(f"{agent}/stop", headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        agents = (await http.get("/api/projects/project_001/agents")).json()
        assert next(a for a in agents if a["name"] == "echo")["running"] is True
