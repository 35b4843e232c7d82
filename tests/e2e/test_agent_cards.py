"""Tool-call cards and approval cards in real Chromium, against real LangGraph graphs (LangChain's
fake chat models) and the OpenAI backend talking to a local chat-completions server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, WebSocketRoute, expect

from tests.backends.fake_openai import FakeOpenAI, Reply, ToolCall
from tests.e2e.chat_page import ChatPage, eventually
from tests.e2e.conftest import DariServer, start_dari, stop_dari

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
# The server runs in its own process with the test's directory as its working directory.
GRAPHS = f"""import sys
sys.path.insert(0, {str(REPO)!r})
from tests.backends.graphs import approval, supervisor  # noqa: E402,F401
"""


def agents_toml(openai_url: str) -> str:
    return f"""
[[projects.agents]]
name = "approver"
backend = "langgraph"
options = {{ entrypoint = "e2e_graphs:approval" }}

[[projects.agents]]
name = "team"
backend = "langgraph"
options = {{ entrypoint = "e2e_graphs:supervisor" }}

[[projects.agents]]
name = "gpt"
backend = "openai"
options = {{ base_url = "{openai_url}", model = "fake", timeout_s = 5, delegates = ["researcher"] }}
"""


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def server(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[DariServer]:
    home = tmp_path / "dari"
    home.mkdir()
    (home / "e2e_graphs.py").write_text(GRAPHS, encoding="utf-8")
    running = start_dari(home, extra_agents_toml=agents_toml(upstream.base_url))
    yield running
    stop_dari(running)


class HeldFrames:
    """Routes a page's sockets through the test: while ``holding``, what the server sends is
    kept back (in order) instead of reaching the page; ``release`` lets it through."""

    def __init__(self) -> None:
        self.holding = False
        self.held: list[str | bytes] = []
        self.page_side: WebSocketRoute | None = None

    def route(self, ws: WebSocketRoute) -> None:
        self.page_side = ws
        server = ws.connect_to_server()
        server.on_message(self._from_server)

    def _from_server(self, message: str | bytes) -> None:
        if self.holding:
            self.held.append(message)
        elif self.page_side is not None:
            self.page_side.send(message)

    def release(self) -> None:
        self.holding = False
        assert self.page_side is not None
        for message in self.held:
            self.page_side.send(message)
        self.held.clear()


async def test_an_approval_card_survives_a_reload_and_is_answered_once(
    browser: Browser, server: DariServer, thread: str
) -> None:
    first = await ChatPage.open(browser, server.http, "approver", thread)
    await first.send("write the report")
    card = first.page.locator(".interrupt-card")
    await expect(card.locator(".interrupt-question")).to_have_text("Send the report?")
    await expect(card.locator(".interrupt-choice")).to_have_text(["yes", "no"])
    await expect(first.last_answer().locator(".content")).to_have_text("Draft ready.")
    await first.screenshot("approval-card")

    # Reloaded (its socket now through the test), the question is still there to answer.
    held = HeldFrames()
    await first.page.route_web_socket(re.compile(r"/ws/chat/"), held.route)
    await first.page.reload()
    await first.expect_connection("connected")
    await expect(card.locator(".interrupt-question")).to_have_text("Send the report?")
    await expect(card.locator(".interrupt-choice")).to_have_count(2)
    await expect(first.last_answer().locator(".content")).to_have_text("Draft ready.")

    # A second tab sees the same question and approves it; the first tab hears nothing yet.
    second = await ChatPage.open(browser, server.http, "approver", thread, locale="ko-KR")
    other_card = second.page.locator(".interrupt-card")
    await expect(other_card.locator(".interrupt-question")).to_have_text("Send the report?")
    held.holding = True
    await other_card.locator(".interrupt-choice", has_text="yes").click()
    await expect(second.last_answer().locator(".content")).to_have_text("Draft ready. Sent: yes.")
    await expect(other_card.locator(".interrupt-outcome")).to_have_text("답변함: yes")
    await second.screenshot("approval-answered-ko")

    # The first tab, still showing it pending, approves too: the server says it was answered.
    await expect(card.locator(".interrupt-choice")).to_have_count(2)
    await card.locator(".interrupt-choice", has_text="yes").click()
    await eventually(
        lambda: any(b"already_answered" in _bytes(m) for m in held.held), lambda found: found
    )
    held.release()
    await expect(card.locator(".interrupt-refusal")).to_have_text("Already answered")
    await expect(card.locator(".interrupt-outcome")).to_have_text("Answered: yes")
    await expect(first.last_answer().locator(".content")).to_have_text("Draft ready. Sent: yes.")
    await first.screenshot("approval-already-answered")

    saved = await server.saved_messages("approver", thread)
    assert [(m["role"], m["content"], m["status"]) for m in saved] == [
        ("user", "write the report", "complete"),
        ("assistant", "Draft ready. Sent: yes.", "complete"),
    ]
    question = saved[1]["interrupts"][0]
    assert question["payload"]["question"] == "Send the report?"
    assert (question["state"], question["value"]) == ("answered", "yes")
    # After a reload the answered question shows what was answered, with no buttons.
    await second.page.reload()
    await expect(other_card.locator(".interrupt-outcome")).to_have_text("답변함: yes")
    await expect(other_card.locator(".interrupt-choice")).to_have_count(0)
    assert not first.errors and not second.errors


def _bytes(message: str | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.encode()


async def open_card(chat: ChatPage, name: str) -> Any:
    card = chat.last_answer().locator(".tool-card", has_text=name)
    await expect(card).to_have_attribute("data-state", "finished")
    if await card.get_attribute("open") is None:
        await card.locator("summary").click()
    return card


async def test_tool_cards_show_arguments_and_results_live_and_after_reload(
    browser: Browser, server: DariServer, upstream: FakeOpenAI, thread: str
) -> None:
    delegation = {"agent_name": "researcher", "task": "find sources on 다리"}
    upstream.script(
        Reply(pieces=["Let me ask. "], tool_calls=[ToolCall("delegate_task", delegation)]),
        Reply(pieces=["Handed ", "over."]),
    )
    chat = await ChatPage.open(browser, server.http, "gpt", thread)
    await chat.send("research please")
    await expect(chat.last_answer().locator(".content")).to_have_text("Let me ask. Handed over.")
    card = await open_card(chat, "delegate_task")
    await expect(card.locator(".tool-args")).to_contain_text('"task": "find sources on 다리"')
    await expect(card.locator(".tool-result")).to_contain_text('"status": "delegated"')
    await chat.screenshot("tool-card-openai")

    await chat.page.reload()
    await chat.expect_connection("connected")
    card = await open_card(chat, "delegate_task")
    await expect(card.locator(".tool-args")).to_contain_text('"agent_name": "researcher"')
    await expect(card.locator(".tool-result")).to_contain_text('"status": "delegated"')

    team = await ChatPage.open(browser, server.http, "team", thread, locale="ko-KR")
    await team.send("분기 보고서")
    await expect(team.last_answer().locator(".content")).to_contain_text("Report: sales are up.")
    card = await open_card(team, "lookup_sales")
    await expect(card.locator(".tool-args")).to_contain_text('"quarter": "Q3"')
    await expect(card.locator(".tool-result")).to_have_text("Q3: +12%")
    await expect(card.locator(".tool-state")).to_have_text("완료")
    await team.screenshot("tool-card-langgraph-ko")
    await team.page.reload()
    await team.expect_connection("connected")
    card = await open_card(team, "lookup_sales")
    await expect(card.locator(".tool-result")).to_have_text("Q3: +12%")
    assert not chat.errors and not team.errors
