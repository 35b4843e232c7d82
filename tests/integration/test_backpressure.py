"""Slow readers and dead links: they cost only themselves, and lose nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dari.hub.connection import Connection
from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.engines import ENGINES
from tests.support.proxy import ChaosProxy
from tests.support.server import RunningServer
from tests.support.waiting import eventually


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Everything here holds on one node (memory) and on the several-node engine (Redis)."""
    return str(request.param)


PIECES, SIZE = 600, 16 * 1024  # ~10 MB: more than loopback socket buffers absorb

AGENTS: dict[str, Any] = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                {
                    "name": "firehose",
                    "backend": "python",
                    "options": {"entrypoint": "tests.support.agents:firehose"},
                },
                {"name": "slow", "backend": "echo", "options": {"delay_ms": 10}},
            ],
        }
    ]
}


async def _server_connection(server: RunningServer, client_id: str) -> Connection:
    clients = server.gateway.hub.clients
    await eventually(lambda: client_id in clients and clients[client_id].connection is not None)
    connection = clients[client_id].connection
    assert connection is not None
    return connection


async def test_stalled_reader_is_closed_1013_then_resumes_with_nothing_lost(
    server_factory: ServerFactory,
    engine: str,
) -> None:
    server = await server_factory(**AGENTS, limits={"send_timeout_s": 1.0})
    proxy = ChaosProxy(server.port)
    await proxy.start()
    slow = await WsClient.open(f"ws://127.0.0.1:{proxy.port}/ws/chat/stalled")
    await slow.recv()
    await slow.chat(f"{PIECES} {SIZE}", agent="firehose", project="p1", id="big")
    await slow.until_type("start")
    connection = await _server_connection(server, "stalled")
    # One node writes frames directly to uvicorn's transport, the Redis engine through a writer
    # task: this test is what shows each path honours flow control (pause, stall timeout,
    # resume).
    assert connection.writes_directly == (engine == "memory")
    proxy.pause_reading("stalled")

    # Meanwhile another client is served in full, on the same event loop.
    fast = await WsClient.open(server.ws("/ws/chat/fast"))
    await fast.recv()
    words = " ".join(f"w{i}" for i in range(40))
    await fast.chat(words, agent="slow", project="p1", id="f1")
    text, end = await fast.answer("f1", timeout=30)
    assert text == words and end["finish_reason"] == "stop"

    async with asyncio.timeout(30):
        await connection.closed.wait()
    assert connection.close_code == 1013

    # The stalled client resumes from what it had processed and gets exactly the rest.
    position = max(f["seq"] for f in slow.frames)
    received = "".join(f["content"] for f in slow.frames if f["type"] == "response")
    await proxy.stop()
    again = await WsClient.open(
        server.ws(f"/ws/chat/stalled?last_seq={position}&epoch={slow.frames[0]['epoch']}")
    )
    welcome = await again.recv()
    assert welcome["resumed"] is True
    await again.until_type("end", request_id="big", timeout=60)
    pieces = [f["content"] for f in again.frames if f["type"] == "response"]
    expected = "".join(f"{i % 10}" * SIZE for i in range(PIECES))
    assert received + "".join(pieces) == expected
    frames_sent = len(pieces) + sum(1 for f in slow.frames if f["type"] == "response")
    if engine == "memory":
        # What piled up while it stalled was merged: far fewer frames than pieces.
        assert frames_sent < PIECES
    else:
        assert frames_sent == PIECES  # the shared log keeps every piece: none lost or doubled
    saved = await server.gateway.store.history(ConversationKey("p1", "firehose"), 2)
    assert saved[-1].content == expected and saved[-1].status == "complete"
    await again.close()


async def test_dead_link_is_dropped_within_two_heartbeats_and_answer_waits(
    server_factory: ServerFactory,
) -> None:
    heartbeat = 1.0
    server = await server_factory(**AGENTS, heartbeat_s=heartbeat)
    proxy = ChaosProxy(server.port)
    await proxy.start()
    client = await WsClient.open(f"ws://127.0.0.1:{proxy.port}/ws/chat/dead", ping_interval=None)
    await client.recv()
    words = " ".join(f"d{i}" for i in range(150))
    await client.chat(words, agent="slow", project="p1", id="d1")
    await client.until_type("response")
    proxy.freeze("dead")  # the path dies silently: no FIN, no RST
    # uvicorn pings every heartbeat and gives up one heartbeat later.
    clients = server.gateway.hub.clients
    await eventually(lambda: clients["dead"].connection is None, timeout=2 * heartbeat + 1.0)
    position = max(f["seq"] for f in client.frames)
    received = "".join(f["content"] for f in client.frames if f["type"] == "response")
    again = await WsClient.open(
        server.ws(f"/ws/chat/dead?last_seq={position}&epoch={client.frames[0]['epoch']}")
    )
    assert (await again.recv())["resumed"] is True
    await again.until_type("end", request_id="d1", timeout=30)
    assert received + "".join(f["content"] for f in again.frames if f["type"] == "response") == (
        words
    )
    await again.close()
    await proxy.stop()
