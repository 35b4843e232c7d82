"""Fair use per user, over all of a user's connections and, with several nodes, all nodes: the
frame rate limit survives reconnects, answers running at once are capped (more wait for one of
theirs to end, holding up nobody else), and chats waiting are capped (queue_full past it).

On the Redis engine every test spreads the user's connections over two nodes (two servers on
one Redis): the limits are the user's, not a node's.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH, bearer, token
from tests.support.agents import gate
from tests.support.client import WsClient
from tests.support.engines import ENGINES
from tests.support.server import RunningServer
from tests.support.waiting import eventually


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


PROJECTS: list[dict[str, Any]] = [
    {
        "id": "p1",
        "agents": [
            {
                "name": "gated",
                "backend": "python",
                "options": {"entrypoint": "tests.support.agents:gated"},
            },
            {"name": "echo", "backend": "echo"},
        ],
    }
]


async def two_nodes(server_factory: ServerFactory, engine: str, **limits: Any) -> list[Any]:
    """Two servers on the Redis engine (one Redis), the same server twice on memory."""
    settings: dict[str, Any] = {"auth": HS_AUTH, "projects": PROJECTS, "limits": limits}
    first = await server_factory(**settings)
    second = await server_factory(**settings) if engine == "redis" else first
    return [first, second]


async def connect(server: RunningServer, client_id: str, user: str = "alice") -> WsClient:
    client = await WsClient.open(
        server.ws(f"/ws/chat/{client_id}"), additional_headers=bearer(token(user))
    )
    assert (await client.recv())["type"] == "welcome"
    return client


async def ping(client: WsClient, ts: int) -> dict[str, Any]:
    """The server's answer to one ping: a pong or an error."""
    await client.send({"type": "ping", "ts": ts})
    return await client.until(lambda f: f["type"] in ("pong", "error"))


# --- the rate limit ------------------------------------------------------------------------


async def test_a_second_connection_cannot_reset_a_users_rate_limit(
    server_factory: ServerFactory, engine: str
) -> None:
    # 5 frames at once, then one every 5 s: nothing refills while the test runs.
    one, two = await two_nodes(
        server_factory, engine, rate_per_s=0.2, rate_burst=5, rate_strikes_before_close=100
    )
    first = await connect(one, "alice-1")
    assert [(await ping(first, i))["type"] for i in range(5)] == ["pong"] * 5
    refused = await ping(first, 5)
    assert refused["code"] == "rate_limited"
    assert 0 < refused["retry_after"] <= 5.0

    # Another connection of hers, on the other node with Redis: the same, empty bucket.
    second = await connect(two, "alice-2")
    again = await ping(second, 6)
    assert again["code"] == "rate_limited" and 0 < again["retry_after"] <= 5.0
    # Reconnecting with the same client_id does not refill it either.
    await first.close()
    first = await connect(two, "alice-1")
    assert (await ping(first, 7))["code"] == "rate_limited"
    # Another user has a bucket of their own.
    bob = await connect(one, "bob-1", user="bob")
    assert (await ping(bob, 8))["type"] == "pong"


# --- answers running at once ---------------------------------------------------------------


async def chat(client: WsClient, thread: str, message: str, chat_id: str) -> dict[str, Any]:
    """Send a chat to the gated agent; returns its ack (or the error refusing it)."""
    await client.send(
        {
            "type": "chat",
            "message": message,
            "project_id": "p1",
            "agent_name": "gated",
            "thread_id": thread,
            "id": chat_id,
        }
    )
    return await client.until(
        lambda f: f.get("request_id") == chat_id and f["type"] in ("ack", "error")
    )


