"""Bounded by bytes: history replies are pages of at most ``limits.max_history_bytes`` that a
client follows to the start with ``before``, and a client that left costs nothing once its
replay window has passed."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.engines import ENGINES
from tests.support.server import RunningServer
from tests.support.waiting import eventually


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


CAP = 64 * 1024  # max_history_bytes
ECHO = {"projects": [{"id": "p1", "agents": [{"name": "echo", "backend": "echo"}]}]}
NAMES = {"project_id": "p1", "agent_name": "echo"}


async def chats(client: WsClient, texts: list[str]) -> None:
    for i, text in enumerate(texts):
        await client.chat(text, project="p1", id=f"c{i}")
        await client.answer(f"c{i}", timeout=20)


async def history_page(client: WsClient, before: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "history", **NAMES, "limit": 500}
    if before is not None:
        frame["before"] = before
    await client.send(frame)
    reply = await client.until_type("history")
    # The reply as the server wrote it (orjson, same key order): never past the cap.
    assert len(orjson.dumps(reply)) <= CAP
    return reply


async def test_history_pages_stay_under_the_byte_cap_and_lead_to_the_start(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(limits={"max_history_bytes": CAP}, **ECHO)
    client = await WsClient.open(server.ws("/ws/chat/pager"))
    await client.recv()
    texts = [f"{i:02d}" + "x" * 5000 for i in range(20)]  # 40 messages, ~200 KB in all
    await chats(client, texts)

    pages, before = [], None
    while True:
        page = await history_page(client, before)
        pages.append(page)
        assert page["messages"], "a page with more: true is never empty"
        if not page["more"]:
            assert page["before"] is None
            break
        assert page["before"] == page["messages"][0]["id"]  # the cursor of the next page
        before = page["before"]
    assert len(pages) >= 3
    messages = [m for page in reversed(pages) for m in page["messages"]]
    ids = [m["id"] for m in messages]
    assert ids == sorted(set(ids)) and len(ids) == 40
    assert [m["content"] for m in messages if m["role"] == "user"] == texts
    assert not any(m.get("truncated") for m in messages)

    # A page cut by `limit` says that more is older, too.
    await client.send({"type": "history", **NAMES, "limit": 3})
    small = await client.until_type("history")
    assert len(small["messages"]) == 3 and small["more"] is True


async def test_rest_messages_are_paged_by_bytes_too(server_factory: ServerFactory) -> None:
    server = await server_factory(limits={"max_history_bytes": CAP}, **ECHO)
    client = await WsClient.open(server.ws("/ws/chat/rest-pager"))
    await client.recv()
    await chats(client, [f"{i:02d}" + "y" * 8000 for i in range(8)])
    path = "/api/projects/p1/agents/echo/threads/main/messages"
    seen: list[int] = []
    async with httpx.AsyncClient(base_url=server.http) as http:
        params: dict[str, Any] = {"limit": 500}
        while True:
            response = await http.get(path, params=params)
            assert response.status_code == 200 and len(response.content) <= CAP
            body = response.json()
            seen = [m["id"] for m in body["messages"]] + seen
            if not body["more"]:
                break
            params["before"] = body["before"]
    assert len(seen) == 16 and seen == sorted(set(seen))


async def test_a_message_larger_than_a_page_comes_cut_and_marked(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(limits={"max_history_bytes": CAP}, **ECHO)
    client = await WsClient.open(server.ws("/ws/chat/big-message"))
    await client.recv()
    text = "가" * 100_000  # 300 KB in UTF-8: one message is more than a page
    await chats(client, ["small first", text])
    page = await history_page(client)
    [answer] = page["messages"]
    assert answer["truncated"] is True and answer["role"] == "assistant"
    assert answer["content"] and text.startswith(answer["content"])
    assert page["more"] is True
    page = await history_page(client, page["before"])
    [question] = page["messages"]
    assert question["truncated"] is True and question["role"] == "user"
    page = await history_page(client, page["before"])
    assert [m["content"] for m in page["messages"]][-1] == "small first"
    assert not any(m.get("truncated") for m in page["messages"])


async def test_a_client_that_left_is_forgotten_within_the_replay_window(
    server_factory: ServerFactory, engine: str
) -> None:
    """A client with no socket costs nothing once its frames have expired (memory: the
    janitor drops its log; Redis: the stream expires); a client still connected keeps its
    numbering."""
    server: RunningServer = await server_factory(
        replay={"max_age_s": 1.0}, limits={"max_history_bytes": CAP}, **ECHO
    )
    replay: Any = server.gateway.replay
    stays = await WsClient.open(server.ws("/ws/chat/stays"))
    await stays.recv()
    leaves = await WsClient.open(server.ws("/ws/chat/leaves"))
    await leaves.recv()
    await chats(leaves, ["x" * 50_000])
    await history_page(leaves)
    await stays.send({"type": "ping", "ts": 1})
    first = await stays.until_type("pong")
    await leaves.close()
    if engine == "memory":
        assert replay.client_bytes("leaves") > 100_000  # the answer's pieces and the history
        await eventually(lambda: "leaves" not in replay, timeout=10)
        assert "stays" in replay
        assert replay.total_bytes == replay.client_bytes("stays")
    else:
        _, stream = replay.log_keys("leaves")

        async def expired() -> bool:
            return not await replay.redis.exists(stream)

        await eventually(expired, timeout=10)
    await stays.send({"type": "ping", "ts": 2})
    second = await stays.until_type("pong")
    assert second["seq"] == first["seq"] + 1
    await stays.close()
