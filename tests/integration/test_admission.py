"""Idempotency comes before admission, and a socket that failed half-way is not left attached.

Both on one node and on the several-node engine.
"""

from __future__ import annotations

import httpx
import pytest

from dari.protocol.errors import StoreUnavailable
from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.engines import ENGINES


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _project(policy: str) -> dict[str, object]:
    return {
        "projects": [
            {
                "id": "p1",
                "agents": [
                    {
                        "name": "slow",
                        "backend": "echo",
                        "policy": policy,
                        "options": {"delay_ms": 40},
                    }
                ],
            }
        ],
        "limits": {"queue_size": 1},
    }


WORDS = " ".join(f"w{i}" for i in range(25))


async def _reply_to(client: WsClient, frame_id: str) -> dict[str, object]:
    """The next ``ack`` or ``error`` about chat ``frame_id`` (frames already seen excluded)."""
    return await client.until(
        lambda f: f.get("type") in ("ack", "error")
        and frame_id in (f.get("id"), f.get("request_id"))
    )


@pytest.mark.parametrize("policy", ["enqueue", "reject", "interrupt"])
async def test_a_resent_chat_is_acked_as_a_duplicate_under_every_policy(
    server_factory: ServerFactory, policy: str
) -> None:
    server = await server_factory(**_project(policy))
    client = await WsClient.open(server.ws("/ws/chat/resender"))
    await client.recv()
    await client.chat(WORDS, agent="slow", project="p1", id="x1")
    first = await client.until_type("ack", id="x1")
    await client.until_type("response", request_id="x1")
    # While its answer runs (the conversation is busy: reject would refuse a new chat, and
    # interrupt would cancel the running one), the same chat is sent again.
    await client.chat(WORDS, agent="slow", project="p1", id="x1")
    second = await _reply_to(client, "x1")
    assert second["type"] == "ack", second
    assert second["duplicate"] is True and second["request_id"] == first["request_id"]
    text, end = await client.answer("x1", timeout=30)
    assert text == WORDS and end["finish_reason"] == "stop"  # not interrupted by its resend
    history = await server.gateway.store.history(ConversationKey("p1", "slow"), 10)
    assert [m.role for m in history] == ["user", "assistant"]  # saved once
    await client.close()


async def test_a_resent_chat_is_acked_when_the_queue_is_full(server_factory: ServerFactory) -> None:
    server = await server_factory(**_project("enqueue"))
    client = await WsClient.open(server.ws("/ws/chat/full"))
    await client.recv()
    for n in range(2):  # one runs, one waits: the queue (size 1) is full
        await client.chat(WORDS, agent="slow", project="p1", id=f"q{n}")
        await client.until_type("ack", id=f"q{n}")
    await client.chat("one more", agent="slow", project="p1", id="q2")
    refused = await client.until_type("error", request_id="q2")
    assert refused["code"] == "queue_full"
    await client.chat(WORDS, agent="slow", project="p1", id="q1")  # the waiting one, again
    again = await _reply_to(client, "q1")
    assert again["type"] == "ack" and again["duplicate"] is True and again["queued"] == 0
    for n in range(2):
        text, end = await client.answer(f"q{n}", timeout=30)
        assert text == WORDS and end["finish_reason"] == "stop"
    await client.close()


async def test_a_resent_chat_is_acked_after_its_agent_stopped(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**_project("enqueue"))
    client = await WsClient.open(server.ws("/ws/chat/stopper"))
    await client.recv()
    await client.chat("short", agent="slow", project="p1", id="s1")
    await client.answer("s1", timeout=30)
    async with httpx.AsyncClient(base_url=server.http) as http:
        stopped = await http.post("/api/projects/p1/agents/slow/stop")
        assert stopped.status_code == 200 and stopped.json()["running"] is False
    await client.chat("short", agent="slow", project="p1", id="s1")
    again = await _reply_to(client, "s1")
    assert again["type"] == "ack" and again["duplicate"] is True
    await client.chat("new", agent="slow", project="p1", id="s2")  # a new chat is refused
    refused = await client.until_type("error", request_id="s2")
    assert refused["code"] == "agent_not_running"
    await client.close()


async def test_a_socket_that_fails_while_attaching_is_detached(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await server_factory()
    hub, delivery = server.gateway.hub, server.gateway.delivery
    original = delivery.attached

    async def unreachable(client_id: str) -> None:
        raise StoreUnavailable("shared state unreachable: injected")

    monkeypatch.setattr(delivery, "attached", unreachable)
    failing = await WsClient.open(server.ws("/ws/chat/blip"))
    assert await failing.closed_with() == 1013  # try again later
    state = hub.clients["blip"]
    assert state.connection is None
    assert hub.open_connections(state.user_id) == 0  # not counted against the user's cap
    monkeypatch.setattr(delivery, "attached", original)
    client = await WsClient.open(server.ws("/ws/chat/blip"))
    welcome = await client.recv()
    assert welcome["type"] == "welcome"
    await client.chat("hello there")
    text, _ = await client.answer((await client.until_type("ack"))["request_id"])
    assert text
    await client.close()