async def test_past_max_running_per_user_a_chat_waits_for_one_of_theirs_and_nobody_else_does(
    server_factory: ServerFactory, engine: str
) -> None:
    """With ``max_running_per_user = 2``, a third chat in a third conversation is accepted and
    queued (documented): it starts when one of the user's answers ends. Meanwhile another user
    is answered at once."""
    one, two = await two_nodes(server_factory, engine, max_running_per_user=2)
    gates = [f"g-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    alice = await connect(one, "alice-a")
    elsewhere = await connect(two, "alice-b")
    for i in range(2):
        assert (await chat(alice, f"t{i}", gates[i], f"c{i}"))["type"] == "ack"
        await alice.until(lambda f, i=i: f["type"] == "response" and f["request_id"] == f"c{i}")
    ack = await chat(elsewhere, "t2", gates[2], "c2")
    assert ack["type"] == "ack" and ack["queued"] == 0  # its conversation is free

    async def third_waits() -> bool:
        return await one.gateway.quotas.counts("alice") == (1, 2)

    await eventually(third_waits)
    assert not [f for f in elsewhere.frames if f.get("request_id") == "c2" and f["type"] == "start"]

    # Bob is not held up by Alice's waiting chat.
    bob = await connect(two, "bob-a", user="bob")
    await bob.chat("hello bob", project="p1", id="b1")
    text, end = await bob.answer("b1")
    assert (text, end["finish_reason"]) == ("hello bob", "stop")
    assert await one.gateway.quotas.counts("alice") == (1, 2)

    gate(gates[0]).set()  # her first answer ends: the third one starts
    await alice.until_type("end", request_id="c0")
    await elsewhere.until_type("start", request_id="c2")
    gate(gates[1]).set()
    gate(gates[2]).set()
    for client, request in ((alice, "c1"), (elsewhere, "c2")):
        text, end = await client.answer(request)
        assert end["finish_reason"] == "stop" and text.endswith("done")

    async def all_given_back() -> bool:
        return await one.gateway.quotas.counts("alice") == (0, 0)

    await eventually(all_given_back)


async def test_a_chat_cancelled_while_waiting_for_its_turn_ends_cancelled(
    server_factory: ServerFactory, engine: str
) -> None:
    one, _ = await two_nodes(server_factory, engine, max_running_per_user=1)
    gates = [f"g-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    alice = await connect(one, "alice-c")
    await chat(alice, "t0", gates[0], "c0")
    await alice.until_type("start", request_id="c0")
    await chat(alice, "t1", gates[1], "c1")

    async def second_waits() -> bool:
        return await one.gateway.quotas.counts("alice") == (1, 1)

    await eventually(second_waits)
    await alice.send({"type": "cancel", "request_id": "c1"})
    end = await alice.until_type("end", request_id="c1")
    assert end["finish_reason"] == "cancelled"
    assert not [f for f in alice.frames if f.get("request_id") == "c1" and f["type"] == "start"]
    assert await one.gateway.quotas.counts("alice") == (0, 1)
    gate(gates[0]).set()
    assert (await alice.answer("c0"))[1]["finish_reason"] == "stop"


# --- chats waiting --------------------------------------------------------------------------


async def test_past_max_queued_per_user_a_chat_is_refused_with_queue_full(
    server_factory: ServerFactory, engine: str
) -> None:
    one, two = await two_nodes(
        server_factory, engine, max_running_per_user=1, max_queued_per_user=1
    )
    gates = [f"g-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    alice = await connect(one, "alice-q")
    elsewhere = await connect(two, "alice-r")
    assert (await chat(alice, "t0", gates[0], "c0"))["type"] == "ack"
    await alice.until_type("start", request_id="c0")  # runs
    assert (await chat(alice, "t1", gates[1], "c1"))["type"] == "ack"  # waits for her turn
    refused = await chat(elsewhere, "t2", gates[2], "c2")
    assert refused["type"] == "error" and refused["code"] == "queue_full"
    # A resend of a chat she already has is still acknowledged as a duplicate.
    duplicate = await chat(elsewhere, "t1", gates[1], "c1")
    assert duplicate["type"] == "ack" and duplicate["duplicate"] is True
    # Bob is not counted with her.
    bob = await connect(two, "bob-q", user="bob")
    await bob.chat("bob here", project="p1", id="b1")
    assert (await bob.answer("b1"))[0] == "bob here"

    gate(gates[0]).set()
    await alice.until_type("end", request_id="c0")
    gate(gates[1]).set()
    assert (await alice.answer("c1"))[1]["finish_reason"] == "stop"
    # Her chats ended: she may send again.
    assert (await chat(elsewhere, "t2", gates[2], "c2"))["type"] == "ack"
    gate(gates[2]).set()
    assert (await elsewhere.answer("c2"))[1]["finish_reason"] == "stop"
