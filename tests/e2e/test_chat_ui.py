"""The chat UI as a person uses it, in English and Korean: the conversation list (new, rename,
delete, search, unread, paging), code blocks and answers copied to the clipboard, regenerate,
reasoning collapsed, usage per answer, an answer cut off by a server crash, and signing in
with an OpenID Connect provider (authorization code + PKCE) served on a loopback port.

Screenshots of each go to the test's tmp directory; some are checked to be drawn, not blank.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import httpx
import jwt
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from playwright.async_api import Browser, Page, expect

from dari.client import connect
from tests.e2e.chat_page import ChatPage, eventually
from tests.e2e.conftest import JWT_SECRET, DariServer, free_port, start_dari, stop_dari

pytestmark = pytest.mark.browser

AGENT_MODULE = '''
from dari.agents.base import Reasoning, Usage

CODE = 'def greet(name):\\n    # say hello\\n    return f"hello {name}"'


async def thinker(request, ctx):
    """Reasons first, answers with a code block, and says what it cost."""
    yield Reasoning("The user asked: " + request.message + ". ")
    yield Reasoning("A short Python example will do.")
    yield "Here is the code:\\n\\n"
    yield "```python\\n" + CODE + "\\n```\\n\\n"
    yield "Done."
    yield Usage(prompt_tokens=1200, completion_tokens=34, total_tokens=1234, reasoning_tokens=8)
'''
CODE = 'def greet(name):\n    # say hello\n    return f"hello {name}"'

UI_PROJECT = """
[[projects]]
id = "ui"
name = "UI"

[[projects.agents]]
name = "echo"
backend = "echo"
options = { delay_ms = 10 }

[[projects.agents]]
name = "thinker"
backend = "python"
options = { entrypoint = "ui_agents:thinker" }

[[projects.agents]]
name = "slow"
backend = "echo"
options = { delay_ms = 120 }
"""

LANGS = {
    "en": {
        "locale": "en-US",
        "new": "New chat",
        "confirm": "Delete this conversation?",
        "no_match": "No loaded conversation matches",
        "copied": "Copied",
        "reasoning": "Reasoning",
        "usage": "1,234 tokens",
        "usage_detail": "reasoning 8",
        "cut": "Cut off",
        "cut_note": "cut off here",
        "sign_in": "Sign in with Test SSO",
        "regenerate": "Regenerate",
    },
    "ko": {
        "locale": "ko-KR",
        "new": "새 대화",
        "confirm": "이 대화를 삭제할까요?",
        "no_match": "일치하는 대화가 없습니다",
        "copied": "복사됨",
        "reasoning": "추론 과정",
        "usage": "토큰 1,234개",
        "usage_detail": "추론 8",
        "cut": "중간에 끊김",
        "cut_note": "여기서 끊겼습니다",
        "sign_in": "Test SSO(으)로 로그인",
        "regenerate": "다시 생성",
    },
}


@pytest.fixture(params=["en", "ko"])
def lang(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _start(tmp: Path, **options: str) -> DariServer:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "ui_agents.py").write_text(AGENT_MODULE, encoding="utf-8")  # imported from the cwd
    return start_dari(tmp, extra_toml=UI_PROJECT, **options)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DariServer]:
    server = _start(tmp_path_factory.mktemp("dari-ui"))
    yield server
    stop_dari(server)


async def open_chat(
    browser: Browser,
    base: str,
    agent: str,
    thread: str,
    lang: str,
    *,
    connected: bool = True,
    **options: Any,
) -> ChatPage:
    context = await browser.new_context(
        locale=LANGS[lang]["locale"], viewport={"width": 1200, "height": 820}, **options
    )
    chat = ChatPage(await context.new_page())
    await chat.page.goto(f"{base}/#/c/ui/{quote(agent)}/{quote(thread)}")
    if connected:
        await chat.expect_connection("connected")
        await expect(chat.page.locator("#agent-title")).to_have_text(agent)
    return chat


async def screenshot(page: Page, tmp_path: Path, name: str, lang: str) -> bytes:
    """Saved as <name>-<lang>.png in the test's tmp directory; the PNG is returned too."""
    return await page.screenshot(path=str(tmp_path / f"{name}-{lang}.png"))


