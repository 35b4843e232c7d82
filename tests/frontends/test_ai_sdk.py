"""The AI SDK's DefaultChatTransport, unchanged, against a live server: send, resume, stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.frontends.conftest import run_node
from tests.support.engines import ENGINES
from tests.support.server import RunningServer


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Everything here holds on one node (memory) and on the several-node engine (Redis)."""
    return str(request.param)


WORDS = " ".join(f"word{i}" for i in range(80))
SLOW = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                {"name": "slow", "backend": "echo", "options": {"delay_ms": 20}},
                {"name": "echo", "backend": "echo"},
            ],
        }
    ]
}


def api(server: RunningServer, project: str = "p1", agent: str = "slow") -> str:
    return f"{server.http}/api/ai-sdk/{project}/{agent}/chat"


async def saved(server: RunningServer, chat_id: str, agent: str = "slow") -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.http) as client:
        response = await client.get(f"/api/projects/p1/agents/{agent}/threads/{chat_id}/messages")
    response.raise_for_status()
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def body(chat_id: str, text: str, message_id: str = "m1") -> dict[str, Any]:
    return {
        "id": chat_id,
        "messages": [{"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
    }


async def test_transport_gets_the_exact_text_in_valid_chunks(
    server_factory: ServerFactory, node_packages: Path
) -> None:
    server = await server_factory(**SLOW)
    text = "안녕하세요 dari, one two  three\nfour"
    result = await run_node(
        "ai_sdk.mjs",
        {
            "mode": "send",
            "api": api(server, agent="echo"),
            "chatId": "c1",
            "text": text,
            "messageId": "u1",
        },
    )
    assert result["text"] == text
    types = [chunk["type"] for chunk in result["chunks"]]
    assert types[:2] == ["start", "start-step"] and types[-2:] == ["finish-step", "finish"]
    assert result["chunks"][0]["messageId"] == "u1-answer"
    assert result["chunks"][-1]["finishReason"] == "stop"
    history = await saved(server, "c1", "echo")
    assert [(m["role"], m["content"], m["status"]) for m in history] == [
        ("user", text, "complete"),
        ("assistant", text, "complete"),
    ]


async def test_cut_mid_answer_then_reconnect_yields_the_whole_answer(
    server_factory: ServerFactory, node_packages: Path
) -> None:
    server = await server_factory(**SLOW)
    result = await run_node(
        "ai_sdk.mjs",
        {
            "mode": "resume",
            "api": api(server),
            "chatId": "c2",
            "text": WORDS,
            "cutAfter": 5,
            "messageId": "u2",
        },
    )
    assert result["before"] and WORDS.startswith(result["before"]) and result["before"] != WORDS
    assert result["text"] == WORDS  # the resumed stream starts from the answer's start
    assert result["chunks"][0] == {
        "type": "start",
        "messageId": "u2-answer",
        "messageMetadata": {
            "requestId": "u2",
            "projectId": "p1",
            "agentName": "slow",
            "threadId": "c2",
        },
    }
    assert result["chunks"][-1]["type"] == "finish"
    history = await saved(server, "c2")
    assert [(m["role"], m["content"]) for m in history] == [("user", WORDS), ("assistant", WORDS)]


async def test_delete_stops_a_resumed_stream(
    server_factory: ServerFactory, node_packages: Path
) -> None:
    server = await server_factory(**SLOW)
    result = await run_node(
        "ai_sdk.mjs",
        {
            "mode": "stop",
            "api": api(server),
            "chatId": "c3",
            "text": WORDS,
            "cutAfter": 3,
            "stopAfter": 3,
            "messageId": "u3",
        },
    )
    assert result["deleteStatus"] == 200
    types = [chunk["type"] for chunk in result["chunks"]]
    assert types[-1] == "abort" and "finish" not in types
    history = await saved(server, "c3")
    answer = history[-1]
    assert answer["status"] == "cancelled"
    # The resumed stream began at the answer's start: it showed exactly what was saved.
    assert answer["content"] == result["text"]
    assert WORDS.startswith(answer["content"]) and answer["content"] != WORDS


async def test_resume_with_nothing_running_is_204(server_factory: ServerFactory) -> None:
    server = await server_factory(**SLOW)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{api(server)}/never-used/stream")).status_code == 204
        async with client.stream("POST", api(server, agent="echo"), json=body("c4", "hi")) as r:
            assert r.status_code == 200
            assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
            lines = [line async for line in r.aiter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        assert (await client.get(f"{api(server, agent='echo')}/c4/stream")).status_code == 204
        stop = await client.delete(f"{api(server, agent='echo')}/c4/stream")
        assert stop.status_code == 404 and stop.json()["error"]["code"] == "not_found"


async def test_a_message_sent_again_is_answered_once(server_factory: ServerFactory) -> None:
    server = await server_factory(**SLOW)
    async with httpx.AsyncClient() as client:
        streams = []
        for _ in range(2):
            async with client.stream(
                "POST", api(server, agent="echo"), json=body("c5", "once")
            ) as r:
                streams.append([line async for line in r.aiter_lines() if line])
    assert streams[0] == streams[1]  # the second shows the saved answer, not a new one
    history = await saved(server, "c5", "echo")
    assert [(m["role"], m["content"]) for m in history] == [("user", "once"), ("assistant", "once")]


@pytest.mark.parametrize(
    ("path", "payload", "status", "code"),
    [
        ("/api/ai-sdk/p1/nobody/chat", body("c6", "hi"), 404, "agent_not_found"),
        ("/api/ai-sdk/nowhere/slow/chat", body("c6", "hi"), 404, "project_not_found"),
        (
            "/api/ai-sdk/p1/slow/chat",
            {"id": "c6", "messages": [{"id": "a", "role": "assistant", "parts": []}]},
            400,
            "bad_request",
        ),
        ("/api/ai-sdk/p1/slow/chat", {"messages": []}, 400, "bad_request"),
        ("/api/ai-sdk/p1/slow/chat", body("x" * 129, "hi"), 400, "bad_request"),
    ],
)
async def test_refused_requests_get_an_http_error(
    server_factory: ServerFactory, path: str, payload: dict[str, Any], status: int, code: str
) -> None:
    server = await server_factory(**SLOW)
    async with httpx.AsyncClient(base_url=server.http) as client:
        response = await client.post(path, json=payload)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert not server.gateway.hub.clients  # nothing left attached
