"""The chaos run's byte-for-byte check on the AI SDK resume path, on both engines.

Many chats stream long answers slowly; each client cuts its POST stream at a random point, then
resumes (``GET …/stream``) and cuts again, several times, as reloading pages do. Every stream
shows the answer from its start, so each one's text must be a prefix of the saved answer, and
the stream that reaches ``finish`` must equal it byte for byte; no chunk is out of order.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support.engines import ENGINES

CHATS = 12
MAX_CUTS = 4


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Cut(Exception):
    """The client drops the stream here."""


async def read_stream(response: httpx.Response, cut_after: int | None) -> tuple[str, str | None]:
    """The text a stream showed and how it ended (``finish``/``abort``, None if cut); chunk
    order checked as the SDK needs it."""
    text, deltas, open_text, last = "", 0, False, None
    async for line in response.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk: dict[str, Any] = json.loads(line[6:])
        kind = chunk["type"]
        if last is None:
            assert kind == "start", chunk
        if kind == "text-start":
            assert not open_text
            open_text = True
        elif kind == "text-delta":
            assert open_text
            text += chunk["delta"]
            deltas += 1
            if cut_after is not None and deltas >= cut_after:
                return text, None
        elif kind == "text-end":
            open_text = False
        elif kind in ("finish", "abort"):
            assert not open_text
            return text, kind
        last = kind
    return text, None


async def test_cut_and_resumed_streams_show_the_saved_answer_byte_for_byte(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(
        projects=[
            {
                "id": "chaos",
                "agents": [{"name": "slow", "backend": "echo", "options": {"delay_ms": 5}}],
            }
        ]
    )
    rng = random.Random(20261201)
    api = f"{server.http}/api/ai-sdk/chaos/slow/chat"
    outcomes: list[tuple[str, str, list[str], str | None, int]] = []

    async def one_chat(index: int, client: httpx.AsyncClient) -> None:
        chat_id = f"chaos-{index}"
        words = " ".join(f"c{index}w{i}" for i in range(rng.randint(120, 160)))
        body = {
            "id": chat_id,
            "trigger": "submit-message",
            "messages": [
                {"id": f"m{index}", "role": "user", "parts": [{"type": "text", "text": words}]}
            ],
        }
        shown: list[str] = []
        final: str | None = None
        resumes = 0
        async with client.stream("POST", api, json=body) as response:
            text, end = await read_stream(response, rng.randint(1, 20))
        shown.append(text)
        final = text if end == "finish" else None
        while final is None and resumes < MAX_CUTS + 1:
            resumes += 1
            cut = rng.randint(1, 30) if resumes <= MAX_CUTS else None
            async with client.stream("GET", f"{api}/{chat_id}/stream") as response:
                if response.status_code == 204:  # it finished while this client was away
                    break
                text, end = await read_stream(response, cut)
            shown.append(text)
            if end == "finish":
                final = text
        outcomes.append((chat_id, words, shown, final, resumes))

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(one_chat(i, client) for i in range(CHATS)))

        mid_answer = 0
        for chat_id, words, shown, final, _ in outcomes:
            response = await client.get(
                f"{server.http}/api/projects/chaos/agents/slow/threads/{chat_id}/messages"
            )
            history = response.json()["messages"]
            assert [(m["role"], m["status"]) for m in history] == [
                ("user", "complete"),
                ("assistant", "complete"),
            ]
            saved: str = history[1]["content"]
            assert saved.encode() == words.encode()
            for text in shown:
                assert saved.startswith(text), (chat_id, text)
            if final is not None:
                assert final.encode() == saved.encode()
            mid_answer += sum(1 for text in shown[1:] if text)
    # Most resumes joined an answer in progress (the check is about those).
    assert mid_answer >= CHATS
