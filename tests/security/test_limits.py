"""Size limits (too_large, then 1009), bounded memory, rate limits (rate_limited, then 1008)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.security.conftest import (
    HS_AUTH,
    TWO_PROJECTS,
    ErrorWatch,
    bearer,
    handshake,
    start,
    token,
)
from tests.support.client import WsClient

MAX = 16 * 1024  # max_message_bytes; the WebSocket layer's hard cap is twice that
LIMITS = {"max_message_bytes": MAX, "rate_per_s": 10_000, "rate_burst": 10_000}
OVER_HARD_CAP = 3 * MAX
FRAGMENTS = [" " * 4096] * (OVER_HARD_CAP // 4096)  # each fragment small, the message not


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def oversize(url: str, *, fragmented: bool) -> int | None:
    """Send one message past the hard cap; return the close code the server answered with."""
    async with connect(url, compression=None, max_size=None, open_timeout=10) as ws:
        await ws.recv()  # welcome
        # The server may close while we are still sending: that is what we want.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(FRAGMENTS if fragmented else " " * OVER_HARD_CAP)
        async with asyncio.timeout(10):
            await ws.wait_closed()
        return ws.close_code


async def test_frame_between_the_limits_gets_too_large_and_the_socket_stays(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(limits=LIMITS)
    client = await WsClient.open(server.ws("/ws/chat/big-1"))
    await client.recv()
    await client.send(json.dumps({"type": "ping", "pad": "x" * (MAX + 100)}))
    error = await client.until_type("error")
    assert error["code"] == "too_large"
    await client.send({"type": "ping", "ts": 1})
    assert (await client.until_type("pong"))["ts"] == 1


async def test_oversized_frame_closes_1009(server_factory: ServerFactory) -> None:
    server = await server_factory(limits=LIMITS)
    assert await oversize(server.ws("/ws/chat/big-2"), fragmented=False) == 1009


async def test_oversized_fragmented_message_closes_1009(server_factory: ServerFactory) -> None:
    server = await server_factory(limits=LIMITS)
    assert await oversize(server.ws("/ws/chat/big-3"), fragmented=True) == 1009


async def test_thousand_oversized_tries_keep_memory_bounded(
    server_factory: ServerFactory, errors: ErrorWatch
) -> None:
    server = await start(server_factory, errors, limits=LIMITS)
    url = server.ws("/ws/chat/big-4")
    for i in range(50):  # warm up allocator pools before measuring
        await oversize(url, fragmented=i % 2 == 1)
    before = rss_bytes()
    codes = [await oversize(url, fragmented=i % 2 == 1) for i in range(1000)]
    growth = rss_bytes() - before
    assert codes == [1009] * 1000
    assert growth < 50 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"
    # The server still serves.
    client = await WsClient.open(url)
    await client.recv()
    await client.send({"type": "ping", "ts": "ok"})
    await client.until_type("pong")
    assert errors.records == []


# --- rate limits ---------------------------------------------------------------------------

FLOOD = {
    "auth": HS_AUTH,
    "projects": TWO_PROJECTS,
    "limits": {"rate_per_s": 5, "rate_burst": 10, "rate_strikes_before_close": 5},
}


async def test_flood_gets_rate_limited_then_1008_and_others_are_unaffected(
    server_factory: ServerFactory, errors: ErrorWatch
) -> None:
    server = await start(server_factory, errors, **FLOOD)
    victim = await WsClient.open(
        server.ws("/ws/chat/victim"), additional_headers=bearer(token("vic"))
    )
    await victim.recv()
    flooder = await WsClient.open(
        server.ws("/ws/chat/flooder"), additional_headers=bearer(token("flo"))
    )
    await flooder.recv()

    async def flood() -> list[dict[str, Any]]:
        """Ping as fast as the answers come back (lockstep: each reply is seen before the close)."""
        received: list[dict[str, Any]] = []
        with contextlib.suppress(ConnectionClosed):
            for i in range(1000):
                await flooder.send({"type": "ping", "ts": i})
                received.append(await flooder.recv())
        return received

    flooding = asyncio.create_task(flood())
    # The victim chats while the flood goes on.
    await victim.chat("still here and fine", project="p1", id="v1")
    received = await flooding
    text, end = await victim.answer("v1")
    assert text == "still here and fine" and end["finish_reason"] == "stop"

    codes = [f.get("code") for f in received if f["type"] == "error"]
    assert codes and set(codes) == {"rate_limited"}
    assert await flooder.closed_with() == 1008
    # The victim's socket was never limited.
    assert all(f.get("code") != "rate_limited" for f in victim.frames)
    await victim.chat("and after", project="p2", id="v2")
    assert (await victim.answer("v2"))[0] == "and after"
    assert errors.records == []


async def test_a_client_is_told_rate_limited_before_the_1008_close(
    server_factory: ServerFactory,
) -> None:
    limits = {"rate_per_s": 1, "rate_burst": 2, "rate_strikes_before_close": 1}
    server = await server_factory(limits=limits)
    client = await WsClient.open(server.ws("/ws/chat/strikes"))
    await client.recv()
    with contextlib.suppress(ConnectionClosed):
        for i in range(10):
            await client.send({"type": "ping", "ts": i})
            await client.recv()
    assert await client.closed_with() == 1008
    assert [f.get("code") for f in client.frames if f["type"] == "error"] == ["rate_limited"]


async def test_connections_per_user_are_capped(server_factory: ServerFactory) -> None:
    server = await server_factory(auth=HS_AUTH, limits={"max_connections_per_user": 3})
    value = bearer(token("many"))
    clients = [
        await WsClient.open(server.ws(f"/ws/chat/many-{i}"), additional_headers=value)
        for i in range(3)
    ]
    for client in clients:
        await client.recv()
    outcome = await handshake(server.ws("/ws/chat/many-3"), value)
    assert outcome.welcome is None and outcome.close_code in (1008, 1013)


async def test_unparseable_handshake_is_answered_or_closed(server_factory: ServerFactory) -> None:
    server = await server_factory()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = (
        "GET /ws/chat/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nX-Padding: {'a' * 9000}\r\n\r\n"
    )
    writer.write(request.encode())
    try:
        async with asyncio.timeout(5):
            answer = await reader.read()  # everything until the server closes
        assert answer.startswith(b"HTTP/1.1 431 ")  # Request Header Fields Too Large
    finally:
        writer.close()
    # The server is unharmed: a normal client is served.
    async with connect(server.ws("/ws/chat/after")) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
