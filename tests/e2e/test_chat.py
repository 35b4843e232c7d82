"""The chat UI in a real browser against a real server: streaming, stop, languages, safety."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.e2e.chat_page import ChatPage, eventually

pytestmark = pytest.mark.browser


async def test_enter_sends_and_the_answer_grows_while_it_streams(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "slow", thread)
    await expect(chat.input).to_have_attribute("placeholder", "Message slow…")
    await chat.record_growth()

    # Shift+Enter is a new line, not a send.
    await chat.input.fill("first line")
    await chat.input.press("Shift+Enter")
    await chat.input.type("and the second line has a few more words to stream")
    await expect(chat.input).to_have_value(
        "first line\nand the second line has a few more words to stream"
    )
    await expect(chat.questions).to_have_count(0)

    await chat.input.press("Enter")
    await expect(chat.input).to_have_value("")
    await expect(chat.questions).to_have_count(1)
    await expect(chat.questions.last.locator(".user-text")).to_have_text(
        "first line\nand the second line has a few more words to stream"
    )
    answer = chat.last_answer()
    await expect(answer).to_have_attribute("data-status", "streaming")
    await expect(answer.locator(".content")).to_contain_text("first line")
    await chat.screenshot("01-streaming")
    await expect(answer).to_have_attribute("data-status", "complete")
    await chat.screenshot("02-answered")

    lengths, _ = await chat.recorded()
    assert len(lengths) >= 5, f"the answer should arrive in many pieces, saw lengths {lengths}"
    assert lengths == sorted(lengths), f"text only ever grows: {lengths}"
    saved = await dari.saved_messages("slow", thread)
    assert [m["role"] for m in saved] == ["user", "assistant"]
    assert await chat.answer_source() == saved[1]["content"]
    assert await chat.answer_text() == saved[1]["content"]
    assert chat.errors == []


async def test_steps_show_as_a_progress_line_above_the_answer(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "집사", thread)
    await chat.record_growth()
    await chat.send("Hello there")
    answer = chat.last_answer()
    await expect(answer).to_have_attribute("data-status", "complete")
    _, progress = await chat.recorded()
    assert "Thinking..." in progress
    # Once finished, the steps fold into a compact, expandable summary.
    await expect(answer.locator(".progress")).to_be_hidden()
    await expect(answer.locator(".steps summary")).to_have_text("1 step")


async def test_stop_ends_the_answer(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "slow", thread)
    words = " ".join(f"word{n}" for n in range(60))
    await chat.send(words)
    answer = chat.last_answer()
    await expect(answer.locator(".content")).to_contain_text("word2")
    stop = chat.page.locator("#stop")
    await expect(stop).to_be_visible()
    await chat.screenshot("03-answering-with-stop")
    await stop.click()

    await expect(answer).to_have_attribute("data-status", "cancelled")
    await expect(answer.locator(".badge")).to_have_text("Stopped")
    await expect(stop).to_be_hidden()
    await chat.screenshot("04-stopped")
    saved = await eventually(
        lambda: dari.saved_messages("slow", thread),
        lambda m: len(m) == 2 and m[1]["status"] == "cancelled",
    )
    assert await chat.answer_source() == saved[1]["content"]
    assert await chat.answer_text() == saved[1]["content"].strip()
    assert len(saved[1]["content"]) < len(words)


async def test_korean_browser_gets_the_korean_ui(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "집사", thread, locale="ko-KR")
    page = chat.page
    await expect(page.locator("html")).to_have_attribute("lang", "ko")
    await expect(chat.input).to_have_attribute("placeholder", "집사에게 메시지 보내기…")
    await expect(page.locator("#conn-label")).to_have_text("연결됨")
    await expect(page.locator("#send")).to_have_attribute("aria-label", "보내기")
    await expect(page.locator("#composer-hint")).to_have_text(
        "Enter로 보내기 · Shift+Enter로 줄바꿈"
    )
    await expect(page.locator(".agent-state").first).to_have_text("실행 중")
    await expect(page.locator(".empty h2")).to_have_text("대화를 시작하세요")

    await chat.record_growth()
    await chat.send("데이터 분석 부탁해요")
    answer = chat.last_answer()
    await expect(answer).to_have_attribute("data-status", "complete")
    await expect(answer.locator(".content")).to_contain_text("안녕하세요")
    await expect(answer.locator(".steps summary")).to_have_text("1단계")
    _, progress = await chat.recorded()
    assert "생각 중..." in progress
    await chat.screenshot("05-korean")


async def test_english_browser_gets_the_english_ui(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "집사", thread, locale="en-GB")
    await expect(chat.page.locator("html")).to_have_attribute("lang", "en")
    await expect(chat.page.locator("#conn-label")).to_have_text("Connected")
    await expect(chat.page.locator(".empty h2")).to_have_text("Start a conversation")


async def test_html_in_an_answer_is_shown_as_text_and_never_runs(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "echo", thread)
    attack = (
        'look <img src=x onerror="window.__owned=1;alert(1)"> and '
        "<script>window.__owned=2;alert(2)</script> and "
        "[click me](javascript:window.__owned=3) and "
        '<a href="javascript:alert(4)">link</a> and **bold**'
    )
    await chat.send(attack)
    answer = chat.last_answer()
    await expect(answer).to_have_attribute("data-status", "complete")
    content = answer.locator(".content")

    await expect(content).to_contain_text('<img src=x onerror="window.__owned=1;alert(1)">')
    await expect(content).to_contain_text("<script>window.__owned=2;alert(2)</script>")
    await expect(content.locator("strong")).to_have_text("bold")  # Markdown still works
    assert await content.locator("img, script, iframe, [onerror]").count() == 0
    assert await chat.page.locator('#messages a[href^="javascript"]').count() == 0
    assert await chat.page.evaluate("window.__owned") is None
    assert chat.dialogs == []
    # The same after a reload, when the answer comes from history.
    await chat.page.reload()
    await expect(chat.last_answer().locator(".content")).to_contain_text(
        "<script>window.__owned=2;alert(2)</script>"
    )
    assert await chat.page.evaluate("window.__owned") is None
    assert chat.dialogs == []
    await chat.screenshot("06-inert-html")


async def test_a_second_tab_on_the_conversation_sees_the_same_stream(browser, dari, thread):
    context = await browser.new_context(locale="en-US", viewport={"width": 1000, "height": 760})
    first = await ChatPage.open(context, dari.http, "slow", thread)
    second = await ChatPage.open(context, dari.http, "slow", thread)
    assert await first.client_id() != await second.client_id(), "each tab has its own client id"
    await second.record_growth()

    text = "both tabs see these words arrive one by one in order"
    await first.send(text)
    # The other tab shows the question too, and the answer growing.
    await expect(second.questions.last).to_contain_text(text)
    await expect(second.last_answer()).to_have_attribute("data-status", "streaming")
    await second.screenshot("07-second-tab-streaming")
    await expect(second.last_answer()).to_have_attribute("data-status", "complete")
    await expect(first.last_answer()).to_have_attribute("data-status", "complete")

    lengths, _ = await second.recorded()
    assert len(lengths) >= 4, f"the second tab saw the answer grow: {lengths}"
    assert await second.answer_text() == await first.answer_text() == text
    # Either tab may stop an answer; here both simply agree on the result.
    await expect(second.page.locator("#conn")).to_have_attribute("data-state", "connected")


async def test_queued_chats_show_their_place_and_answers_follow_their_questions(
    browser, dari, thread
):
    chat = await ChatPage.open(browser, dari.http, "slow", thread)
    texts = ["one two three four five", "second question", "third question"]
    for text in texts:
        await chat.send(text)
    await expect(chat.page.locator(".status-queued")).to_have_count(2)
    await expect(chat.page.locator(".status-queued").first).to_have_text("Queued (#1)")
    await chat.screenshot("18-queued")
    await expect(chat.page.locator('.msg-assistant[data-status="complete"]')).to_have_count(3)

    async def transcript() -> list[tuple[str, str]]:
        items = chat.page.locator("#messages > .msg")
        return [
            (
                (await items.nth(i).get_attribute("class") or "").split("msg-")[-1],
                await items.nth(i).locator(".user-text, .content").inner_text(),
            )
            for i in range(await items.count())
        ]

    expected = [pair for text in texts for pair in (("user", text), ("assistant", text))]
    assert await transcript() == expected
    await chat.page.reload()
    await expect(chat.page.locator('.msg-assistant[data-status="complete"]')).to_have_count(3)
    assert await transcript() == expected, "history shows each answer after its question"


async def test_the_chat_works_on_a_phone_sized_screen(browser, dari, thread):
    chat = await ChatPage.open(
        browser,
        dari.http,
        "집사",
        thread,
        viewport={"width": 390, "height": 780},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    page = chat.page
    sidebar = page.locator("#sidebar")
    await expect(sidebar).not_to_be_in_viewport()
    await page.locator("#nav-open").click()
    await expect(sidebar).to_be_in_viewport()
    await expect(page.locator("#nav-open")).to_have_attribute("aria-expanded", "true")
    await chat.screenshot("19-phone-menu")
    await page.locator('.agent[href*="/echo/"]').click()
    await expect(sidebar).not_to_be_in_viewport()
    await expect(page.locator("#agent-title")).to_have_text("echo")

    await chat.send("hello from a phone")
    answer = chat.last_answer()
    await expect(answer.locator(".content")).to_have_attribute("aria-busy", "false")
    await expect(answer.locator(".content")).to_have_text("hello from a phone")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "nothing overflows sideways"
    await chat.screenshot("20-phone-chat")
