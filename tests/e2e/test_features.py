"""Images and delegation: features that cross the whole system."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.e2e.chat_page import ChatPage, data_url, png

pytestmark = pytest.mark.browser

# Builds a File in the page and hands it to the UI the way a paste or a drop would.
DROP_JS = """
async ([url, name, kind]) => {
  // Decoded here, not fetched: the page's CSP (connect-src 'self') refuses fetch(data:).
  const [head, payload] = url.split(',');
  const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
  const blob = new Blob([bytes], { type: head.slice(5, head.indexOf(';')) });
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], name, { type: blob.type }));
  if (kind === 'paste') {
    document.getElementById('input').dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true }));
  } else {
    window.dispatchEvent(new DragEvent('dragenter', { dataTransfer: transfer, bubbles: true }));
    window.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }
}
"""


async def test_an_image_attaches_is_sent_and_shows_in_history_after_reload(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "집사", thread)
    page = chat.page

    await page.locator("#file-input").set_input_files(
        files=[{"name": "gradient.png", "mimeType": "image/png", "buffer": png(64, 48)}]
    )
    previews = page.locator(".attachment img")
    await expect(previews).to_have_count(1)
    # Paste and drag and drop attach too.
    small = data_url(png(20, 20))
    await page.evaluate(DROP_JS, [small, "pasted.png", "paste"])
    await expect(previews).to_have_count(2)
    await page.evaluate(DROP_JS, [small, "dropped.png", "drop"])
    await expect(previews).to_have_count(3)
    await page.get_by_role("button", name="Remove pasted.png").click()
    await page.get_by_role("button", name="Remove dropped.png").click()
    await expect(previews).to_have_count(1)
    await chat.input.fill("what is in this picture?")
    await chat.screenshot("12-image-attached")

    await chat.input.press("Enter")
    await expect(page.locator(".attachment")).to_have_count(0)
    sent = chat.questions.last.locator(".msg-image img")
    await expect(sent).to_have_count(1)
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")
    await expect(chat.last_answer().locator(".content")).to_contain_text("1 image")

    await page.reload()
    await chat.expect_connection("connected")
    from_history = chat.questions.last.locator(".msg-image img")
    await expect(from_history).to_have_count(1)
    assert (await from_history.get_attribute("src") or "").startswith("data:image/png;base64,")
    assert await from_history.evaluate("img => img.complete && img.naturalWidth") == 64
    await chat.screenshot("13-image-in-history")


async def test_a_too_large_image_is_refused_with_a_clear_message(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "집사", thread)
    big = png(180, 180, noise=True)  # ~95 KB; the server allows 64 KB per image
    await chat.page.locator("#file-input").set_input_files(
        files=[{"name": "noise.png", "mimeType": "image/png", "buffer": big}]
    )
    error = chat.page.locator("#composer-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("“noise.png” is")
    await expect(error).to_contain_text("Images can be at most 64 KB")
    await expect(chat.page.locator(".attachment")).to_have_count(0)
    await chat.screenshot("14-image-too-large")


async def test_a_delegated_task_reports_back_as_a_notification_and_in_the_thread(
    browser, dari, thread
):
    chat = await ChatPage.open(browser, dari.http, "집사", thread)
    await chat.send("/delegate researcher quarterly sales summary")
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")
    await expect(chat.last_answer().locator(".content")).to_contain_text("researcher")

    report = chat.page.locator(".msg-report")
    await expect(report).to_have_count(1)
    await expect(report).to_contain_text("quarterly sales summary")
    await expect(report.locator(".report-head")).to_contain_text("Report from researcher")
    toast = chat.page.locator(".toast")
    await expect(toast.first).to_contain_text("researcher finished a delegated task")
    await chat.screenshot("15-auto-report")

    await chat.page.reload()
    await chat.expect_connection("connected")
    await expect(chat.page.locator(".msg-report")).to_have_count(1)
    await expect(chat.page.locator(".msg-report")).to_contain_text("quarterly sales summary")


async def test_a_broadcast_appears_as_a_banner(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "echo", thread)
    response = await dari.post("/api/broadcast", {"content": "Maintenance tonight at 22:00"})
    assert response.status_code == 200, response.text
    banner = chat.page.locator(".banner-broadcast")
    await expect(banner).to_contain_text("Announcement")
    await expect(banner).to_contain_text("Maintenance tonight at 22:00")
    await chat.screenshot("16-broadcast")
    await banner.get_by_role("button", name="Dismiss").click()
    await expect(banner).to_have_count(0)


async def test_a_stopped_agent_is_shown_as_stopped_and_can_be_started(browser, dari, thread):
    chat = await ChatPage.open(browser, dari.http, "archivist", thread)
    page = chat.page
    try:
        await expect(page.locator("#agent-sub")).to_contain_text("stopped")
        await expect(page.locator('.agent[href*="archivist"] .agent-state')).to_have_text("stopped")
        await expect(chat.input).to_be_disabled()
        await expect(chat.input).to_have_attribute("placeholder", "archivist is stopped")
        await chat.screenshot("17-stopped-agent")

        await page.locator("#start-agent").click()
        await expect(page.locator("#agent-sub")).to_contain_text("running")
        await expect(page.locator('.agent[href*="archivist"] .agent-state')).to_have_text("running")
        await expect(chat.input).to_be_enabled()
        await chat.send("are you awake now?")
        await expect(chat.last_answer()).to_have_attribute("data-status", "complete")
    finally:
        await dari.post("/api/projects/project_001/agents/archivist/stop")
