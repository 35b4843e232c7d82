"""The connection under stress: a cut mid-answer, a replaced connection, signing in."""

from __future__ import annotations

import json
import re

import pytest
import websockets
from playwright.async_api import expect

from tests.e2e.chat_page import ChatPage, eventually
from tests.e2e.conftest import mint_token

pytestmark = pytest.mark.browser


async def test_a_cut_mid_answer_reconnects_and_completes_with_exactly_the_saved_text(
    browser, dari, proxy, thread
):
    chat = await ChatPage.open(browser, proxy.http, "slow", thread)
    text = " ".join(f"piece{n}" for n in range(30))
    await chat.send(text)
    answer = chat.last_answer()
    await expect(answer.locator(".content")).to_contain_text("piece3")
    before = await chat.answer_text()

    proxy.cut()  # every connection dies at once and new ones are refused for now
    await chat.expect_connection(re.compile("reconnecting|offline"))
    await expect(chat.page.locator("#conn-label")).to_have_text(re.compile("Reconnecting…|Offline"))
    # The answer in progress is still on screen.
    assert (await chat.answer_text()).startswith(before)
    await expect(answer).to_have_attribute("data-status", "streaming")
    await chat.screenshot("08-reconnecting")

    proxy.restore()
    await chat.expect_connection("connected")
    await expect(answer).to_have_attribute("data-status", "complete")
    await chat.screenshot("09-reconnected-complete")
    saved = await eventually(
        lambda: dari.saved_messages("slow", thread),
        lambda m: len(m) == 2 and m[1]["status"] == "complete",
    )
    assert await chat.answer_source() == saved[1]["content"] == text, "no piece lost or doubled"
    assert await chat.answer_text() == text
    assert await chat.questions.count() == 1, "the chat was not sent twice"


async def test_when_the_server_cannot_resume_a_snapshot_restores_the_answer_in_progress(
    browser, dari_short_log, proxy_to, thread
):
    proxy = await proxy_to(dari_short_log)
    chat = await ChatPage.open(browser, proxy.http, "slow", thread)
    # Frames of the sockets opened from now on, i.e. of the reconnection (the first is already open).
    received: list[dict] = []
    chat.page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: received.append(json.loads(payload))),
    )
    text = " ".join(f"part{n}" for n in range(30))
    await chat.send(text)
    answer = chat.last_answer()
    await expect(answer.locator(".content")).to_contain_text("part2")

    proxy.cut()
    await chat.expect_connection(re.compile("reconnecting|offline"))
    # Stay away until the server has moved on well past what the log keeps (half a second).
    await eventually(
        lambda: dari_short_log.saved_messages("slow", thread),
        lambda m: len(m) == 2 and "part12" in m[1]["content"],
    )
    proxy.restore()
    await chat.expect_connection("connected")
    await expect(answer).to_have_attribute("data-status", "complete")

    welcome = next(f for f in received if f["type"] == "welcome")
    assert welcome["resumed"] is False and welcome["reason"] == "expired"
    assert any(f["type"] == "snapshot" and "part12" in f["content"] for f in received)
    saved = await dari_short_log.saved_messages("slow", thread)
    assert await chat.answer_source() == saved[1]["content"] == text, "nothing lost or doubled"
    assert await chat.questions.count() == 1


async def test_another_connection_with_the_same_client_id_replaces_this_one_and_it_says_so(
    browser, dari, thread
):
    chat = await ChatPage.open(browser, dari.http, "echo", thread)
    client_id = await chat.client_id()

    async with websockets.connect(f"ws://127.0.0.1:{dari.port}/ws/chat/{client_id}") as other:
        welcome = await other.recv()
        assert '"welcome"' in welcome
        await chat.expect_connection("replaced")
        banner = chat.page.locator('[data-banner="connection"]')
        await expect(banner).to_contain_text("opened in another tab or window")
        await chat.screenshot("10-replaced")
        # It does not fight back: the other connection stays open until the user asks.
        await chat.expect_connection("replaced")
        await banner.get_by_role("button", name="Use here").click()
        await chat.expect_connection("connected")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await other.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
    await expect(banner).to_be_hidden()


async def test_sign_in_with_a_pasted_token_uses_a_cookie_not_storage(browser, dari_jwt, thread):
    chat = await ChatPage.open(browser, dari_jwt.http, "echo", thread, connected=False)
    dialog = chat.page.locator("#signin")
    await expect(dialog).to_be_visible()
    await chat.screenshot("11-sign-in")

    await dialog.locator("textarea").fill("not-a-token")
    await dialog.get_by_role("button", name="Sign in").click()
    await expect(dialog.locator(".auth-error")).to_be_visible()

    token = await mint_token(dari_jwt)
    await dialog.locator("textarea").fill(token)
    await dialog.get_by_role("button", name="Sign in").click()
    await expect(dialog).to_be_hidden()
    await chat.expect_connection("connected")

    await chat.send("signed in and chatting")
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")
    storage = await chat.page.evaluate(
        "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert token not in storage
    cookies = await chat.page.context.cookies()
    session = [c for c in cookies if c["value"] == token]
    assert session and session[0]["httpOnly"], "the session cookie is out of the page's reach"
    assert await chat.page.evaluate("document.cookie") == ""
