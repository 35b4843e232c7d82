"""Agents that ask (interrupts), on both engines: a real LangGraph graph that calls
``interrupt()`` and a Python agent that calls ``ctx.interrupt``. The question reaches every
subscriber and every late one (``snapshot``), is saved with the paused answer, is answered once
(from another tab, and on Redis from another node), and the same answer goes on to the end; a
cancel ends it, and so does the agent's ``interrupt_timeout_s``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dari.client import DariClient
from tests.backends.graphs import APPROVAL_DRAFT, APPROVAL_QUESTION
from tests.conftest import ServerFactory
from tests.support.client import Frame, WsClient
from tests.support.engines import ENGINES
from tests.support.server import RunningServer


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


AGENTS: list[dict[str, Any]] = [
    {"name": "approver", "backend": "langgraph",
     "options": {"entrypoint": "tests.backends.graphs:approval"}},
    {"name": "asker", "backend": "python",
     "options": {"entrypoint": "tests.support.agents:asking"}},
    {"name": "hasty", "backend": "python", "interrupt_timeout_s": 0.3,
     "options": {"entrypoint": "tests.support.agents:asking"}},
    {"name": "echo", "backend": "echo"},
]  # fmt: skip


@pytest.fixture
async def nodes(server_factory: ServerFactory, engine: str) -> tuple[RunningServer, RunningServer]:
    """Two nodes on Redis (the answer runs on the first, the answer to its question may come
    through the second); one node, twice, in memory."""
    first = await server_factory(projects=[{"id": "p1", "agents": AGENTS}])
    if engine == "memory":
        return first, first
    return first, await server_factory(projects=[{"id": "p1", "agents": AGENTS}])


async def connect(server: RunningServer, client_id: str) -> WsClient:
    client = await WsClient.open(server.ws(f"/ws/chat/{client_id}"))
    assert (await client.recv())["type"] == "welcome"
    return client


async def saved(server: RunningServer, agent: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get(f"/api/projects/p1/agents/{agent}/threads/main/messages")
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def text_of(client: WsClient, request_id: str) -> str:
    return "".join(
        f["content"]
        for f in client.frames
        if f["type"] == "response" and f.get("request_id") == request_id
    )


def question_fields(frame: Frame) -> dict[str, Any]:
    return {k: frame[k] for k in ("interrupt_id", "payload", "expires_at", "state")}


async def test_a_graph_asks_every_tab_sees_it_one_answers_and_the_answer_goes_on(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    first, second = nodes
    asker = await connect(first, "tab-1")
    await asker.chat("write the report", agent="approver", project="p1", id="a1")
    asked = await asker.until_type("interrupt", request_id="a1")
    assert asked["payload"] == APPROVAL_QUESTION and asked["state"] == "pending"
    assert asked["interrupt_id"].startswith("i-") and asked["expires_at"]
    assert text_of(asker, "a1") == APPROVAL_DRAFT

    # Paused: saved with its question, status interrupted.
    paused = (await saved(first, "approver"))[1]
    assert paused["status"] == "interrupted" and paused["content"] == APPROVAL_DRAFT
    assert paused["interrupts"] == [question_fields(asked)]

    # A second tab (on another node with Redis) subscribes: its snapshot holds the question.
    other = await connect(second, "tab-2")
    await other.send({"type": "subscribe", "project_id": "p1", "agent_name": "approver"})
    snapshot = await other.until_type("snapshot", request_id="a1")
    assert snapshot["content"] == APPROVAL_DRAFT
    assert snapshot["interrupts"] == [question_fields(asked)]

    # The second tab answers; the same answer goes on, seen by both tabs.
    await other.send({"type": "resume", "interrupt_id": asked["interrupt_id"], "value": "yes"})
    for tab in (asker, other):
        answered = await tab.until_type("interrupt", request_id="a1", state="answered")
        assert answered["value"] == "yes" and answered["interrupt_id"] == asked["interrupt_id"]
        end = await tab.until_type("end", request_id="a1")
        assert end["finish_reason"] == "stop"
    assert text_of(asker, "a1") == f"{APPROVAL_DRAFT} Sent: yes."
    assert text_of(other, "a1") == " Sent: yes."  # the rest after its snapshot
    assert [f["type"] for f in asker.frames].count("start") == 1  # one answer, not two

    # Answering again (the first tab, on the first node) is refused, clearly.
    await asker.send({"type": "resume", "interrupt_id": asked["interrupt_id"], "value": "no"})
    refused = await asker.until_type("error")
    assert refused["code"] == "already_answered"
    assert refused["interrupt_id"] == asked["interrupt_id"]

    history = await saved(second, "approver")
    assert [(m["role"], m["content"], m["status"]) for m in history] == [
        ("user", "write the report", "complete"),
        ("assistant", f"{APPROVAL_DRAFT} Sent: yes.", "complete"),
    ]
    assert history[1]["interrupts"] == [{**question_fields(asked), "state": "answered", "value": "yes"}]
    await asker.close()
    await other.close()


async def test_a_python_agent_asks_through_its_context_and_later_chats_wait(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    first, second = nodes
    client = await connect(first, "py-1")
    await client.chat("pick one", agent="asker", project="p1", id="p1")
    asked = await client.until_type("interrupt", request_id="p1")
    assert asked["payload"] == {"question": "Which colour?", "schema": {"type": "string"}}
    # A chat sent meanwhile waits behind the paused answer: the conversation is held.
    await client.chat("and then?", agent="asker", project="p1", id="p2")
    ack = await client.until_type("ack", request_id="p2")
    assert ack["queued"] == 1
    resumer = await connect(second, "py-2")
    await resumer.send({"type": "resume", "interrupt_id": asked["interrupt_id"], "value": "초록"})
    text, end = await client.answer("p1")
    assert (text, end["finish_reason"]) == ("Let me check. You picked 초록.", "stop")
    # Then the next chat runs, and asks its own question.
    second_question = await client.until_type("interrupt", request_id="p2")
    assert second_question["interrupt_id"] != asked["interrupt_id"]
    await client.send({"type": "cancel", "request_id": "p2"})
    await client.until_type("end", request_id="p2")
    await client.close()
    await resumer.close()


async def test_cancel_ends_a_paused_answer_and_its_question(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    first, second = nodes
    client = await connect(first, "cancel-1")
    await client.chat("write the report", agent="approver", project="p1", id="c1")
    asked = await client.until_type("interrupt", request_id="c1")
    canceller = await connect(second, "cancel-2")
    await canceller.send({"type": "cancel", "project_id": "p1", "agent_name": "approver"})
    closed = await client.until_type("interrupt", request_id="c1", state="cancelled")
    end = await client.until_type("end", request_id="c1")
    assert end["finish_reason"] == "cancelled" and closed["interrupt_id"] == asked["interrupt_id"]

    await canceller.send({"type": "resume", "interrupt_id": asked["interrupt_id"], "value": "yes"})
    refused = await canceller.until_type("error")
    assert refused["code"] == "not_found" and "cancelled" in refused["message"]
    answer = (await saved(first, "approver"))[1]
    assert answer["status"] == "cancelled" and answer["content"] == APPROVAL_DRAFT
    assert answer["interrupts"][0]["state"] == "cancelled"
    # The conversation is free again.
    await client.chat("again", agent="approver", project="p1", id="c2")
    await client.until_type("interrupt", request_id="c2")
    await client.close()
    await canceller.close()


async def test_an_unanswered_question_expires_and_ends_the_answer(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    first, _ = nodes
    client = await connect(first, "late-1")
    await client.chat("pick one", agent="hasty", project="p1", id="h1")
    asked = await client.until_type("interrupt", request_id="h1")
    error = await client.until_type("error", request_id="h1")
    end = await client.until_type("end", request_id="h1")
    assert error["code"] == "interrupt_expired" and "0.3 s" in error["message"]
    assert end["finish_reason"] == "error"
    expired = [f for f in client.frames if f["type"] == "interrupt" and f["state"] == "expired"]
    assert [f["interrupt_id"] for f in expired] == [asked["interrupt_id"]]
    await client.send({"type": "resume", "interrupt_id": asked["interrupt_id"], "value": "red"})
    refused = await client.until_type("error", interrupt_id=asked["interrupt_id"])
    assert refused["code"] == "not_found" and "expired" in refused["message"]
    answer = (await saved(first, "hasty"))[1]
    assert (answer["status"], answer["content"]) == ("failed", "Let me check. ")
    await client.close()


async def test_an_unknown_question_and_a_malformed_resume_are_refused(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    first, _ = nodes
    client = await connect(first, "odd")
    await client.send({"type": "resume", "interrupt_id": "i-nothing", "value": 1})
    unknown = await client.until_type("error")
    assert (unknown["code"], unknown["interrupt_id"]) == ("not_found", "i-nothing")
    await client.send({"type": "resume", "value": 1})
    assert (await client.until_type("error"))["code"] == "bad_request"
    await client.close()


async def test_the_python_client_answers_a_question(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    first, _ = nodes
    async with DariClient(f"ws://127.0.0.1:{first.port}", "py-client") as client:
        request_id = await client.chat("pick one", agent_name="asker", project_id="p1")
        async for frame in client.frames():
            if frame.get("type") == "interrupt" and frame.get("request_id") == request_id:
                await client.resume(frame["interrupt_id"], "보라")
                break
        answer = await client.answer(request_id, timeout=10)
    assert (answer.text, answer.finish_reason) == ("Let me check. You picked 보라.", "stop")
