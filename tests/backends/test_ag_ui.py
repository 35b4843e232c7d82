"""The ``ag-ui`` backend against a real AG-UI agent service (FastAPI + ag-ui-protocol's encoder)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from ag_ui.core import AssistantMessage, UserMessage

from dari.agents.ag_ui import RemoteRun, thread_of
from dari.agents.base import AgentRequest, Reasoning, Step, Usage
from dari.protocol.errors import AgentFailed
from tests.backends.ag_ui_service import DROP_AFTER, THOUGHT, AgUiService
from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.server import RunningServer


@pytest.fixture
async def service() -> AsyncIterator[AgUiService]:
    async with AgUiService() as running:
        yield running


@pytest.fixture
async def server(server_factory: ServerFactory, service: AgUiService) -> RunningServer:
    options = {"url": service.url, "read_timeout_s": 0.5, "headers": {"x-team": "dari"}}
    return await server_factory(
        projects=[{"id": "p1", "agents": [{"name": "remote", "backend": "ag-ui",
                                            "options": options}]}]
    )


async def ask(server: RunningServer, text: str, rid: str, thread: str = "main") -> WsClient:
    client = await WsClient.open(server.ws(f"/ws/chat/c-{rid}"))
    await client.recv()
    await client.chat(text, agent="remote", project="p1", id=rid, thread_id=thread)
    return client


async def saved(server: RunningServer, thread: str = "main") -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.http) as client:
        response = await client.get(f"/api/projects/p1/agents/remote/threads/{thread}/messages")
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def test_the_remote_agents_text_and_steps_stream_through(
    server: RunningServer, service: AgUiService
) -> None:
    client = await ask(server, "tool 안녕하세요,  remote  agent", "r1")
    text, end = await client.answer("r1")
    assert text == "tool 안녕하세요,  remote  agent" and end["finish_reason"] == "stop"
    steps = [(f["name"], f["state"]) for f in client.frames if f["type"] == "step"]
    assert steps == [("think", "started"), ("search", "started"), ("search", "finished"),
                     ("think", "finished")]
    sent = service.inputs[-1]
    assert sent.run_id == "r1" and service.headers[-1]["x-team"] == "dari"
    assert [type(m) for m in sent.messages] == [UserMessage]

    # The second run carries the conversation so far, under the same remote thread.
    await client.chat("second", agent="remote", project="p1", id="r2")
    await client.answer("r2")
    second = service.inputs[-1]
    assert second.thread_id == sent.thread_id
    assert [(type(m), m.content) for m in second.messages] == [
        (UserMessage, "tool 안녕하세요,  remote  agent"),
        (AssistantMessage, "tool 안녕하세요,  remote  agent"),
        (UserMessage, "second"),
    ]
    assert [(m["role"], m["status"]) for m in await saved(server)][-1] == ("assistant", "complete")
    await client.close()


async def test_reasoning_and_usage_come_through(server: RunningServer) -> None:
    client = await ask(server, "reason about it", "r1", thread="reason")
    text, end = await client.answer("r1")
    assert text == "reason about it"
    reasoning = [f["content"] for f in client.frames if f["type"] == "reasoning"]
    assert "".join(reasoning) == "".join(THOUGHT)
    assert end["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                            "reasoning_tokens": 3}
    await client.close()


@pytest.mark.parametrize(
    ("text", "partial", "message"),
    [
        ("drop the line now please", "drop the line ", "connection to the AG-UI agent broke"),
        ("truncate it here", "truncate it here", "ended before RUN_FINISHED"),
        ("silent after three words", "silent after three ", "did not answer"),
        ("fail now", "", "the AG-UI agent failed: the model is down"),
    ],
)
async def test_a_remote_that_fails_or_drops_fails_the_answer_cleanly(
    server: RunningServer, text: str, partial: str, message: str
) -> None:
    client = await ask(server, text, "bad", thread=text.split()[0])
    error = await client.until_type("error", request_id="bad")
    said, end = await client.answer("bad")
    assert error["code"] == "agent_failed" and message in error["message"]
    assert end["finish_reason"] == "error"
    assert said == partial
    assert len(partial.split()) in (0, DROP_AFTER, len(text.split()))
    answer = (await saved(server, text.split()[0]))[-1]
    assert (answer["role"], answer["status"], answer["content"]) == ("assistant", "failed", partial)
    # The gateway stays usable: the next answer on the same agent streams normally.
    await client.chat("all good", agent="remote", project="p1", id="good")
    assert (await client.answer("good"))[0] == "all good"
    await client.close()


async def test_an_unreachable_remote_fails_with_agent_failed(server_factory: ServerFactory) -> None:
    server = await server_factory(
        projects=[{"id": "p1", "agents": [{"name": "remote", "backend": "ag-ui", "options": {
            "url": "http://127.0.0.1:9/agent", "connect_timeout_s": 1}}]}]
    )
    client = await ask(server, "hello", "r1")
    error = await client.until_type("error", request_id="r1")
    assert error["code"] == "agent_failed" and "broke" in error["message"]
    await client.close()


def test_events_map_to_dari_events() -> None:
    run = RemoteRun()
    events = [
        b'{"type":"RUN_STARTED","threadId":"t","runId":"r"}',
        b'{"type":"STEP_STARTED","stepName":"plan"}',
        b'{"type":"TEXT_MESSAGE_START","messageId":"m","role":"assistant"}',
        b'{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"Hi"}',
        b'{"type":"TEXT_MESSAGE_CHUNK","messageId":"m","delta":" there"}',
        b'{"type":"STATE_SNAPSHOT","snapshot":{"x":1}}',
        b'{"type":"REASONING_MESSAGE_CONTENT","messageId":"x","delta":"hmm"}',
        b'{"type":"STEP_FINISHED","stepName":"plan"}',
        b'{"type":"RUN_FINISHED","threadId":"t","runId":"r","usage":['
        b'{"model":"a","inputTokens":2,"outputTokens":3},'
        b'{"model":"b","inputTokens":1,"outputTokens":1,"totalTokens":2,"reasoningTokens":1}]}',
    ]
    out = [event for data in events for event in run.add(data)]
    assert out == [Step("plan", "plan", "started"), "Hi", " there", Reasoning("hmm"),
                   Step("plan", "plan", "finished"), Usage(3, 4, 7, 1)]
    assert run.finished
    with pytest.raises(AgentFailed):
        RemoteRun().add(b'{"type":"NOT_AN_EVENT"}')
    with pytest.raises(AgentFailed, match="quota"):
        RemoteRun().add(b'{"type":"RUN_ERROR","message":"quota"}')


def test_the_remote_thread_is_stable_per_conversation_and_user() -> None:
    def request(user: str, thread: str) -> AgentRequest:
        return AgentRequest("m", [], [], "p", "a", thread, "r", user)

    assert thread_of(request("u1", "main")) == thread_of(request("u1", "main"))
    assert thread_of(request("u1", "main")) != thread_of(request("u2", "main"))
    assert "u1" not in thread_of(request("u1", "main"))
