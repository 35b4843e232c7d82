"""Safer defaults: image URLs only as data: unless limits.image_url_hosts allows the host, and
the chat UI served with a same-origin content security policy and no framing or referrer."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support.client import WsClient

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


@pytest.mark.parametrize("path", ["/", "/index.html", "/app.js", "/styles.css", "/dari-client.js"])
async def test_the_ui_is_served_with_security_headers(
    server_factory: ServerFactory, path: str
) -> None:
    server = await server_factory()
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get(path)
    assert response.status_code == 200
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == policy["script-src"] == policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["img-src"] == "'self' data:"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_allowed_image_hosts_are_in_the_policy(server_factory: ServerFactory) -> None:
    server = await server_factory(limits={"image_url_hosts": ["cdn.example.com"]})
    async with httpx.AsyncClient(base_url=server.http) as http:
        policy = (await http.get("/")).headers["content-security-policy"]
    assert "img-src 'self' data: https://cdn.example.com http://cdn.example.com;" in policy


async def test_image_urls_are_refused_unless_their_host_is_allowed(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory()
    client = await WsClient.open(server.ws("/ws/chat/images"))
    await client.recv()
    for i, url in enumerate(["http://127.0.0.1:6379/", "https://cdn.example.com/cat.png"]):
        await client.chat("look", id=f"u{i}", images=[url])
        error = await client.until_type("error", request_id=f"u{i}")
        assert error["code"] == "bad_request" and "data: URL" in error["message"]
    await client.chat("look", id="d1", images=[PNG])
    assert (await client.until_type("ack", id="d1"))["duplicate"] is False
    await client.close()

    allowing = await server_factory(limits={"image_url_hosts": ["cdn.example.com"]})
    client = await WsClient.open(allowing.ws("/ws/chat/images"))
    await client.recv()
    await client.chat("look", id="u1", images=["https://cdn.example.com/cat.png"])
    assert (await client.until_type("ack", id="u1"))["duplicate"] is False
    await client.chat("look", id="u2", images=["http://127.0.0.1:6379/"])
    assert (await client.until_type("error", request_id="u2"))["code"] == "bad_request"
    await client.close()
