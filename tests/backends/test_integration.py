"""Both backends behind a real server, over real WebSockets, in both dialects.

The ``openai`` agent talks to the local fake chat-completions server (which, unless scripted,
answers with the user's words); the ``langgraph`` agent runs the test graphs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.backends.fake_openai import FakeOpenAI, Reply, ToolCall
from tests.backends.graphs import SUPERVISOR_ANSWER
from tests.conftest import ServerFactory
from tests.support.client import Frame, WsClient
from tests.support.server import RunningServer

LABELS = {"analyst": "데이터 분석 중...", "writer": "보고서 작성 중..."}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def server(server_factory: ServerFactory, upstream: FakeOpenAI) -> RunningServer:
    openai_options = {"base_url": upstream.base_url, "model": "fake-model", "timeout_s": 0.5}
    agents: list[dict[str, Any]] = [
        {"name": "gpt", "backend": "openai", "options": openai_options},
        {
            "name": "delegator",
            "backend": "openai",
            "options": {**openai_options, "delegates": ["researcher"]},
        },
        {
            "name": "team",
            "backend": "langgraph",
            "options": {"entrypoint": "tests.backends.graphs:supervisor", "step_labels": LABELS},
        },
        {
            "name": "broken",
            "backend": "langgraph",
            "options": {"entrypoint": "tests.backends.graphs:failing"},
        },
        {"name": "researcher", "backend": "echo", "description": "Repeats the task"},
    ]
    return await server_factory(
        projects=[{"id": "p1", "agents": agents}], default_project="p1", default_agent="gpt"
    )


async def primary(server: RunningServer, name: str) -> WsClient:
    client = await WsClient.open(server.ws(f"/ws/chat/{name}"))
    assert (await client.recv())["type"] == "welcome"
    return client


async def saved(server: RunningServer, agent: str, thread: str = "main") -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get(f"/api/projects/p1/agents/{agent}/threads/{thread}/messages")
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def of(client: WsClient, request_id: str, kind: str) -> list[Frame]:
    return [f for f in client.frames if f.get("request_id") == request_id and f["type"] == kind]


async def first_of_each(client: WsClient, *wanted: tuple[str, str | None]) -> list[Frame]:
    """The first frame of each ``(type, request_id or None for any)``, in whatever order they
    arrive: among the frames already received, and those still to come."""

    def matches(frame: Frame, kind: str, request_id: str | None) -> bool:
        return frame.get("type") == kind and request_id in (None, frame.get("request_id"))

    def found() -> list[Frame | None]:
        return [next((f for f in client.frames if matches(f, *w)), None) for w in wanted]

    if None in found():
        await client.until(lambda _: None not in found())
    return [frame for frame in found() if frame is not None]


# --- the primary dialect ------------------------------------------------------------------


async def test_openai_agent_streams_and_saves_what_it_streamed(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    client = await primary(server, "oa")
    # Spaced pieces go out one frame each; pieces that arrive together may share a frame.
    upstream.script(Reply(pieces=["hello ", "there ", "world"], delay_s=0.02))
    await client.chat("hello there world", agent="gpt", project="p1", id="m1")
    text, end = await client.answer("m1")
    await client.chat("and again", agent="gpt", project="p1", id="m2")
    second, _ = await client.answer("m2")

    assert text == "hello there world" and end["finish_reason"] == "stop"
    assert [f["content"] for f in of(client, "m1", "response")] == ["hello ", "there ", "world"]
    assert second == "and again"
    # The gateway's history reached the model on the second chat.
    assert upstream.requests[1]["messages"] == [
        {"role": "user", "content": "hello there world"},
        {"role": "assistant", "content": "hello there world"},
        {"role": "user", "content": "and again"},
    ]
    assert [(m["role"], m["content"], m["status"]) for m in await saved(server, "gpt")] == [
        ("user", "hello there world", "complete"),
        ("assistant", text, "complete"),
        ("user", "and again", "complete"),
        ("assistant", second, "complete"),
    ]
    await client.close()


async def test_openai_agent_gets_images_as_image_parts(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    client = await primary(server, "img")
    await client.chat("what is this", agent="gpt", project="p1", id="i1", images=[image])
    text, end = await client.answer("i1")
    assert end["finish_reason"] == "stop" and text == "what is this"
    assert upstream.requests[0]["messages"][-1]["content"] == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": image}},
    ]
    await client.close()


async def test_langgraph_supervisor_streams_steps_and_pieces(server: RunningServer) -> None:
    client = await primary(server, "lg")
    await client.chat("분기 보고서", agent="team", project="p1", id="g1")
    text, end = await client.answer("g1")

    assert text == SUPERVISOR_ANSWER and end["finish_reason"] == "stop"
    step_frames = [(f["name"], f["content"], f["state"]) for f in of(client, "g1", "step")]
    assert [(name, state) for name, _, state in step_frames if name != "supervisor"] == [
        ("analyst", "started"),
        ("lookup_sales", "started"),
        ("lookup_sales", "finished"),
        ("analyst", "finished"),
        ("writer", "started"),
        ("writer", "finished"),
    ]
    assert ("analyst", "데이터 분석 중...", "started") in step_frames
    assert step_frames.count(("supervisor", "supervisor", "started")) == 3
    answer = (await saved(server, "team"))[-1]
    assert (answer["content"], answer["status"]) == (text, "complete")
    await client.close()


@pytest.mark.parametrize(
    ("reply", "message", "partial"),
    [
        (Reply(status=429), "upstream returned 429 Too Many Requests", ""),
        (Reply(status=401), "upstream returned 401 Unauthorized", ""),
        (Reply(status=500), "upstream returned 500 Internal Server Error", ""),
        (
            Reply(pieces=["half ", "an ", "answer"], break_after=2),
            "upstream connection broke off mid-answer",
            "half an ",
        ),
        (
            Reply(pieces=["slow ", "answer"], stall_after=1),
            "upstream timed out (no data for 0.5s)",
            "slow ",
        ),
    ],
)
async def test_upstream_failure_is_agent_failed_then_end_and_the_next_chat_works(
    server: RunningServer, upstream: FakeOpenAI, reply: Reply, message: str, partial: str
) -> None:
    upstream.script(reply)
    client = await primary(server, "fail")
    await client.chat("first", agent="gpt", project="p1", id="f1")
    text, end = await client.answer("f1")

    errors = of(client, "f1", "error")
    assert [(e["code"], e["message"]) for e in errors] == [("agent_failed", message)]
    assert client.frames.index(errors[0]) < client.frames.index(end)
    assert end["finish_reason"] == "error" and text == partial
    failed = (await saved(server, "gpt"))[-1]
    assert (failed["role"], failed["content"], failed["status"]) == ("assistant", partial, "failed")

    await client.chat("second try", agent="gpt", project="p1", id="f2")
    text, end = await client.answer("f2")
    assert (text, end["finish_reason"]) == ("second try", "stop")
    await client.close()


async def test_failing_graph_is_agent_failed(server: RunningServer) -> None:
    client = await primary(server, "gf")
    await client.chat("boom", agent="broken", project="p1", id="b1")
    _, end = await client.answer("b1")
    [error] = of(client, "b1", "error")
    assert error["code"] == "agent_failed" and end["finish_reason"] == "error"
    await client.close()


async def test_cancel_closes_the_upstream_request(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=[f"w{i} " for i in range(200)], delay_s=0.02))
    client = await primary(server, "cx")
    await client.chat("long one", agent="gpt", project="p1", id="c1")
    await client.until(lambda f: f.get("type") == "response" and f.get("request_id") == "c1")
    await client.send({"type": "cancel", "request_id": "c1"})
    text, end = await client.answer("c1")

    assert end["finish_reason"] == "cancelled" and 0 < len(text) < 200 * 3
    await upstream.wait_hangup()
    cancelled = (await saved(server, "gpt"))[-1]
    assert (cancelled["content"], cancelled["status"]) == (text, "cancelled")
    await client.close()


# Paced, the delegating answer ends well after the delegated echo task has reported.
@pytest.mark.parametrize("piece_delay_s", [0.0, 0.3], ids=["either_order", "report_first"])
async def test_openai_delegation_reports_back(
    server: RunningServer, upstream: FakeOpenAI, piece_delay_s: float
) -> None:
    upstream.script(
        Reply(
            tool_calls=[
                ToolCall("delegate_task", {"agent_name": "researcher", "task": "find facts"})
            ]
        ),
        Reply(pieces=["The researcher ", "is on it."], delay_s=piece_delay_s),
    )
    client = await primary(server, "dg")
    await client.chat("please research", agent="delegator", project="p1", id="d1")
    # The delegated task may finish (auto_report) before or after the delegating answer's end.
    end, report = await first_of_each(client, ("end", "d1"), ("auto_report", None))
    text = "".join(f["content"] for f in of(client, "d1", "response"))

    assert (text, end["finish_reason"]) == ("The researcher is on it.", "stop")
    steps = [(f["name"], f["state"]) for f in of(client, "d1", "step")]
    assert steps == [("delegate_task", "started"), ("delegate_task", "finished")]
    task_id = report["task_id"]
    assert (report["agent_name"], report["content"]) == ("researcher", "find facts")
    tool_result = json.loads(upstream.requests[1]["messages"][-1]["content"])
    assert tool_result == {"status": "delegated", "task_id": task_id, "agent_name": "researcher"}

    # The report is part of the conversation now; the next request carries it.
    await client.chat("thanks", agent="delegator", project="p1", id="d2")
    await client.answer("d2")
    assert {
        "role": "assistant",
        "content": "[Report from a delegated task]\nfind facts",
    } in upstream.requests[2]["messages"]
    await client.close()


# --- the second seed's dialect ------------------------------------------------------------


async def thread_chat(server: RunningServer, thread: str, frame: dict[str, Any]) -> list[Frame]:
    """Send one dialect message; return its events up to and including ``done``."""
    client = await WsClient.open(server.ws(f"/api/chat/ws/{thread}"))
    await client.send(frame)
    await client.until(lambda f: f.get("event_type") == "done")
    await client.close()
    return client.frames


async def test_second_dialect_openai_tokens_then_done(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=["tokens ", "from ", "a ", "model"], delay_s=0.02))
    events = await thread_chat(server, "th-1", {"message": "tokens from a model"})

    tokens = [e["data"]["token"] for e in events if e["event_type"] == "token"]
    assert tokens == ["tokens ", "from ", "a ", "model"]
    assert events[-1]["event_type"] == "done" and events[-1]["data"]["finish_reason"] == "stop"
    assert [m["content"] for m in await saved(server, "gpt", "th-1")] == [
        "tokens from a model",
        "".join(tokens),
    ]


async def test_second_dialect_langgraph_steps_tokens_done(server: RunningServer) -> None:
    events = await thread_chat(server, "th-2", {"message": "report", "agent_name": "team"})

    tokens = "".join(e["data"]["token"] for e in events if e["event_type"] == "token")
    steps = [e["data"] for e in events if e["event_type"] == "step"]
    assert tokens == SUPERVISOR_ANSWER
    assert {"name": "writer", "content": "보고서 작성 중...", "state": "started"} in steps
    assert events[-1]["data"]["finish_reason"] == "stop"
    assert (await saved(server, "team", "th-2"))[-1]["content"] == tokens


async def test_second_dialect_upstream_failure_then_recovery(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(status=503))
    events = await thread_chat(server, "th-3", {"message": "hello"})
    assert [e["event_type"] for e in events] == ["error", "done"]
    assert events[0]["data"] == {
        "code": "agent_failed",
        "message": "upstream returned 503 Service Unavailable",
    }
    assert events[1]["data"]["finish_reason"] == "error"

    events = await thread_chat(server, "th-3", {"message": "hello again"})
    assert (
        "".join(e["data"]["token"] for e in events if e["event_type"] == "token") == "hello again"
    )
    assert events[-1]["data"]["finish_reason"] == "stop"
