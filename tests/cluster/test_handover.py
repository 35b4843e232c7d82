"""Queue hand-over across nodes under a stalled database, at scale.

Each of 120 conversations gets two chats at once from clients on two different nodes, so its
queue is handed from one node's lease to the next. Meanwhile PostgreSQL is stalled (the
messages table locked for longer than a lease) while answers are being saved. Every client
must get the ``end`` of every answer in its conversations without sending anything more, each
conversation's answers must run one at a time, and its history must be in run order.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import redis.asyncio as redis

from tests.cluster.clients import (
    TIMEOUT_S,
    connect,
    fence,
    history,
    rows,
    subscribe,
    text_of,
    unique,
    words,
)
from tests.cluster.nodes import LEASE_S, REAP_S, Node
from tests.cluster.services import pg_url
from tests.support.client import WsClient
from tests.support.waiting import eventually

CONVERSATIONS = 120
STALL_S = LEASE_S + 1.0  # longer than a lease: renewals must carry the answers through it


async def _stall(node: Node, started: asyncio.Event, seconds: float) -> None:
    """Hold the messages table so that no answer can be saved, then let go."""
    conn = await asyncpg.connect(pg_url(node.database, "postgresql"), timeout=5)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
            started.set()
            await asyncio.sleep(seconds)  # the fault: a database that does not answer for a while
    finally:
        await conn.close()


async def _every_end(client: WsClient, request_ids: set[str]) -> None:
    """Read until the client has seen the ``end`` of each of ``request_ids`` (it sends
    nothing meanwhile)."""
    pending = set(request_ids)

    def seen(frame: dict[str, Any]) -> bool:
        if frame.get("type") == "end":
            pending.discard(frame.get("request_id", ""))
        return not pending

    if pending:
        try:
            await client.until(seen, timeout=TIMEOUT_S * 3)
        except TimeoutError:
            errors = [f for f in client.frames if f.get("type") == "error"][:3]
            raise AssertionError(
                f"no end for {sorted(pending)[:5]} ({len(pending)}); errors: {errors}"
            ) from None


async def _failed_once(node: Node, watcher: WsClient, request_id: str) -> str:
    """A reaper ended the answer: the watcher saw one ``agent_failed`` error, then ``end``
    ``error``, and the answer is saved ``failed`` with exactly the text the watcher received,
    which is returned."""
    await fence(node, watcher)
    ended = [
        (f["type"], f.get("code") or f.get("finish_reason"))
        for f in watcher.frames
        if f["type"] in ("error", "end") and f.get("request_id") == request_id
    ]
    assert ended == [("error", "agent_failed"), ("end", "error")]
    received = text_of(watcher, request_id)
    (answer,) = await rows(
        node,
        "SELECT content, status FROM messages WHERE request_id = $1 AND role = 'assistant'",
        request_id,
    )
    assert tuple(answer) == (received, "failed")
    return received


async def test_every_end_arrives_and_history_is_run_order_through_a_stalled_database(
    nodes: list[Node],
) -> None:
    tag = unique("h")
    threads = [f"{tag}-{n}" for n in range(CONVERSATIONS)]
    # Four clients per node; conversation n is written from node n % 3 and node (n + 1) % 3.
    clients = [
        [await connect(node, unique(f"c-{node.name}-{k}")) for k in range(4)] for node in nodes
    ]
    pairs = [
        (clients[n % 3][(n // 3) % 4], clients[(n + 1) % 3][(n // 3) % 4])
        for n in range(CONVERSATIONS)
    ]
    watching: dict[int, list[str]] = {id(c): [] for row in clients for c in row}
    for thread, pair in zip(threads, pairs, strict=True):
        for client in pair:
            watching[id(client)].append(thread)

    async def watch(client: WsClient) -> None:
        # Subscribed before any chat: each sees both answers of its conversations whole.
        for thread in watching[id(client)]:
            await subscribe(client, thread)

    await asyncio.gather(*(watch(c) for row in clients for c in row))

    async def send(client: WsClient, thread: str, request_id: str, label: str) -> None:
        await client.chat(
            words(label, 8), agent="slow", project="p1", thread_id=thread, id=request_id
        )

    sends = []
    for thread, (first, second) in zip(threads, pairs, strict=True):
        sends.append(send(first, thread, f"{thread}-a", "a"))
        sends.append(send(second, thread, f"{thread}-b", "b"))
    mine = {
        id(c): {f"{t}-{x}" for t in watching[id(c)] for x in "ab"} for row in clients for c in row
    }
    stalled = asyncio.Event()
    stall = asyncio.create_task(_stall(nodes[0], stalled, STALL_S))
    await asyncio.gather(*sends)
    await stalled.wait()
    await asyncio.gather(*(_every_end(c, mine[id(c)]) for row in clients for c in row))
    await stall

    everyone = [c for row in clients for c in row]
    for n, thread in enumerate(threads):
        a, b = f"{thread}-a", f"{thread}-b"
        witness = pairs[n][0]
        lifecycle = [
            (f["type"], f["request_id"])
            for f in witness.frames
            if f.get("type") in ("start", "end") and f.get("request_id") in (a, b)
        ]
        first, second = lifecycle[0][1], lifecycle[2][1]
        # One at a time: the second starts only after the first has ended (and was saved).
        assert lifecycle == [("start", first), ("end", first), ("start", second), ("end", second)]
        assert {first, second} == {a, b}
        saved = await history(nodes[n % 3], thread)
        # History order is run order: questions and answers both in the order they ran.
        assert [m["request_id"] for m in saved if m["role"] == "user"] == [first, second]
        assert [m["request_id"] for m in saved if m["role"] == "assistant"] == [first, second]
        for message in saved:
            if message["role"] == "assistant":
                assert message["status"] == "complete"
                label = message["request_id"][-1]
                assert message["content"] == words(label, 8)
                assert text_of(witness, message["request_id"]) == words(label, 8)
    for client in everyone:
        await client.close()


async def test_a_node_killed_after_claiming_an_end_but_before_logging_it_is_ended_by_a_reaper(
    nodes: list[Node],
) -> None:
    """The node running an answer claims its end, then saves it, then logs ``end``. Killed
    while the save waits (the answer's row is locked), its claim must not keep the answer
    from ever ending: a reaper on another node takes the claim over and ends it once."""
    a, b, _c = nodes
    thread, request_id = unique("t"), unique("r")
    watcher = await connect(a, unique("watcher"))
    await subscribe(watcher, thread)
    asker = await connect(b, unique("asker"))
    await asker.chat(words("w", 30), agent="slow", project="p1", thread_id=thread, id=request_id)
    await watcher.until_type("response", TIMEOUT_S, request_id=request_id)

    conn = await asyncpg.connect(pg_url(b.database, "postgresql"), timeout=5)
    shared = redis.Redis.from_url(b.redis_url)
    try:
        async with conn.transaction():
            locked = await conn.fetch(
                "SELECT id FROM messages WHERE request_id = $1 AND role = 'assistant' FOR UPDATE",
                request_id,
            )
            assert len(locked) == 1

            async def claimed_by_b() -> bool:
                claims = [await shared.get(k) async for k in shared.scan_iter("dari:ended:*")]
                return claims == [b"node-b"]  # claimed, its end not logged ("node-b!")

            await eventually(claimed_by_b, TIMEOUT_S)
            await b.kill()
        # The lock is gone with the transaction; a reaper ends the answer after the lease.
        await watcher.until_type("end", LEASE_S + 10 * REAP_S + 10, request_id=request_id)
        assert [await shared.get(k) async for k in shared.scan_iter("dari:ended:*")] != [b"node-b"]
    finally:
        await conn.close()
        await shared.aclose()
    received = await _failed_once(a, watcher, request_id)
    assert received == words("w", 30)  # every piece was out before the end was claimed
    await watcher.close()
    await asker.close()


async def test_a_reaper_killed_while_ending_a_dead_nodes_answer_is_replaced_by_another(
    nodes: list[Node],
) -> None:
    """A reaper ends the answer of a node that died (b). Killed itself while it saves that
    answer (the row is locked), the answer must still end, once: the conversation stays due
    while a reaper works on it, so another node's reaper takes the claim over and ends it."""
    a, b, c = nodes
    thread, request_id = unique("t"), unique("r")
    watchers = {node.name: await connect(node, unique("watcher")) for node in (a, c)}
    for watcher in watchers.values():
        await subscribe(watcher, thread)
    asker = await connect(b, unique("asker"))
    await asker.chat(words("w", 40), agent="slow", project="p1", thread_id=thread, id=request_id)
    for watcher in watchers.values():
        await watcher.until_type("response", TIMEOUT_S, request_id=request_id)

    conn = await asyncpg.connect(pg_url(a.database, "postgresql"), timeout=5)
    shared = redis.Redis.from_url(a.redis_url)
    # A reaper's claim names its node ("<node>~r"); the answer's own node would be "node-b".
    reaper_claims = {
        claim.encode(): node for node in (a, c) for claim in (node.name, f"{node.name}~r")
    }

    async def claim() -> bytes | None:
        values = [await shared.get(k) async for k in shared.scan_iter("dari:ended:*")]
        return values[0] if len(values) == 1 else None

    try:
        async with conn.transaction():
            await conn.fetch(
                "SELECT id FROM messages WHERE request_id = $1 AND role = 'assistant' FOR UPDATE",
                request_id,
            )
            await b.kill()

            async def claimed_by_a_reaper() -> bool:
                return await claim() in reaper_claims

            await eventually(claimed_by_a_reaper, LEASE_S + 10 * REAP_S + 10)
            first_claim = await claim()
            assert first_claim is not None
            first = reaper_claims[first_claim]
            await first.kill()  # while its save waits for the row
        survivor = c if first is a else a
        watcher = watchers[survivor.name]
        await watcher.until_type("end", 2 * LEASE_S + 10 * REAP_S + 10, request_id=request_id)
        assert await claim() == f"{survivor.name}~r!".encode()  # ended by the survivor, logged
    finally:
        await conn.close()
        await shared.aclose()
    received = await _failed_once(survivor, watcher, request_id)
    assert received and words("w", 40).startswith(received)
    for client in (*watchers.values(), asker):
        with contextlib.suppress(Exception):
            await client.close()
