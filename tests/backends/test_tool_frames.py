"""Tool calls as ``tool`` frames, from the OpenAI backend (against the local chat-completions
server) and from a real LangGraph graph, on both engines: live, in a ``snapshot`` taken while
the answer runs, on resume, and saved in history."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.backends.fake_openai import FakeOpenAI, Reply, ToolCall
from tests.conftest import ServerFactory
from tests.support.client import Frame, WsClient
from tests.support.engines import ENGINES
from tests.support.server import RunningServer

DELEGATION = {"agent_name": "researcher", "task": "find facts about 다리"}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def server(server_factory: ServerFactory, upstream: FakeOpenAI) -> RunningServer:
    options = {"base_url": upstream.base_url, "model": "fake", "timeout_s": 5}
    agents: list[dict[str, Any]] = [
        {"name": "delegator", "backend": "openai", "options": {**options, "delegates": ["researcher"]}},
        {"name": "team", "backend": "langgraph", "options": {"entrypoint": "tests.backends.graphs:supervisor"}},
        {"name": "researcher", "backend": "echo"},
    ]  # fmt: skip
    return await server_factory(projects=[{"id": "p1", "agents": agents}])


async def connect(server: RunningServer, client_id: str, query: str = "") -> WsClient:
    client = await WsClient.open(server.ws(f"/ws/chat/{client_id}{query}"))
    assert (await client.recv())["type"] == "welcome"
    return client


def tools(frames: list[Frame], request_id: str) -> list[Frame]:
    return [f for f in frames if f["type"] == "tool" and f.get("request_id") == request_id]


async def saved(server: RunningServer, agent: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get(f"/api/projects/p1/agents/{agent}/threads/main/messages")
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def test_openai_tool_calls_stream_their_arguments_then_their_results(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    upstream.script(
        Reply(
            pieces=["Let me ask. "],
            tool_calls=[
                ToolCall("delegate_task", DELEGATION, id="call_a", fragments=3),
                ToolCall("search_web", {"q": "x"}, id="call_b", fragments=1),
            ],
        ),
        # Slow enough that a second client subscribes while the answer still runs.
        Reply(pieces=["Handed ", "over."], delay_s=0.4),
    )
    client = await connect(server, "tools-live")
    await client.chat("research please", agent="delegator", project="p1", id="t1")
    finished = await client.until_type("tool", tool_call_id="call_a", state="finished")

    # A second tab subscribes mid-answer: its snapshot holds both calls as they stand now.
    other = await connect(server, "tools-late")
    await other.send({"type": "subscribe", "project_id": "p1", "agent_name": "delegator"})
    snapshot = await other.until_type("snapshot", request_id="t1")
    text, end = await client.answer("t1")
    await other.until_type("end", request_id="t1")

    arguments = json.dumps(DELEGATION, ensure_ascii=False)
    calls_a = [f for f in tools(client.frames, "t1") if f["tool_call_id"] == "call_a"]
    assert [f["state"] for f in calls_a] == ["started", "arguments", "arguments", "arguments", "finished"]
    assert all(f["name"] == "delegate_task" for f in calls_a)
    # Each frame carries the arguments written so far, and what it added.
    assert [f["arguments"] for f in calls_a][-1] == arguments
    pieces = [f["arguments_delta"] for f in calls_a if f["state"] == "arguments"]
    assert "".join(pieces) == arguments
    assert all(
        later["arguments"].startswith(earlier["arguments"])
        for earlier, later in itertools.pairwise(calls_a)
    )
    task_id = finished["result"]["task_id"]
    assert finished["result"] == {"status": "delegated", "task_id": task_id, "agent_name": "researcher"}
    failed = tools(client.frames, "t1")[-1]
    assert (failed["tool_call_id"], failed["state"], failed["name"]) == ("call_b", "failed", "search_web")
    assert failed["error"] == "unknown tool 'search_web'" and failed["arguments"] == '{"q": "x"}'
    assert (text, end["finish_reason"]) == ("Let me ask. Handed over.", "stop")

    latest = {"tool_call_id": "call_a", "name": "delegate_task", "state": "finished",
              "arguments": arguments, "result": finished["result"]}  # fmt: skip
    failed_state = {k: failed[k] for k in ("tool_call_id", "name", "state", "arguments", "error")}
    assert snapshot["tools"] == [latest, failed_state]
    assert snapshot["interrupts"] == [] and snapshot["content"] == "Let me ask. "
    # The second tab got the rest live after its snapshot: the text, no tool frame twice.
    assert "".join(f["content"] for f in other.frames if f["type"] == "response") == "Handed over."

    answer = (await saved(server, "delegator"))[1]
    assert answer["tools"] == [latest, failed_state] and answer["content"] == text
    await client.close()
    await other.close()


async def test_langgraph_tool_calls_are_frames_live_on_resume_and_in_history(
    server: RunningServer,
) -> None:
    client = await connect(server, "lg-tools")
    await client.chat("분기 보고서", agent="team", project="p1", id="g1")
    await client.answer("g1")
    calls = tools(client.frames, "g1")
    assert [(f["name"], f["state"]) for f in calls] == [
        ("lookup_sales", "started"),
        ("lookup_sales", "finished"),
    ]
    call_id = calls[0]["tool_call_id"]
    assert calls[1]["tool_call_id"] == call_id and call_id
    assert json.loads(calls[0]["arguments"]) == {"quarter": "Q3"}
    assert calls[1]["result"] == "Q3: +12%" and calls[1]["arguments"] == calls[0]["arguments"]
    # The tool is still a step too, for clients that know only steps.
    steps = [f["name"] for f in client.frames if f["type"] == "step" and f["request_id"] == "g1"]
    assert "lookup_sales" in steps
    await client.close()

    # Resuming from before the answer replays the same tool frames.
    start = next(f["seq"] for f in client.frames if f["type"] == "ack")
    again = await WsClient.open(server.ws(f"/ws/chat/lg-tools?last_seq={start}"))
    await again.until_type("end", request_id="g1")
    assert tools(again.frames, "g1") == calls
    await again.close()

    answer = (await saved(server, "team"))[1]
    assert answer["tools"] == [{k: v for k, v in calls[1].items() if k not in FRAME_ONLY}]


FRAME_ONLY = {"type", "seq", "request_id", "project_id", "agent_name", "thread_id"}
