"""Three ``dari serve`` processes on one Redis and one PostgreSQL, as behind a load balancer
without sticky sessions: any client may reach any node at any time."""

from __future__ import annotations

import time

import httpx

from tests.cluster.clients import (
    TIMEOUT_S,
    chat,
    connect,
    contiguous,
    history,
    subscribe,
    text_of,
    unique,
    words,
)
from tests.cluster.nodes import LEASE_S, REAP_S, Node


async def test_a_client_on_one_node_gets_answers_and_broadcasts_made_on_the_others(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    thread = unique("t")
    watcher = await connect(a, unique("watcher"))
    await subscribe(watcher, thread)
    from_b, from_c = await connect(b, unique("from-b")), await connect(c, unique("from-c"))

    await chat(from_b, words("b", 12), thread, "rb")
    text_b, end_b = await from_b.answer("rb", TIMEOUT_S)
    await chat(from_c, words("c", 12), thread, "rc")
    text_c, end_c = await from_c.answer("rc", TIMEOUT_S)
    assert (text_b, text_c) == (words("b", 12), words("c", 12))
    assert end_b["finish_reason"] == end_c["finish_reason"] == "stop"

    await watcher.answer("rb", TIMEOUT_S)
    await watcher.answer("rc", TIMEOUT_S)
    assert (text_of(watcher, "rb"), text_of(watcher, "rc")) == (text_b, text_c)

    async with httpx.AsyncClient(base_url=c.http) as http:
        response = await http.post("/api/broadcast", json={"content": "maintenance at noon"})
        assert response.status_code == 200
    for client in (watcher, from_b, from_c):
        notice = await client.until_type("broadcast", TIMEOUT_S)
        assert notice["content"] == "maintenance at noon"
        assert contiguous(client)
    for client in (watcher, from_b, from_c):
        await client.close()


async def test_a_client_cut_off_on_one_node_resumes_on_another_with_the_saved_text(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    thread, client_id = unique("t"), unique("mover")
    client = await connect(a, client_id)
    epoch = client.frames[0]["epoch"]
    await chat(client, words("w", 40), thread, "r1")
    for _ in range(5):
        await client.until_type("response", TIMEOUT_S)
    before = text_of(client, "r1")
    position = client.frames[-1]["seq"]
    await client.close()  # cut off mid-answer; the answer goes on without it

    again = await connect(b, client_id, f"?last_seq={position}&epoch={epoch}")
    welcome = again.frames[0]
    assert welcome["resumed"] is True and welcome["seq"] == position
    _, end = await again.answer("r1", TIMEOUT_S)
    assert end["finish_reason"] == "stop"
    assert [f["seq"] for f in again.frames[1:]] == list(
        range(position + 1, position + len(again.frames))
    )
    received = before + text_of(again, "r1")
    saved = [m for m in await history(c, thread) if m["role"] == "assistant"]
    assert received == saved[-1]["content"] == words("w", 40)
    assert saved[-1]["status"] == "complete"
    await again.close()


async def test_chats_to_one_conversation_on_three_nodes_are_answered_in_order(
    nodes: list[Node],
) -> None:
    thread = unique("t")
    observer = await connect(nodes[0], unique("observer"))
    await subscribe(observer, thread)
    senders = [await connect(node, unique(f"sender-{node.name}")) for node in nodes]
    acks = []
    for index, (sender, label) in enumerate(zip(senders, "abc", strict=True)):
        acks.append(await chat(sender, words(label, 10), thread, f"r{index}"))
    assert [ack["queued"] for ack in acks] == [0, 1, 2]
    for index in range(3):
        await observer.answer(f"r{index}", TIMEOUT_S)
    lifecycle = [
        (f["type"], f["request_id"]) for f in observer.frames if f.get("type") in ("start", "end")
    ]
    # One at a time, in arrival order, though each ran wherever its chat arrived or queued.
    assert lifecycle == [
        ("start", "r0"), ("end", "r0"),
        ("start", "r1"), ("end", "r1"),
        ("start", "r2"), ("end", "r2"),
    ]  # fmt: skip
    assert [text_of(observer, f"r{i}") for i in range(3)] == [words(x, 10) for x in "abc"]
    for client in (observer, *senders):
        await client.close()


async def test_killing_the_node_running_an_answer_ends_it_as_failed_within_the_lease(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    thread = unique("t")
    watcher = await connect(b, unique("watcher"))
    await subscribe(watcher, thread)
    asker = await connect(a, unique("asker"))
    await chat(asker, words("long", 400), thread, "doomed")  # runs on a, where it arrived
    for _ in range(5):
        await watcher.until_type("response", TIMEOUT_S, request_id="doomed")

    killed_at = time.monotonic()
    await a.kill()
    error = await watcher.until_type("error", LEASE_S + 10, request_id="doomed")
    end = await watcher.until_type("end", TIMEOUT_S, request_id="doomed")
    assert time.monotonic() - killed_at < LEASE_S + 2 * REAP_S + 3
    assert error["code"] == "agent_failed" and end["finish_reason"] == "error"

    received = text_of(watcher, "doomed")
    saved = [m for m in await history(c, thread) if m["request_id"] == "doomed"]
    assistant = [m for m in saved if m["role"] == "assistant"][-1]
    assert assistant["status"] == "failed"
    assert assistant["content"] == received and words("long", 400).startswith(received)

    # The conversation goes on: the next chat is answered by a node still alive.
    await chat(watcher, "after the loss", thread, "next")
    text, next_end = await watcher.answer("next", TIMEOUT_S)
    assert text == "after the loss" and next_end["finish_reason"] == "stop"
    assert contiguous(watcher)
    await watcher.close()


async def test_cancel_from_any_node_stops_a_running_answer_and_drops_a_queued_one(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    thread = unique("t")
    asker = await connect(a, unique("asker"))
    await chat(asker, words("run", 400), thread, "running")  # runs on a
    queued = await chat(asker, words("wait", 5), thread, "queued")
    assert queued["queued"] == 1
    await asker.until_type("response", TIMEOUT_S, request_id="running")

    canceller = await connect(c, unique("canceller"))
    await canceller.send({"type": "cancel", "request_id": "queued"})
    await canceller.send({"type": "cancel", "request_id": "running"})
    ends = {
        rid: (await asker.until_type("end", TIMEOUT_S, request_id=rid))["finish_reason"]
        for rid in ("queued", "running")
    }
    assert ends == {"queued": "cancelled", "running": "cancelled"}
    assert not [f for f in asker.frames if f.get("type") == "start" and f["request_id"] == "queued"]
    saved = {m["request_id"]: m for m in await history(b, thread) if m["role"] == "assistant"}
    assert saved["running"]["status"] == saved["queued"]["status"] == "cancelled"
    assert saved["running"]["content"] == text_of(asker, "running")
    await canceller.send({"type": "cancel", "request_id": "running"})
    error = await canceller.until_type("error", TIMEOUT_S)
    assert error["code"] == "not_found"  # nothing left to cancel
    for client in (asker, canceller):
        await client.close()


async def test_a_client_arriving_mid_answer_on_another_node_gets_the_text_so_far_then_live(
    nodes: list[Node],
) -> None:
    a, b, _ = nodes
    thread = unique("t")
    asker = await connect(a, unique("asker"))
    await chat(asker, words("w", 60), thread, "r1")
    for _ in range(5):
        await asker.until_type("response", TIMEOUT_S, request_id="r1")
    late = await connect(b, unique("late"))
    await subscribe(late, thread)
    snapshot = await late.until_type("snapshot", TIMEOUT_S, request_id="r1")
    assert words("w", 60).startswith(snapshot["content"]) and snapshot["content"]
    _, end = await late.answer("r1", TIMEOUT_S)
    assert end["finish_reason"] == "stop"
    assert text_of(late, "r1") == words("w", 60)  # nothing missing, nothing twice
    for client in (asker, late):
        await client.close()
