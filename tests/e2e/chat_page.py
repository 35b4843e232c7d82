"""A small page object for the chat UI, so the tests read as what a person does."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

T = TypeVar("T")
SCREENSHOTS = Path(__file__).parent / "screenshots"


def shot_path(name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / f"{name}.png")


# Streaming answers take seconds; the UI itself reacts in milliseconds.
expect.set_options(timeout=20_000)

# Records, in the page, every length the newest answer's text had and every progress line shown.
RECORDER_JS = """
() => {
  window.__lengths = [];
  window.__progress = [];
  const list = document.getElementById('messages');
  new MutationObserver(() => {
    const answers = list.querySelectorAll('.msg-assistant');
    const last = answers[answers.length - 1];
    if (!last) return;
    const n = last.querySelector('.content').textContent.length;
    if (window.__lengths[window.__lengths.length - 1] !== n) window.__lengths.push(n);
    const progress = last.querySelector('.progress:not([hidden])');
    if (progress && !window.__progress.includes(progress.textContent)) window.__progress.push(progress.textContent);
  }).observe(list, { subtree: true, childList: true, characterData: true, attributes: true });
}
"""


class ChatPage:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

        async def on_dialog(dialog: Any) -> None:  # alert() from injected script would land here
            self.dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)

    @classmethod
    async def open(
        cls,
        target: Browser | BrowserContext,
        base_url: str,
        agent: str,
        thread: str,
        *,
        locale: str = "en-US",
        connected: bool = True,
        **context_options: Any,
    ) -> ChatPage:
        if isinstance(target, Browser):
            context_options.setdefault("viewport", {"width": 1200, "height": 820})
            target = await target.new_context(locale=locale, **context_options)
        chat = cls(await target.new_page())
        await chat.page.goto(f"{base_url}/#/c/project_001/{quote(agent)}/{quote(thread)}")
        if connected:
            await chat.expect_connection("connected")
            await expect(chat.page.locator("#agent-title")).to_have_text(agent)
        return chat

    # --- reading -------------------------------------------------------------------------------

    @property
    def input(self) -> Locator:
        return self.page.locator("#input")

    @property
    def answers(self) -> Locator:
        return self.page.locator(".msg-assistant")

    @property
    def questions(self) -> Locator:
        return self.page.locator(".msg-user")

    def last_answer(self) -> Locator:
        return self.answers.last

    async def expect_connection(self, state: Any) -> None:
        await expect(self.page.locator("#conn")).to_have_attribute("data-state", state)

    async def answer_text(self, answer: Locator | None = None) -> str:
        return await (answer or self.last_answer()).locator(".content").inner_text()

    async def answer_source(self, answer: Locator | None = None) -> str:
        """The exact text the UI holds for an answer (what it rendered as Markdown)."""
        return str(
            await (answer or self.last_answer())
            .locator(".content")
            .evaluate("el => el.renderedText")
        )

    async def record_growth(self) -> None:
        await self.page.evaluate(RECORDER_JS)

    async def recorded(self) -> tuple[list[int], list[str]]:
        lengths, progress = await self.page.evaluate("[window.__lengths, window.__progress]")
        return list(lengths), list(progress)

    async def client_id(self) -> str:
        return str(await self.page.evaluate("sessionStorage.getItem('dari.client_id')"))

    # --- doing ---------------------------------------------------------------------------------

    async def send(self, text: str) -> None:
        await self.input.fill(text)
        await self.input.press("Enter")

    async def screenshot(self, name: str) -> None:
        await self.page.screenshot(path=shot_path(name))


async def eventually(
    probe: Callable[[], Awaitable[T] | T], check: Callable[[T], bool], timeout: float = 15
) -> T:
    """Poll a condition outside the browser (e.g. what the server saved) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if check(value):  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)


def png(width: int, height: int, *, noise: bool = False) -> bytes:
    """A real PNG: a colour gradient, or random noise (which does not compress) for big files."""
    rows = []
    for y in range(height):
        if noise:
            rows.append(b"\x00" + os.urandom(width * 3))
        else:
            rows.append(
                b"\x00"
                + b"".join(
                    bytes((79 + x * 120 // width, 70 + y * 100 // height, 229 - x * 60 // width))
                    for x in range(width)
                )
            )
    raw = b"".join(rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
