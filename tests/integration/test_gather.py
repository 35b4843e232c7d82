"""An agent's ``stream_gather_ms``: its pieces go out merged, at most that late, text exact."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.agents import gate
from tests.support.client import WsClient
from tests.support.engines import ENGINES


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Both writers: the direct one (memory engine) and the writer task (Redis engine)."""
    return str(request.param)


WORDS = " ".join(f"w{i}" for i in range(60))

AGENTS: dict[str, Any] = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                {
                    "name": "gathered",
                    "backend": "echo",
                    "stream_gather_ms": 80,
                    "options": {"delay_ms": 4},
                },
                {
                    "name": "waits",
                    "backend": "python",
                    "stream_gather_ms": 50,
                    "options": {"entrypoint": "tests.support.agents:gated"},
                },
                {"name": "plain", "backend": "echo", "options": {"delay_ms": 4}},
            ],
        }
    ]
}


def _pieces(client: WsClient, request_id: str) -> list[str]:
    return [
        frame["content"]
        for frame in client.frames
        if frame.get("type") == "response" and frame.get("request_id") == request_id
    ]


async def test_pieces_go_out_merged_and_the_text_is_exact(
    server_factory: ServerFactory, engine: str
) -> None:
    server = await server_factory(**AGENTS)
    client = await WsClient.open(server.ws("/ws/chat/gathers"))
    await client.recv()
    await client.chat(WORDS, agent="gathered", project="p1", id="g1")
    text, end = await client.answer("g1", timeout=30)
    assert text == WORDS and end["finish_reason"] == "stop"
    gathered = _pieces(client, "g1")
    if engine == "memory":
        # 60 pieces over at least 240 ms, each held up to 80 ms: a handful of frames, not 60.
        assert 1 < len(gathered) <= 15, gathered
        # The same agent without the setting sends far more (its writer merges only what
        # piles up within one turn of the loop).
        await client.chat(WORDS, agent="plain", project="p1", id="p1")
        text, _ = await client.answer("p1", timeout=30)
        assert text == WORDS
        assert len(_pieces(client, "p1")) > 2 * len(gathered)
    else:
        # The shared log keeps each piece as its own numbered frame: held pieces go out
        # together in one write, one frame each, none lost or repeated.
        assert gathered == [f"{word} " for word in WORDS.split()[:-1]] + ["w59"]
    # What was saved is the whole answer, once.
    history = await server.gateway.store.history(ConversationKey("p1", "gathered"), 10)
    assert [(m.role, m.content, m.status) for m in history] == [
        ("user", WORDS, "complete"),
        ("assistant", WORDS, "complete"),
    ]


async def test_a_held_piece_goes_out_when_its_wait_runs_out(server_factory: ServerFactory) -> None:
    """The wait is bounded by a timer, not by the next piece: an agent that says a word and
    then pauses shows that word alone, before it says more."""
    server = await server_factory(**AGENTS)
    client = await WsClient.open(server.ws("/ws/chat/waits"))
    await client.recv()
    await client.chat("hello", agent="waits", project="p1", id="h1")
    first = await client.until_type("response", timeout=10, request_id="h1")
    assert first["content"] == "hello "
    gate("hello").set()
    text, end = await client.answer("h1", timeout=10)
    assert text == "hello done" and end["finish_reason"] == "stop"
    assert _pieces(client, "h1") == ["hello ", "done"]


async def test_an_http_stream_gets_the_pieces_merged_too(
    server_factory: ServerFactory, engine: str
) -> None:
    """The AI SDK's SSE stream reads the same log: with the setting it gets fewer deltas."""
    server = await server_factory(**AGENTS)
    deltas: dict[str, list[str]] = {}
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        for agent in ("gathered", "plain"):
            body = {
                "id": f"c-{agent}",
                "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": WORDS}]}],
                "trigger": "submit-message",
            }
            async with http.stream("POST", f"/api/ai-sdk/p1/{agent}/chat", json=body) as reply:
                assert reply.status_code == 200
                deltas[agent] = [
                    chunk["delta"]
                    async for line in reply.aiter_lines()
                    if line.startswith("data: {")
                    and (chunk := json.loads(line[6:]))["type"] == "text-delta"
                ]
    assert "".join(deltas["gathered"]) == WORDS and "".join(deltas["plain"]) == WORDS
    if engine == "memory":
        assert len(deltas["gathered"]) <= 15 < len(deltas["plain"]), deltas