# Decodes the PNG in a page of its own (no CSP there) and counts what it shows.
PIXELS_JS = """
async (url) => {
  const img = new Image();
  img.src = url;
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const g = canvas.getContext('2d');
  g.drawImage(img, 0, 0);
  const data = g.getImageData(0, 0, canvas.width, canvas.height).data;
  const counts = new Map();
  for (let i = 0; i < data.length; i += 4 * 7) {
    const key = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  return { colours: counts.size, dominant: Math.max(...counts.values()) / total };
}
"""


async def assert_drawn(browser: Browser, png: bytes) -> None:
    """The screenshot shows a page: many colours, no single one covering nearly everything."""
    page = await browser.new_page()
    url = f"data:image/png;base64,{base64.b64encode(png).decode()}"
    stats = await page.evaluate(PIXELS_JS, url)
    await page.close()
    assert stats["colours"] > 50 and stats["dominant"] < 0.9, f"looks blank: {stats}"


def thread_item(page: Page, thread: str) -> Any:
    return page.locator(f'.thread-item[data-thread="{thread}"]')


async def server_threads(server: DariServer) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.http}/api/threads", params={"limit": 200})
    response.raise_for_status()
    return list(response.json()["items"])


# --- the conversation list ------------------------------------------------------------------


async def test_conversations_new_list_unread_rename_search_and_delete(
    browser, ui_server, lang, tmp_path
):
    words = LANGS[lang]
    tag = uuid.uuid4().hex[:6]
    first = f"t-{uuid.uuid4().hex[:10]}"
    chat = await open_chat(browser, ui_server.http, "echo", first, lang)
    page = chat.page
    await chat.send(f"alpha {tag} first question")
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")
    alpha = thread_item(page, first)
    await expect(alpha.locator(".thread-title")).to_have_text(f"alpha {tag} first question")
    await expect(alpha.locator(".thread-link")).to_have_attribute("aria-current", "page")

    # New chat: a conversation of its own with the same agent, on top until it has a message.
    await page.locator("#new-chat").click()
    await expect(page).not_to_have_url(f"{ui_server.http}/#/c/ui/echo/{first}")
    second = page.url.rsplit("/", 1)[1]
    assert second.startswith("c-") and second != first
    fresh = thread_item(page, second)
    await expect(fresh.locator(".thread-title")).to_have_text(words["new"])
    await expect(fresh.locator(".thread-link")).to_have_attribute("aria-current", "page")
    await expect(alpha.locator(".thread-link")).not_to_have_attribute("aria-current", "page")
    await expect(chat.answers).to_have_count(0)
    await screenshot(page, tmp_path, "new-chat", lang)

    await chat.send(f"beta {tag} second question")
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")
    beta = thread_item(page, second)
    await expect(beta.locator(".thread-title")).to_have_text(f"beta {tag} second question")
    keys = await page.locator(".thread-item").evaluate_all(
        "rows => rows.map(r => r.dataset.thread)"
    )
    assert keys.index(second) < keys.index(first), "newest first"

    # A report in the other conversation: unread there, not here.
    response = await ui_server.post(
        "/api/projects/ui/reports",
        {"content": f"report for alpha {tag}", "agent_name": "echo", "thread_id": first},
    )
    assert response.status_code == 201, response.text
    await expect(alpha.locator(".unread")).to_have_text("1")
    await expect(beta.locator(".unread")).to_have_count(0)
    shot = await screenshot(page, tmp_path, "conversation-list", lang)
    await assert_drawn(browser, shot)

    await alpha.locator(".thread-link").click()
    await expect(page.locator(".msg-report")).to_contain_text(f"report for alpha {tag}")
    await expect(alpha.locator(".unread")).to_have_count(0)
    await expect(alpha.locator(".thread-link")).to_have_attribute("aria-current", "page")

    # Rename in place.
    await alpha.locator(".thread-rename").click()
    field = alpha.locator(".thread-rename-input")
    await expect(field).to_be_focused()
    await field.fill(f"Renamed {tag} 이름")
    await screenshot(page, tmp_path, "rename", lang)
    await field.press("Enter")
    await expect(alpha.locator(".thread-title")).to_have_text(f"Renamed {tag} 이름")
    await expect(page.locator("#agent-sub .thread-name")).to_have_text(f"Renamed {tag} 이름")
    saved = await eventually(
        lambda: server_threads(ui_server),
        lambda items: any(i["thread_id"] == first and i["title"] for i in items),
    )
    assert next(i for i in saved if i["thread_id"] == first)["title"] == f"Renamed {tag} 이름"

    # Search filters the loaded titles, ignoring case.
    search = page.locator("#thread-search")
    await search.fill(f"renamed {tag}")
    await expect(page.locator(".thread-item")).to_have_count(1)
    await expect(alpha).to_be_visible()
    await screenshot(page, tmp_path, "search", lang)
    await search.fill(f"nothing-like-{tag}")
    await expect(page.locator(".thread-item")).to_have_count(0)
    await expect(page.locator(".thread-none")).to_contain_text(words["no_match"])
    await search.fill("")
    await expect(beta).to_be_visible()

    # Delete asks first; cancelling keeps the conversation.
    dialog = page.locator("#confirm-delete")
    await beta.hover()  # the row's buttons show on hover (always on touch screens)
    await beta.locator(".thread-delete").click()
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("h2")).to_have_text(words["confirm"])
    await expect(dialog.locator(".confirm-body")).to_contain_text(f"beta {tag}")
    await screenshot(page, tmp_path, "delete-confirm", lang)
    await dialog.locator(".confirm-cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(beta).to_be_visible()

    await beta.hover()
    await beta.locator(".thread-delete").click()
    await dialog.locator(".confirm-delete").click()
    await expect(beta).to_have_count(0)
    await expect(alpha).to_be_visible()
    items = await server_threads(ui_server)
    assert second not in [i["thread_id"] for i in items]
    assert await ui_server.saved_messages("echo", second, project="ui") == []
    await screenshot(page, tmp_path, "deleted", lang)

    # Deleting the conversation on screen leaves it for a new one.
    await alpha.locator(".thread-delete").click()
    await dialog.locator(".confirm-delete").click()
    await expect(alpha).to_have_count(0)
    await expect(page).not_to_have_url(f"{ui_server.http}/#/c/ui/echo/{first}")
    await expect(chat.answers).to_have_count(0)
    assert chat.errors == []


async def test_the_list_comes_a_page_at_a_time(browser, ui_server, tmp_path):
    tag = uuid.uuid4().hex[:6]
    threads = [f"page-{tag}-{n:02d}" for n in range(55)]
    async with connect(ui_server.http.replace("http", "ws"), f"py-{tag}") as client:
        for thread in threads:  # one after another: the first is the oldest
            request_id = await client.chat(
                f"paged {tag} {thread}", agent_name="echo", project_id="ui", thread_id=thread
            )
            await client.answer(request_id, timeout=20)
    chat = await open_chat(browser, ui_server.http, "echo", threads[-1], "en")
    page = chat.page
    await expect(thread_item(page, threads[-1])).to_be_visible()
    await expect(page.locator(".thread-item")).to_have_count(50)
    await expect(thread_item(page, threads[0])).to_have_count(0)
    more = page.locator("#threads-more")
    await expect(more).to_be_visible()
    await more.click()
    await expect(thread_item(page, threads[0])).to_be_visible()
    count = await page.locator(".thread-item").count()
    assert count >= 55
    await page.locator("#thread-search").fill(f"paged {tag}")
    await expect(page.locator(".thread-item")).to_have_count(55)
    await screenshot(page, tmp_path, "paged", "en")


# --- answers: code, copy, reasoning, usage, regenerate ---------------------------------------


async def test_code_copy_reasoning_collapsed_and_usage(browser, ui_server, lang, tmp_path):
    words = LANGS[lang]
    thread = f"t-{uuid.uuid4().hex[:10]}"
    chat = await open_chat(
        browser,
        ui_server.http,
        "thinker",
        thread,
        lang,
        permissions=["clipboard-read", "clipboard-write"],
    )
    page = chat.page
    await chat.send("greet someone")
    answer = chat.last_answer()
    await expect(answer).to_have_attribute("data-status", "complete")

    reasoning = answer.locator("details.reasoning")
    await expect(reasoning).to_be_visible()
    await expect(reasoning.locator("summary")).to_have_text(words["reasoning"])
    assert await reasoning.get_attribute("open") is None, "collapsed by default"
    await expect(reasoning.locator(".reasoning-text")).to_be_hidden()
    await expect(answer.locator(".content")).not_to_contain_text("The user asked")

    block = answer.locator(".md-codeblock")
    await expect(block.locator(".code-lang")).to_have_text("python")
    await expect(block.locator(".tok-kw").first).to_have_text("def")
    await expect(block.locator(".tok-com")).to_have_text("# say hello")
    await expect(block.locator(".tok-str")).to_have_text('f"hello {name}"')
    await expect(answer.locator(".usage")).to_have_text(words["usage"])
    assert words["usage_detail"] in (await answer.locator(".usage").get_attribute("title") or "")
    shot = await screenshot(page, tmp_path, "reasoning-collapsed-usage", lang)
    await assert_drawn(browser, shot)

    copy = block.locator(".code-copy")
    await copy.click()
    await expect(copy).to_have_attribute("data-copied", "true")
    await expect(copy).to_have_text(words["copied"])
    assert await page.evaluate("navigator.clipboard.readText()") == CODE
    await screenshot(page, tmp_path, "code-copied", lang)

    whole = answer.locator(".copy-answer")
    await whole.click()
    await expect(whole).to_have_attribute("data-copied", "true")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert (
        copied
        == await chat.answer_source()
        == f"Here is the code:\n\n```python\n{CODE}\n```\n\nDone."
    )
    await screenshot(page, tmp_path, "answer-copied", lang)

    await reasoning.locator("summary").click()
    await expect(reasoning.locator(".reasoning-text")).to_be_visible()
    await expect(reasoning.locator(".reasoning-text")).to_have_text(
        "The user asked: greet someone. A short Python example will do."
    )
    await screenshot(page, tmp_path, "reasoning-open", lang)

    # From history after a reload: the same, and still collapsed.
    await page.reload()
    await chat.expect_connection("connected")
    answer = chat.last_answer()
    await expect(answer.locator(".usage")).to_have_text(words["usage"])
    await expect(answer.locator("details.reasoning")).to_be_visible()
    assert await answer.locator("details.reasoning").get_attribute("open") is None
    await expect(answer.locator(".tok-com")).to_have_text("# say hello")
    assert chat.errors == []


async def test_regenerate_sends_the_last_question_again_as_a_new_chat(
    browser, ui_server, lang, tmp_path
):
    words = LANGS[lang]
    thread = f"t-{uuid.uuid4().hex[:10]}"
    chat = await open_chat(browser, ui_server.http, "echo", thread, lang)
    page = chat.page
    await chat.send("say it once more")
    first = chat.answers.nth(0)
    await expect(first).to_have_attribute("data-status", "complete")
    regenerate = first.locator(".regenerate")
    await expect(regenerate).to_be_visible()
    await expect(regenerate).to_have_text(words["regenerate"])
    await screenshot(page, tmp_path, "regenerate-before", lang)

    await regenerate.click()
    await expect(chat.questions).to_have_count(2)
    await expect(chat.answers).to_have_count(2)
    second = chat.answers.nth(1)
    await expect(second).to_have_attribute("data-status", "complete")
    await expect(second.locator(".content")).to_have_text("say it once more")
    await expect(first.locator(".regenerate")).to_be_hidden()  # only the newest answer
    await expect(second.locator(".regenerate")).to_be_visible()
    ids = [await a.get_attribute("data-request-id") for a in (first, second)]
    assert ids[0] and ids[1] and ids[0] != ids[1], "a new chat, with a new id"
    saved = await eventually(
        lambda: ui_server.saved_messages("echo", thread, project="ui"),
        lambda m: len(m) == 4 and m[3]["status"] == "complete",
    )
    assert [m["content"] for m in saved] == ["say it once more"] * 4
    await screenshot(page, tmp_path, "regenerate-after", lang)


# --- an answer cut off by a crash --------------------------------------------------------------


async def test_an_answer_cut_by_a_crash_shows_its_saved_text_marked_cut_off(
    browser, proxy_to, lang, tmp_path
):
    words = LANGS[lang]
    server = _start(tmp_path / "server")
    try:
        proxy = await proxy_to(server)
        thread = f"t-{uuid.uuid4().hex[:10]}"
        chat = await open_chat(browser, proxy.http, "slow", thread, lang)
        text = " ".join(f"word{n}" for n in range(80))
        await chat.send(text)
        answer = chat.last_answer()
        await expect(answer.locator(".content")).to_contain_text("word3")
        await eventually(  # a checkpoint saved part of it
            lambda: server.saved_messages("slow", thread, project="ui"),
            lambda m: len(m) == 2 and m[1]["content"].startswith("word0 word1"),
        )
        server.process.kill()  # a crash: nothing is finished on the way out
        await asyncio.to_thread(server.process.wait)
        await chat.expect_connection(re.compile("reconnecting|offline"))

        server = _start(tmp_path / "server")  # same database; the old answer failed at start-up
        proxy.target_port = server.port
        await chat.expect_connection("connected")
        await expect(answer).to_have_attribute("data-status", "failed")
        await expect(answer).to_have_attribute("data-cut", "true")
        await expect(answer.locator(".badge")).to_have_text(words["cut"])
        await expect(answer.locator(".cut-mark")).to_be_visible()
        await expect(answer.locator(".cut-mark")).to_contain_text(words["cut_note"])
        saved = await server.saved_messages("slow", thread, project="ui")
        assert saved[1]["status"] == "failed" and saved[1]["content"]
        assert await chat.answer_source() == saved[1]["content"], "the saved part, as saved"
        assert "word79" not in saved[1]["content"]
        shot = await screenshot(chat.page, tmp_path, "cut-off", lang)
        await assert_drawn(browser, shot)

        await chat.page.reload()  # the same after a reload, from history alone
        await chat.expect_connection("connected")
        await expect(chat.last_answer()).to_have_attribute("data-cut", "true")
        await expect(chat.last_answer().locator(".cut-mark")).to_be_visible()
    finally:
        stop_dari(server)


# --- signing in with a provider (authorization code + PKCE) ------------------------------------


class Provider:
    """A tiny OpenID Connect provider: /authorize approves at once and redirects back with a
    code; /token checks the PKCE verifier against the challenge and issues a JWT signed with
    the key the dari server trusts."""

    def __init__(self) -> None:
        self.authorizations: list[dict[str, str]] = []
        self.exchanges: list[dict[str, str]] = []
        self.codes: dict[str, dict[str, str]] = {}
        self.port = 0
        app = FastAPI()
        app.add_middleware(
            CORSMiddleware,
            allow_origin_regex=r"http://127\.0\.0\.1:\d+",
            allow_methods=["POST"],
            allow_headers=["*"],
        )
        app.get("/authorize")(self.authorize)
        app.post("/token")(self.token)
        self.app = app

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def authorize(self, request: Request) -> RedirectResponse:
        params = dict(request.query_params)
        self.authorizations.append(params)
        code = secrets.token_urlsafe(16)
        self.codes[code] = params
        query = urlencode({"code": code, "state": params["state"]})
        return RedirectResponse(f"{params['redirect_uri']}?{query}", status_code=302)

    async def token(self, request: Request) -> JSONResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        self.exchanges.append(form)
        asked = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if (
            asked is None
            or form.get("grant_type") != "authorization_code"
            or asked["code_challenge_method"] != "S256"
            or asked["code_challenge"] != challenge
            or asked["redirect_uri"] != form.get("redirect_uri")
            or asked["client_id"] != form.get("client_id")
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {"sub": "sso-user", "iss": self.issuer, "aud": "dari-ui", "iat": now}
        claims |= {"exp": now + 600, "projects": ["*"]}
        id_claims = {**claims, "nonce": asked["nonce"]}
        return JSONResponse(
            {
                "access_token": jwt.encode(claims, JWT_SECRET, algorithm="HS256"),
                "id_token": jwt.encode(id_claims, JWT_SECRET, algorithm="HS256"),
                "token_type": "Bearer",
                "expires_in": 600,
            }
        )


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    running = Provider()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(running.app, host="127.0.0.1", port=port, log_level="warning")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the provider stopped during start-up")
            await asyncio.sleep(0.01)
    running.port = port
    yield running
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
def sso_server(provider: Provider, tmp_path: Path) -> Iterator[DariServer]:
    top = f"""
[auth]
mode = "jwt"
secret = "{JWT_SECRET}"
issuer = "{provider.issuer}"
audience = "dari-ui"

[auth.oidc]
name = "Test SSO"
issuer = "{provider.issuer}"
authorization_endpoint = "{provider.issuer}/authorize"
token_endpoint = "{provider.issuer}/token"
client_id = "dari-ui"
scopes = ["openid", "profile"]
"""
    server = _start(tmp_path / "sso", extra_top_toml=top)
    yield server
    stop_dari(server)


async def test_signing_in_with_a_provider_uses_authorization_code_and_pkce(
    browser, provider, sso_server, lang, tmp_path
):
    words = LANGS[lang]
    thread = f"t-{uuid.uuid4().hex[:10]}"
    chat = await open_chat(browser, sso_server.http, "echo", thread, lang, connected=False)
    page = chat.page
    dialog = page.locator("#signin")
    await expect(dialog).to_be_visible()
    button = dialog.locator("#oidc-signin")
    await expect(button).to_have_text(words["sign_in"])
    shot = await screenshot(page, tmp_path, "sign-in", lang)
    await assert_drawn(browser, shot)

    await button.click()
    # Away to the provider and back with a code; the page exchanges it and is signed in.
    await chat.expect_connection("connected")
    await expect(page.locator("#agent-title")).to_have_text("echo")
    assert page.url == f"{sso_server.http}/#/c/ui/echo/{thread}", "no code left in the address"
    await chat.send("signed in with a provider")
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")
    await screenshot(page, tmp_path, "signed-in", lang)

    [asked] = provider.authorizations
    assert asked["response_type"] == "code" and asked["client_id"] == "dari-ui"
    assert asked["code_challenge_method"] == "S256"
    assert asked["redirect_uri"] == f"{sso_server.http}/"
    assert asked["scope"] == "openid profile"
    [exchange] = provider.exchanges
    assert 43 <= len(exchange["code_verifier"]) <= 128
    assert exchange["code_verifier"] not in asked.values(), "only the challenge went out first"
    cookies = await page.context.cookies()
    assert [c for c in cookies if c["name"] == "dari_session" and c["httpOnly"]]
    storage = await page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")
    assert "eyJ" not in storage, "no token kept in web storage"
    assert chat.errors == []


async def test_a_sign_in_answer_this_tab_did_not_ask_for_is_refused(
    browser, provider, sso_server, tmp_path
):
    context = await browser.new_context(locale="en-US")
    page = await context.new_page()
    await page.goto(f"{sso_server.http}/?code=stolen-code&state=forged")
    dialog = page.locator("#signin")
    await expect(dialog.locator(".auth-error")).to_contain_text("state mismatch")
    assert provider.exchanges == [], "the code was never exchanged"
    assert "code=" not in page.url
    await screenshot(page, tmp_path, "sign-in-refused", "en")
