"""Reasoning, usage and the model's finish reason, live through both frontends."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from ag_ui_validate.pytest_plugin import assert_valid_agui

from tests.conftest import ServerFactory
from tests.frontends.agents import THOUGHT, USAGE
from tests.frontends.test_ag_ui import checked, content_of, run_input
from tests.frontends.test_ai_sdk import body
from tests.support.engines import ENGINES

THINKER = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                {
                    "name": "thinker",
                    "backend": "python",
                    "options": {"entrypoint": "tests.frontends.agents:thinker"},
                }
            ],
        }
    ]
}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def sse(url: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client, client.stream("POST", url, json=payload) as r:
        assert r.status_code == 200
        return [
            json.loads(line[6:]) async for line in r.aiter_lines() if line.startswith("data: {")
        ]


async def test_ai_sdk_stream_carries_reasoning_usage_and_finish_reason(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**THINKER)
    chunks = await sse(f"{server.http}/api/ai-sdk/p1/thinker/chat", body("c1", "안녕"))
    reasoning = "".join(c["delta"] for c in chunks if c["type"] == "reasoning-delta")
    text = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    assert (reasoning, text) == ("".join(THOUGHT), "안녕")
    kinds = [c["type"] for c in chunks]
    assert kinds.index("reasoning-end") < kinds.index("text-start")
    finish = chunks[-1]
    assert finish["finishReason"] == "length"
    assert finish["messageMetadata"]["usage"] == {
        "inputTokens": USAGE.prompt_tokens,
        "outputTokens": USAGE.completion_tokens,
        "totalTokens": USAGE.total_tokens,
        "reasoningTokens": USAGE.reasoning_tokens,
    }


async def test_ag_ui_run_carries_reasoning_and_usage(server_factory: ServerFactory) -> None:
    server = await server_factory(**THINKER)
    events = [
        checked(e)
        for e in await sse(f"{server.http}/api/ag-ui/p1/thinker", run_input("t1", "run-1", "hi"))
    ]
    reasoning = "".join(e["delta"] for e in events if e["type"] == "REASONING_MESSAGE_CONTENT")
    assert reasoning == "".join(THOUGHT) and content_of(events, "run-1-answer") == "hi"
    finished = events[-1]
    assert finished["type"] == "RUN_FINISHED"
    assert finished["result"] == {"requestId": "run-1", "finishReason": "length"}
    assert finished["usage"] == [
        {"inputTokens": 11, "outputTokens": 9, "totalTokens": 20, "reasoningTokens": 4}
    ]
    assert_valid_agui(events, max_warnings=0)
