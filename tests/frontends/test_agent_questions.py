"""Tool calls and agents' questions (interrupts) through the frontend dialects, on both engines:
the AI SDK's UI Message Stream (a ``data-dari-interrupt`` part; the answer in a POST body's
``resume``), checked by the ``ai`` package itself, and AG-UI (the interrupt outcome in
``RUN_FINISHED``; the answer in ``RunAgentInput.resume``), checked by the protocol's models and
its verifier."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui_validate.pytest_plugin import assert_valid_agui

from tests.backends.graphs import APPROVAL_DRAFT, APPROVAL_QUESTION
from tests.conftest import ServerFactory
from tests.frontends.conftest import run_node
from tests.frontends.test_ag_ui import checked, run_input
from tests.frontends.test_ai_sdk import body, saved
from tests.support.engines import ENGINES
from tests.support.server import RunningServer


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


AGENTS = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                {"name": "approver", "backend": "langgraph",
                 "options": {"entrypoint": "tests.backends.graphs:approval"}},
                {"name": "team", "backend": "langgraph",
                 "options": {"entrypoint": "tests.backends.graphs:supervisor"}},
            ],
        }
    ]
}


async def sse_data(
    lines: httpx.Response | AsyncIterator[str], until: str | None = None
) -> list[dict[str, Any]]:
    """The JSON of each ``data:`` line, to the stream's end (or the first chunk of type
    ``until``, leaving the rest of ``lines`` unread)."""
    if isinstance(lines, httpx.Response):
        lines = lines.aiter_lines()
    out: list[dict[str, Any]] = []
    async for line in lines:
        if line.startswith("data: {"):
            out.append(json.loads(line[6:]))
            if until is not None and out[-1]["type"] == until:
                break
    return out


# --- AI SDK --------------------------------------------------------------------------------


async def test_ai_sdk_question_is_a_data_part_answered_by_a_resume_body(
    server_factory: ServerFactory, node_packages: Path
) -> None:
    server = await server_factory(**AGENTS)
    api = f"{server.http}/api/ai-sdk/p1/approver/chat"
    async with (
        httpx.AsyncClient(timeout=20) as http,
        http.stream("POST", api, json=body("c1", "write the report")) as first,
    ):
        assert first.status_code == 200
        first_lines = first.aiter_lines()
        asked = await sse_data(first_lines, until="data-dari-interrupt")
        question = asked[-1]["data"]
        assert question["state"] == "pending" and question["payload"] == APPROVAL_QUESTION
        resume = {"id": "c1", "messages": [], "resume": {"interrupt_id": question["interrupt_id"], "value": "yes"}}  # fmt: skip
        async with http.stream("POST", api, json=resume) as second:
            assert second.status_code == 200
            continued = await sse_data(second)
        rest = await sse_data(first_lines)
        again = await http.post(api, json=resume)
    # The first stream went on to the end of the same answer; so did the resumed one.
    for chunks in (asked + rest, continued):
        checked_by_sdk = await run_node("ai_sdk.mjs", {"mode": "check", "chunks": chunks})
        message = checked_by_sdk["message"]
        text = "".join(p["text"] for p in message["parts"] if p["type"] == "text")
        assert text == f"{APPROVAL_DRAFT} Sent: yes."
        parts = [p for p in message["parts"] if p["type"] == "data-dari-interrupt"]
        assert len(parts) == 1 and parts[0]["data"]["state"] == "answered"
        assert parts[0]["data"]["value"] == "yes" and chunks[-1]["type"] == "finish"
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_answered"
    history = await saved(server, "c1", "approver")
    assert history[1]["content"] == f"{APPROVAL_DRAFT} Sent: yes."


async def test_ai_sdk_tool_calls_are_tool_parts(
    server_factory: ServerFactory, node_packages: Path
) -> None:
    server = await server_factory(**AGENTS)
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(
            f"{server.http}/api/ai-sdk/p1/team/chat", json=body("c2", "분기 보고서")
        )
    chunks = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    message = (await run_node("ai_sdk.mjs", {"mode": "check", "chunks": chunks}))["message"]
    tools = [p for p in message["parts"] if p["type"] == "dynamic-tool"]
    assert len(tools) == 1
    assert tools[0]["toolName"] == "lookup_sales" and tools[0]["state"] == "output-available"
    assert tools[0]["input"] == {"quarter": "Q3"} and tools[0]["output"] == "Q3: +12%"


# --- AG-UI ---------------------------------------------------------------------------------


async def run_events(
    http: httpx.AsyncClient, server: RunningServer, payload: dict[str, Any]
) -> list[dict[str, Any]]:
    async with http.stream("POST", f"{server.http}/api/ag-ui/p1/approver", json=payload) as response:
        assert response.status_code == 200, await response.aread()
        return [checked(event) for event in await sse_data(response)]


def resume_input(thread_id: str, run_id: str, interrupt_id: str, status: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"interruptId": interrupt_id, "status": status}
    if status == "resolved":
        entry["payload"] = "yes"
    return {**run_input(thread_id, run_id, ""), "messages": [], "resume": [entry]}


async def test_ag_ui_question_ends_the_run_with_the_interrupt_outcome_and_resume_goes_on(
    server_factory: ServerFactory, node_packages: Path
) -> None:
    server = await server_factory(**AGENTS)
    async with httpx.AsyncClient(timeout=20) as http:
        paused = await run_events(http, server, run_input("g1", "run-1", "write the report"))
        finished = paused[-1]
        assert finished["type"] == "RUN_FINISHED" and finished["outcome"]["type"] == "interrupt"
        (interrupt,) = finished["outcome"]["interrupts"]
        assert interrupt["message"] == "Send the report?"
        assert interrupt["responseSchema"] == {"enum": ["yes", "no"]}
        assert interrupt["expiresAt"] and interrupt["id"].startswith("i-")
        assert_valid_agui(paused, max_warnings=0)

        resumed = await run_events(http, server, resume_input("g1", "run-2", interrupt["id"], "resolved"))
        again = await http.post(
            f"{server.http}/api/ag-ui/p1/approver",
            json=resume_input("g1", "run-3", interrupt["id"], "resolved"),
        )
    texts = ["".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT") for events in (paused, resumed)]
    assert texts == [APPROVAL_DRAFT, " Sent: yes."]
    assert resumed[0]["runId"] == "run-2" and resumed[-1]["outcome"] == {"type": "success"}
    assert_valid_agui(resumed, max_warnings=0)
    verified = await run_node("ag_ui.mjs", {"mode": "verify", "events": paused + resumed})
    assert verified["verified"] == len(paused + resumed)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_answered"
    history = await saved(server, "g1", "approver")
    assert history[1]["content"] == f"{APPROVAL_DRAFT} Sent: yes."


async def test_ag_ui_resume_cancelled_ends_the_waiting_answer(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**AGENTS)
    async with httpx.AsyncClient(timeout=20) as http:
        paused = await run_events(http, server, run_input("g2", "run-1", "write the report"))
        interrupt = paused[-1]["outcome"]["interrupts"][0]
        cancelled = await run_events(http, server, resume_input("g2", "run-2", interrupt["id"], "cancelled"))
    assert cancelled[-1]["type"] == "RUN_FINISHED" and cancelled[-1]["outcome"] == {"type": "cancelled"}
    history = await saved(server, "g2", "approver")
    assert history[1]["status"] == "cancelled"
    assert history[1]["interrupts"][0]["state"] == "cancelled"
