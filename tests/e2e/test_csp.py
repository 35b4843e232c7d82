"""The chat UI runs under its own Content-Security-Policy with no violation: streaming over
the same-origin WebSocket, an attached image (a data: URL) and rendered markdown."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.e2e.chat_page import ChatPage, png

pytestmark = pytest.mark.browser

# Every violation the browser reports, including those of resources it blocked.
WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


async def test_the_ui_works_under_its_content_security_policy(browser, dari, thread):
    context = await browser.new_context(viewport={"width": 1200, "height": 820})
    await context.add_init_script(WATCH_VIOLATIONS)
    console: list[str] = []
    chat = await ChatPage.open(context, dari.http, "집사", thread, connected=False)
    chat.page.on("console", lambda message: console.append(message.text))
    response = await chat.page.reload()
    assert response is not None
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    await chat.expect_connection("connected")
    page = chat.page
    await page.locator("#file-input").set_input_files(
        files=[{"name": "dot.png", "mimeType": "image/png", "buffer": png(16, 16)}]
    )
    await expect(page.locator(".attachment img")).to_have_count(1)
    await chat.send("**bold** and `code`, with an image")
    answer = chat.last_answer()
    await expect(answer).to_have_attribute("data-status", "complete")
    await expect(chat.questions.last.locator(".msg-image img")).to_have_count(1)
    assert await page.evaluate("window.__violations") == []
    assert not [text for text in console if "Content Security Policy" in text]
    assert chat.errors == []
    await context.close()
