"""How a node wakes the others: one bus message per node and batch of frames, naming that node's
clients with their frames, instead of one message per remote client and frame."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import orjson
import redis.asyncio as aioredis

from tests.cluster.clients import TIMEOUT_S, chat, connect, contiguous, subscribe, text_of, unique
from tests.cluster.clients import words as make_words
from tests.cluster.nodes import Node

WORDS = 40


@contextlib.asynccontextmanager
async def wakes(redis_url: str) -> AsyncIterator[list[tuple[str, bytes]]]:
    """Every message published on a wake channel meanwhile: (channel, payload without sender)."""
    raw = aioredis.Redis.from_url(redis_url)
    pubsub = raw.pubsub()
    heard: list[tuple[str, bytes]] = []
    await pubsub.psubscribe("dari:wake*")
    assert (await pubsub.get_message(timeout=5))["type"] == "psubscribe"

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                payload = message["data"].partition(b"\x00")[2]
                heard.append((message["channel"].decode(), payload))

    task = asyncio.create_task(listen())
    try:
        yield heard
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await raw.aclose()


async def test_subscribers_on_other_nodes_are_woken_once_per_node_and_batch(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    thread = unique("t")
    b_ids, c_id = [unique("on-b") for _ in range(6)], unique("on-c")
    on_b = [await connect(b, client_id) for client_id in b_ids]
    on_c = await connect(c, c_id)
    for listener in (*on_b, on_c):
        await subscribe(listener, thread)
    asker = await connect(a, unique("asker"))  # connected last: the answer runs on a

    async with wakes(a.redis_url) as heard:
        await chat(asker, make_words("w", WORDS), thread, "r1")
        await asker.answer("r1", TIMEOUT_S)
        for listener in (*on_b, on_c):
            await listener.answer("r1", TIMEOUT_S)

    for client in (asker, *on_b, on_c):
        assert text_of(client, "r1") == make_words("w", WORDS)
        assert contiguous(client)
    channels = Counter(channel for channel, _ in heard)
    # Every holder was known: no client was woken on its own channel.
    assert not [name for name in channels if name.startswith("dari:wake:")]
    assert set(channels) == {f"dari:wake-node:{b.name}", f"dari:wake-node:{c.name}"}
    frames = sum(f.get("request_id") == "r1" for f in on_b[0].frames)
    # At most one message per batch; one per client and frame would be 6 × frames for b.
    assert channels[f"dari:wake-node:{b.name}"] <= frames
    for channel, payload in heard:
        epoch, groups = orjson.loads(payload)
        assert epoch == on_b[0].frames[0]["epoch"]
        for frame, listed in groups:
            assert "seq" not in frame and frame["request_id"] == "r1"
            named = set(listed[::2])
            assert named == (set(b_ids) if channel.endswith(b.name) else {c_id})
    for client in (asker, *on_b, on_c):
        await client.close()


async def test_a_stale_attached_record_still_reaches_the_socket_through_its_own_channel(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    thread, listener_id = unique("t"), unique("listener")
    listener = await connect(b, listener_id)
    await subscribe(listener, thread)
    # As when a socket on c lost a handshake race to this one: the record names c.
    raw = aioredis.Redis.from_url(a.redis_url)
    await raw.set(f"dari:attached:{listener_id}", c.name, px=60_000)
    await raw.aclose()
    asker = await connect(a, unique("asker"))

    async with wakes(a.redis_url) as heard:
        await chat(asker, make_words("w", 10), thread, "r1")
        await asker.answer("r1", TIMEOUT_S)
        await listener.answer("r1", TIMEOUT_S)

    assert text_of(listener, "r1") == make_words("w", 10) and contiguous(listener)
    channels = {channel for channel, _ in heard}
    assert f"dari:wake-node:{c.name}" in channels  # routed by the record...
    assert f"dari:wake:{listener_id}" in channels  # ...and passed on by c to the holder
    for client in (asker, listener):
        await client.close()
