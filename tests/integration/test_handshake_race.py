"""Two handshakes of one client_id overlap: the one that arrived last must win."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import connect

from tests.support.client import WsClient
from tests.support.server import RunningServer


async def test_a_stale_handshake_never_displaces_a_newer_connection(
    server: RunningServer,
) -> None:
    store = server.gateway.store
    original = store.claim_client
    first_entered = asyncio.Event()
    release_first = asyncio.Event()
    calls = 0

    async def held_claim(client_id: str, user_id: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first handshake stalls here, as a slow store would make it
            first_entered.set()
            await release_first.wait()
        return await original(client_id, user_id)

    store.claim_client = held_claim  # type: ignore[method-assign]

    async def open_stale() -> Any:
        return await connect(server.ws("/ws/chat/racer"), compression=None)

    stale = asyncio.create_task(open_stale())
    await first_entered.wait()
    newer = await WsClient.open(server.ws("/ws/chat/racer"))
    assert (await newer.recv())["type"] == "welcome"

    release_first.set()
    old = await stale
    await old.wait_closed()
    assert old.close_code == 4409  # the stale socket is refused ...
    await newer.chat("still mine", id="r1")  # ... and the newer one keeps working
    text, _ = await newer.answer("r1")
    assert text == "still mine"
    assert server.gateway.hub.clients["racer"].connection is not None
    await newer.close()
