"""Request ids are chosen per user, on every node: cancelling by id through another node
reaches only the caller's own chats, never another user's that happen to share the id."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.clients import TIMEOUT_S, chat, connect, rows, text_of, unique, words
from tests.cluster.nodes import Node, cluster, token

SECRET = secrets.token_urlsafe(48)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    async with cluster(tmp_path, 2, delay_ms=20, jwt_secret=SECRET) as started:
        yield started


async def test_a_user_cannot_cancel_another_users_request_through_another_node(
    nodes: list[Node],
) -> None:
    a, b = nodes
    thread = unique("t")
    alice = await connect(a, unique("alice"), token=token(SECRET, "alice"))
    bob = await connect(b, unique("bob"), token=token(SECRET, "bob"))
    await chat(alice, words("alice", 400), thread, "same")  # runs on a
    await alice.until_type("response", TIMEOUT_S, request_id="same")

    # Bob has no chat "same": through b, alice's looks exactly like a missing one.
    await bob.send({"type": "cancel", "request_id": "same"})
    error = await bob.until_type("error", TIMEOUT_S, request_id="same")
    assert error["code"] == "not_found"
    # Bob's own chat with the same id (in a conversation of his: a shared one would show
    # both users' frames under one request id) is his to cancel, and only his.
    await chat(bob, words("bob", 400), unique("t"), "same")  # runs on b
    await bob.until_type("response", TIMEOUT_S, request_id="same")
    await bob.send({"type": "cancel", "request_id": "same"})
    stopped = await bob.until_type("end", TIMEOUT_S, request_id="same")
    assert stopped["finish_reason"] == "cancelled"

    # Alice's answer went on through all that (a cancel would have ended it by now) ...
    for _ in range(5):
        await alice.until_type("response", TIMEOUT_S, request_id="same")
    assert not [f for f in alice.frames if f["type"] == "end"]
    # ... until she cancels it herself, from b.
    alice_on_b = await connect(b, unique("alice-2"), token=token(SECRET, "alice"))
    await alice_on_b.send({"type": "cancel", "request_id": "same"})
    end = await alice.until_type("end", TIMEOUT_S, request_id="same")
    assert end["finish_reason"] == "cancelled"
    assert [f for f in alice_on_b.frames if f["type"] == "error"] == []

    saved = await rows(
        a,
        "SELECT m.content, m.status FROM messages m JOIN conversations c "
        "ON c.id = m.conversation_id WHERE c.thread_id = $1 AND m.role = 'assistant'",
        thread,
    )
    assert [tuple(row) for row in saved] == [(text_of(alice, "same"), "cancelled")]
    for client in (alice, bob, alice_on_b):
        await client.close()
