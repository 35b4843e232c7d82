"""One chat seen at once through /ws/chat, the AI SDK stream and the AG-UI WebSocket (three tabs):
the same text in each, and one saved answer."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from ag_ui_validate.pytest_plugin import assert_valid_agui

from tests.conftest import ServerFactory
from tests.frontends.test_ag_ui import PROJECT, AgUiSocket, content_of
from tests.frontends.test_ai_sdk import WORDS, body, saved
from tests.support.client import WsClient
from tests.support.engines import ENGINES


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_one_answer_three_frontends(server_factory: ServerFactory) -> None:
    server = await server_factory(**PROJECT)
    ag_ui = await AgUiSocket.open(server, "slow", "?threadId=tabs")
    await ag_ui.until("RUN_FINISHED")  # the thread's (empty) history
    dari = await WsClient.open(server.ws("/ws/chat/tab-dari"))
    await dari.recv()
    await dari.send(
        {"type": "subscribe", "project_id": "p1", "agent_name": "slow", "thread_id": "tabs"}
    )
    await dari.until_type("subscribed")

    async def ai_sdk_tab() -> str:
        text = ""
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream(
                "POST", f"{server.http}/api/ai-sdk/p1/slow/chat", json=body("tabs", WORDS, "m1")
            ) as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    text += chunk.get("delta", "") if chunk["type"] == "text-delta" else ""
        return text

    from_ai_sdk, (from_dari, end), _ = await asyncio.gather(
        ai_sdk_tab(), dari.answer("m1", timeout=30), ag_ui.until("RUN_FINISHED", timeout=30)
    )
    assert from_ai_sdk == from_dari == content_of(ag_ui.events, "m1-answer") == WORDS
    assert end["finish_reason"] == "stop"
    assert [e["runId"] for e in ag_ui.events if e["type"] == "RUN_STARTED"][-1] == "m1"
    assert_valid_agui(ag_ui.events, max_warnings=0)
    assert [(m["role"], m["content"]) for m in await saved(server, "tabs")] == [
        ("user", WORDS),
        ("assistant", WORDS),
    ]
    await dari.close()
    await ag_ui.connection.close()
