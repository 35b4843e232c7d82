"""dari's checkpointer for LangGraph graphs that keep their own memory (``history =
"checkpointer"``) and were compiled without one: on the store's database (SQLite beside it,
PostgreSQL in it), so a conversation's graph state survives a restart and is each user's own;
and interrupts work on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dari.auth.tokens import mint_token
from tests.backends.graphs import APPROVAL_DRAFT
from tests.cluster.services import fresh_pg_database, pg_url
from tests.support.client import WsClient
from tests.support.server import RunningServer, make_settings, start_server

AGENTS: list[dict[str, Any]] = [
    {"name": "memo", "backend": "langgraph",
     "options": {"entrypoint": "tests.backends.graphs:chat", "history": "checkpointer"}},
    {"name": "asks", "backend": "langgraph",
     "options": {"entrypoint": "tests.backends.graphs:approval", "history": "checkpointer"}},
]  # fmt: skip
SECRET = "checkpointer-test-secret-long-enough-for-hs256-0123456789"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'dari.db'}"
        return
    async with fresh_pg_database("dari_lgcp") as name:
        yield pg_url(name)


async def serve(tmp_path: Path, store_url: str) -> RunningServer:
    settings = make_settings(
        tmp_path,
        store={"url": store_url},
        auth={"mode": "jwt", "secret": SECRET},
        projects=[{"id": "p1", "agents": AGENTS}],
    )
    return await start_server(settings)


def token(server: RunningServer, user: str) -> str:
    return mint_token(
        server.settings.auth,
        sub=user,
        projects=["*"],
        agents=[],
        admin=False,
        ttl_s=600,
        private_key_file=None,
    )


async def ask(server: RunningServer, user: str, text: str, request_id: str) -> str:
    url = server.ws(f"/ws/chat/{user}-{request_id}?token={token(server, user)}")
    client = await WsClient.open(url)
    assert (await client.recv())["type"] == "welcome"
    await client.chat(text, agent="memo", project="p1", id=request_id)
    answer, end = await client.answer(request_id)
    assert end["finish_reason"] == "stop"
    await client.close()
    return answer


async def test_a_graphs_own_memory_survives_a_restart_and_is_each_users_own(
    tmp_path: Path, store_url: str
) -> None:
    server = await serve(tmp_path, store_url)
    try:
        first = await ask(server, "alice", "one", "a1")
        second = await ask(server, "alice", "two", "a2")
        other = await ask(server, "bob", "hello", "b1")
    finally:
        await server.stop()
    # The graph got only the new message; its checkpoint held the rest, per user.
    assert first == "1 messages (human) in thread p1/memo/main@alice with 0 images: one"
    assert second.startswith("3 messages (human ai human) in thread p1/memo/main@alice")
    assert other.startswith("1 messages (human) in thread p1/memo/main@bob")

    restarted = await serve(tmp_path, store_url)
    try:
        third = await ask(restarted, "alice", "three", "a3")
    finally:
        await restarted.stop()
    assert third.startswith("5 messages (human ai human ai human)")


async def test_an_interrupt_on_dari_s_checkpointer(tmp_path: Path, store_url: str) -> None:
    server = await serve(tmp_path, store_url)
    try:
        client = await WsClient.open(server.ws(f"/ws/chat/c1?token={token(server, 'alice')}"))
        assert (await client.recv())["type"] == "welcome"
        await client.chat("write the report", agent="asks", project="p1", id="q1")
        asked = await client.until_type("interrupt", request_id="q1")
        await client.send({"type": "resume", "interrupt_id": asked["interrupt_id"], "value": "no"})
        text, end = await client.answer("q1")
        assert (text, end["finish_reason"]) == (f"{APPROVAL_DRAFT} Sent: no.", "stop")
        await client.close()
    finally:
        await server.stop()
