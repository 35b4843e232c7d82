"""Conversations owned by users on three nodes (Redis + PostgreSQL), with JWT users: two users'
``main`` never meet, whichever nodes their sockets, answers and reports are on; a shared thread
is seen by both until it is unshared."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.cluster.clients import TIMEOUT_S, chat, connect, subscribe, text_of, unique, words
from tests.cluster.nodes import Node, cluster, token
from tests.support.client import WsClient
from tests.support.waiting import eventually

SECRET = secrets.token_urlsafe(48)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    async with cluster(tmp_path, 3, delay_ms=20, jwt_secret=SECRET) as started:
        yield started


def leaked(client: WsClient, marker: str) -> bool:
    return marker in json.dumps(client.frames, ensure_ascii=False)


async def settle(client: WsClient) -> None:
    """Everything logged for the client before now has arrived once its pong does."""
    ts = uuid.uuid4().hex
    await client.send({"type": "ping", "ts": ts})
    await client.until_type("pong", TIMEOUT_S, ts=ts)


async def ask(client: WsClient, frame: dict[str, Any], reply: str) -> dict[str, Any]:
    await client.send(frame)
    answer: dict[str, Any] = await client.until(lambda f: f["type"] in (reply, "error"), TIMEOUT_S)
    return answer


def rest(node: Node, user: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token(SECRET, user)}"}
    return httpx.AsyncClient(base_url=node.http, headers=headers, timeout=10)


async def test_two_users_mains_stay_apart_across_nodes(nodes: list[Node]) -> None:
    a, b, c = nodes
    alice_id = unique("alice")
    alice = await connect(a, alice_id, token=token(SECRET, "alice"))
    alice_tab = await connect(c, unique("alice-tab"), token=token(SECRET, "alice"))
    bob = await connect(b, unique("bob"), token=token(SECRET, "bob"))
    for client in (alice_tab, bob):
        await subscribe(client, "main")  # each their own main
    alice_words, bob_words = words("alice", 40), words("bob", 40)
    await chat(alice, alice_words, "main", "same-id")  # the same request id on purpose
    await chat(bob, bob_words, "main", "same-id")
    await alice.until_type("end", TIMEOUT_S, request_id="same-id")
    await bob.until_type("end", TIMEOUT_S, request_id="same-id")
    await alice_tab.until_type("end", TIMEOUT_S, request_id="same-id")
    assert text_of(alice, "same-id") == text_of(alice_tab, "same-id") == alice_words
    assert text_of(bob, "same-id") == bob_words
    for client in (alice, alice_tab, bob):
        await settle(client)
    assert not leaked(alice, "bob0") and not leaked(alice_tab, "bob0")
    assert not leaked(bob, "alice0")

    # history through a third node, and the listing through another.
    for node, user, mine in ((c, "alice", alice_words), (a, "bob", bob_words)):
        async with rest(node, user) as http:
            page = (await http.get("/api/projects/p1/agents/slow/threads/main/messages")).json()
            listed = (await http.get("/api/threads")).json()
        assert [m["content"] for m in page["messages"]] == [mine, mine]
        assert [(i["thread_id"], i["title"]) for i in listed["items"]] == [
            ("main", mine[:60].rsplit(" ", 1)[0] + "…")
        ]

    # Alice resumes on node c from seq 0: her frames, none of bob's.
    await alice.close()
    resumed = await WsClient.open(
        c.ws(f"/ws/chat/{alice_id}?last_seq=0"),
        max_queue=None,
        additional_headers={"Authorization": f"Bearer {token(SECRET, 'alice')}"},
    )
    assert (await resumed.recv())["resumed"] is True
    await settle(resumed)
    assert leaked(resumed, "alice0") and not leaked(resumed, "bob0")
    for client in (resumed, alice_tab, bob):
        await client.close()


async def test_a_report_reaches_only_the_owner_on_any_node(nodes: list[Node]) -> None:
    a, b, c = nodes
    alice = await connect(a, unique("alice"), token=token(SECRET, "alice"))
    alice_tab = await connect(c, unique("alice-tab"), token=token(SECRET, "alice"))
    bob = await connect(b, unique("bob"), token=token(SECRET, "bob"))
    for client in (alice_tab, bob):
        await subscribe(client, None)  # the whole project
    task = f"task-{uuid.uuid4().hex}"
    await chat(alice, f"/delegate worker {task}", "main", "delegating", agent="desk")
    report = await alice_tab.until_type("auto_report", TIMEOUT_S)
    assert report["content"] == task and report["thread_id"] == "main"
    await alice.until_type("auto_report", TIMEOUT_S)
    await settle(bob)
    assert not leaked(bob, task)
    async with rest(b, "bob") as http:
        refused = await http.get(
            f"/api/projects/p1/agents/worker/threads/task-{report['task_id']}/messages"
        )
    assert refused.status_code == 403
    for client in (alice, alice_tab, bob):
        await client.close()


async def test_a_shared_thread_is_seen_across_nodes_until_unshared(nodes: list[Node]) -> None:
    a, b, c = nodes
    alice = await connect(a, unique("alice"), token=token(SECRET, "alice"))
    bob_id = unique("bob")
    bob = await connect(c, bob_id, token=token(SECRET, "bob"))
    thread = unique("plan")
    await chat(alice, "first words", thread, "a-1")
    await alice.until_type("end", TIMEOUT_S, request_id="a-1")
    names = {"project_id": "p1", "agent_name": "slow", "thread_id": thread}
    assert (await ask(bob, {"type": "subscribe", **names}, "subscribed"))["code"] == "forbidden"

    async with rest(b, "alice") as http:
        shared = await http.post(f"/api/projects/p1/agents/slow/threads/{thread}/share")
    assert shared.json()["shared"] is True
    assert (await ask(bob, {"type": "subscribe", **names}, "subscribed"))["type"] == "subscribed"
    await chat(alice, "for the team", thread, "a-2")
    await bob.until_type("end", TIMEOUT_S, request_id="a-2")
    assert text_of(bob, "a-2") == "for the team"
    listed = await ask(bob, {"type": "threads"}, "threads")
    assert [(i["thread_id"], i["shared"]) for i in listed["items"]] == [(thread, True)]

    redis = aioredis.Redis.from_url(c.redis_url)  # the cluster's own Redis
    subscribers = "dari:subs:c:" + json.dumps(["p1", "slow", thread], separators=(",", ":"))
    try:
        assert not await _absent(redis, subscribers, bob_id)  # bob follows it, on node c
        async with rest(b, "alice") as http:
            unshared = await http.post(f"/api/projects/p1/agents/slow/threads/{thread}/unshare")
        assert unshared.json()["shared"] is False
        # Node c hears of it on the bus and ends bob's subscription (recorded in Redis).
        await eventually(lambda: _absent(redis, subscribers, bob_id), timeout=TIMEOUT_S)
    finally:
        await redis.aclose()
    await chat(alice, "private again", thread, "a-3")
    await alice.until_type("end", TIMEOUT_S, request_id="a-3")
    await settle(bob)
    assert not leaked(bob, "private again")
    assert (await ask(bob, {"type": "history", **names}, "history"))["code"] == "forbidden"
    for client in (alice, bob):
        await client.close()


async def _absent(redis: aioredis.Redis, key: str, member: str) -> bool:
    return await redis.zscore(key, member) is None
