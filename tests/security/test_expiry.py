"""A socket does not outlive its token: it is closed 4401 once ``exp`` passes."""

from __future__ import annotations

import time

from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH, bearer, token
from tests.support.client import WsClient


async def test_open_socket_is_closed_4401_when_its_token_expires(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(auth={**HS_AUTH, "leeway_s": 0})
    exp = int(time.time()) + 3
    client = await WsClient.open(
        server.ws("/ws/chat/expiring"), additional_headers=bearer(token(exp=exp))
    )
    assert (await client.recv())["type"] == "welcome"
    await client.send({"type": "ping", "ts": "alive"})
    await client.until_type("pong")  # usable until then
    code = await client.closed_with(timeout=60)
    assert code == 4401
    assert exp - 0.5 <= time.time() <= exp + 60
    assert client.connection.close_reason == "token expired"


async def test_expired_token_cannot_reconnect(server_factory: ServerFactory) -> None:
    server = await server_factory(auth={**HS_AUTH, "leeway_s": 0})
    value = bearer(token(exp=int(time.time()) - 1))
    client = await WsClient.open(server.ws("/ws/chat/expiring"), additional_headers=value)
    assert await client.closed_with() == 4401
