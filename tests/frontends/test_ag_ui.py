"""AG-UI against a live server: @ag-ui/client's HttpAgent unchanged, the SSE events validated by
the ag-ui-protocol models and the client's own verifier, and the WebSocket binding's reconnect."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from ag_ui.core import Event
from ag_ui_validate.pytest_plugin import assert_valid_agui
from pydantic import TypeAdapter
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ServerFactory
from tests.frontends.conftest import run_node
from tests.frontends.test_ai_sdk import SLOW, WORDS, saved
from tests.support.engines import ENGINES
from tests.support.server import RunningServer


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Everything here holds on one node (memory) and on the several-node engine (Redis)."""
    return str(request.param)


EVENTS: TypeAdapter[Any] = TypeAdapter(Event)
PROJECT = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                *SLOW["projects"][0]["agents"],
                {
                    "name": "stepper",
                    "backend": "python",
                    "options": {"entrypoint": "tests.support.agents:stepper"},
                },
            ],
        }
    ]
}


def run_input(thread_id: str, run_id: str, text: str) -> dict[str, Any]:
    return {
        "threadId": thread_id,
        "runId": run_id,
        "messages": [{"id": f"{run_id}-user", "role": "user", "content": text}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }


def checked(event: dict[str, Any]) -> dict[str, Any]:
    """The event, after the ag-ui-protocol models accepted it."""
    EVENTS.validate_python(event)
    return event


def content_of(events: list[dict[str, Any]], message_id: str) -> str:
    return "".join(
        e["delta"]
        for e in events
        if e["type"] == "TEXT_MESSAGE_CONTENT" and e["messageId"] == message_id
    )


async def sse_events(
    server: RunningServer, agent: str, body: dict[str, Any]
) -> list[dict[str, Any]]:
    events = []
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", f"{server.http}/api/ag-ui/p1/{agent}", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(checked(json.loads(line[6:])))
    return events


async def test_http_agent_gets_the_exact_text(
    server_factory: ServerFactory, node_packages: Path
) -> None:
    server = await server_factory(**PROJECT)
    text = "안녕하세요 dari,  exact\ttext"
    result = await run_node(
        "ag_ui.mjs",
        {
            "mode": "run",
            "url": f"{server.http}/api/ag-ui/p1/echo",
            "threadId": "t1",
            "runId": "run-1",
            "text": text,
        },
    )
    assert result["text"] == text
    types = [checked(e)["type"] for e in result["events"]]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert result["events"][0]["runId"] == "run-1"
    assert_valid_agui(result["events"], max_warnings=0)
    history = await saved(server, "t1", "echo")
    assert [(m["role"], m["content"]) for m in history] == [("user", text), ("assistant", text)]


async def test_sse_events_pass_the_models_and_the_clients_verifier(
    server_factory: ServerFactory, node_packages: Path
) -> None:
    server = await server_factory(**PROJECT)
    events = await sse_events(server, "stepper", run_input("t2", "run-2", "보고서"))
    types = [e["type"] for e in events]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert types.count("STEP_STARTED") == types.count("STEP_FINISHED") == 2
    assert content_of(events, "run-2-answer") == "보고서"
    assert events[-1]["outcome"] == {"type": "success"}
    assert_valid_agui(events, max_warnings=0)  # the ag-ui-validate conformance rules
    assert (await run_node("ag_ui.mjs", {"mode": "verify", "events": events}))["verified"] == len(
        events
    )


async def test_a_refused_run_is_an_http_error(server_factory: ServerFactory) -> None:
    server = await server_factory(**PROJECT)
    async with httpx.AsyncClient(base_url=server.http) as client:
        missing = await client.post("/api/ag-ui/p1/nobody", json=run_input("t", "r", "hi"))
        no_user = await client.post(
            "/api/ag-ui/p1/echo", json={**run_input("t", "r", "hi"), "messages": []}
        )
        not_input = await client.post("/api/ag-ui/p1/echo", json={"threadId": "t"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "agent_not_found"
    assert no_user.status_code == 400 and not_input.status_code == 400


class Server(Protocol):
    def ws(self, path: str) -> str: ...


class AgUiSocket:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, server: Server, agent: str, query: str = "") -> AgUiSocket:
        url = server.ws(f"/api/ag-ui/p1/{agent}/ws{query}")
        return cls(await connect(url, compression=None))

    async def until(self, kind: str, count: int = 1, timeout: float = 10) -> dict[str, Any]:
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                event = checked(json.loads(await self.connection.recv()))
                self.events.append(event)
                if event["type"] == kind:
                    seen += 1
                    if seen == count:
                        return event


async def test_websocket_reconnects_mid_answer_and_ends_with_the_exact_text(
    server_factory: ServerFactory, node_packages: Path
) -> None:
    server = await server_factory(**PROJECT)
    first = await AgUiSocket.open(server, "slow", "?threadId=t3")
    await first.until("RUN_FINISHED")  # a fresh thread: its (empty) history in a run of its own
    assert first.events[1] == {"type": "MESSAGES_SNAPSHOT", "messages": []}
    await first.connection.send(json.dumps(run_input("t3", "run-3", WORDS)))
    await first.until("TEXT_MESSAGE_CONTENT", count=5)
    before = content_of(first.events, "run-3-answer")
    first.connection.transport.abort()  # the network drops mid-answer

    again = await AgUiSocket.open(server, "slow", "?threadId=t3")
    finished = await again.until("RUN_FINISHED")
    assert finished["runId"] == "run-3" and finished["outcome"] == {"type": "success"}
    started, snapshot = again.events[0], again.events[1]
    assert started["type"] == "RUN_STARTED" and started["runId"] == "run-3"
    # The saved messages, without the answer in progress: its text comes as events.
    assert snapshot["type"] == "MESSAGES_SNAPSHOT"
    assert [(m["role"], m["content"]) for m in snapshot["messages"]] == [("user", WORDS)]
    assert WORDS.startswith(before) and before != WORDS
    assert content_of(again.events, "run-3-answer") == WORDS
    verified = await run_node("ag_ui.mjs", {"mode": "verify", "events": again.events})
    assert verified["verified"] == len(again.events)
    assert_valid_agui(again.events, max_warnings=0)

    # A later socket on the thread finds both messages saved and nothing running.
    later = await AgUiSocket.open(server, "slow", "?threadId=t3")
    await later.until("RUN_FINISHED")
    messages = later.events[1]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", WORDS), ("assistant", WORDS)]
    assert messages[1]["id"] == "run-3-answer"
    for socket in (again, later):
        await socket.connection.close()


async def test_websocket_binds_to_the_first_inputs_thread_and_refuses_others(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**PROJECT)
    socket = await AgUiSocket.open(server, "echo")
    await socket.connection.send(json.dumps(run_input("t4", "run-4", "one")))
    await socket.until("RUN_FINISHED", count=2)  # the history run, then the answer's
    assert content_of(socket.events, "run-4-answer") == "one"
    await socket.connection.send(json.dumps(run_input("elsewhere", "run-5", "two")))
    error = await socket.until("RUN_ERROR")
    assert error["code"] == "bad_request"
    await socket.connection.send("not json")
    assert (await socket.until("RUN_ERROR"))["code"] == "bad_request"
    assert_valid_agui(socket.events, max_warnings=0)
    await socket.connection.close()
