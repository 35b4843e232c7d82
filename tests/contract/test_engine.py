"""One contract for the two engines' interfaces: the hub's ``Delivery`` and the runner's
``ConversationQueue``, memory (one node) and Redis (several nodes).

Real gateways without HTTP: a SQLite file for history and, for the Redis engine, the run's own
redis-server. On Redis, "several nodes" are two gateways on the same Redis and the same file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from dari.app.gateway import Gateway
from dari.auth.base import ANONYMOUS
from dari.hub.delivery_memory import MemoryDelivery
from dari.hub.delivery_redis import RedisDelivery
from dari.protocol.frames import ConversationKey, Frame
from dari.runner.jobs import Job
from dari.runner.queue_memory import MemoryQueue
from dari.runner.queue_redis import RedisQueue
from tests.support.engines import ENGINES
from tests.support.server import make_settings
from tests.support.waiting import eventually

KEY = ConversationKey("p1", "slow", "t")
PROJECT = {
    "projects": [
        {
            "id": "p1",
            "agents": [{"name": "slow", "backend": "echo", "options": {"delay_ms": 15}}],
        }
    ]
}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def nodes(
    tmp_path: Path, engine: str, engine_settings: dict[str, Any]
) -> AsyncIterator[list[Gateway]]:
    """Two gateways: on Redis two nodes of one deployment; on memory the same node twice."""
    settings = make_settings(tmp_path, **PROJECT, **engine_settings)
    first = Gateway(settings)
    await first.start()
    second = first
    if engine == "redis":
        second = Gateway(make_settings(tmp_path, **PROJECT, **engine_settings))
        await second.start()
    yield [first, second]
    for gateway in {id(g): g for g in (first, second)}.values():
        await gateway.stop()


def test_the_settings_pick_each_interface_once(nodes: list[Gateway], engine: str) -> None:
    delivery, queue = nodes[0].delivery, nodes[0].runner.queue
    if engine == "memory":
        assert isinstance(delivery, MemoryDelivery) and isinstance(queue, MemoryQueue)
    else:
        assert isinstance(delivery, RedisDelivery) and isinstance(queue, RedisQueue)
    assert nodes[0].hub.delivery is delivery and nodes[0].replay is delivery.replay


async def _frames(gateway: Gateway, client_id: str) -> list[Frame]:
    frames = await gateway.replay.read(client_id, 0, 10_000)
    assert frames is not None
    return frames


def _listen(gateway: Gateway, client_id: str) -> None:
    gateway.hub.client(client_id, ANONYMOUS)


async def test_each_client_numbers_its_own_frames(nodes: list[Gateway]) -> None:
    a, b = nodes
    _listen(a, "one")
    _listen(b, "two")
    assert await a.hub.send("one", {"type": "notice", "n": 1}) == 1
    assert await a.hub.send_many(["one", "two"], {"type": "notice", "n": 2}) == 2
    assert await b.hub.send("two", {"type": "notice", "n": 3}) == 2
    one, two = await _frames(a, "one"), await _frames(b, "two")
    assert [(f["seq"], f["n"]) for f in one] == [(1, 1), (2, 2)]
    assert [(f["seq"], f["n"]) for f in two] == [(1, 2), (2, 3)]
    await a.hub.forget("one")
    assert (await a.replay.position("one")).exists is False


async def _accept(gateway: Gateway, request_id: str, message: str) -> int:
    """What a chat frame does: under the conversation's ordering point, save then queue."""
    runner = gateway.runner
    async with runner.ordered(KEY):
        await runner.admission(KEY)
        accepted = await gateway.store.accept_chat(
            user_id="u", client_message_id=request_id, request_id=request_id,
            key=KEY, message=message, images=[],
        )  # fmt: skip
        return await runner.enqueue(Job(accepted.request_id, KEY, message, [], "u"))


async def _ends(gateway: Gateway, client_id: str, count: int) -> list[Frame]:
    async def ended() -> bool:
        return sum(f["type"] == "end" for f in await _frames(gateway, client_id)) >= count

    await eventually(ended, timeout=30)
    return await _frames(gateway, client_id)


async def test_chats_accepted_at_once_on_every_node_run_in_history_order(
    nodes: list[Gateway],
) -> None:
    a = nodes[0]
    _listen(a, "observer")
    await a.hub.join("observer", KEY)
    chats: list[Awaitable[int]] = [
        _accept(node, f"r{n}", f"m{n}") for n in range(12) for node in [nodes[n % 2]]
    ]
    await asyncio.gather(*chats)
    frames = await _ends(a, "observer", 12)
    started = [f["request_id"] for f in frames if f["type"] == "start"]
    lifecycle = [(f["type"], f["request_id"]) for f in frames if f["type"] in ("start", "end")]
    assert lifecycle == [(kind, rid) for rid in started for kind in ("start", "end")]
    history = await a.store.history(KEY, 100)
    assert [m.request_id for m in history if m.role == "user"] == started
    assert [m.content for m in history if m.role == "assistant"] == [
        f"m{rid[1:]}" for rid in started
    ]
    assert await a.runner.queue.depth(KEY) == 0


async def test_snapshot_shows_the_running_answer_from_any_node(nodes: list[Gateway]) -> None:
    a, b = nodes
    _listen(a, "asker")
    await a.hub.join("asker", KEY)
    words = " ".join(f"w{i}" for i in range(40))
    await _accept(a, "long", words)

    async def streaming() -> bool:
        return sum(f["type"] == "response" for f in await _frames(a, "asker")) >= 5

    await eventually(streaming, timeout=30)
    _listen(b, "late")
    await b.hub.join("late", KEY)
    first = await b.hub.snapshots("late", [KEY])
    assert first is not None
    # A socket starts right before its first snapshot (pieces logged since it joined are in
    # the snapshot): so does this reader.
    frames = [f for f in await _ends(b, "late", 1) if f["seq"] >= first]
    snapshot = frames[0]
    assert snapshot["type"] == "snapshot" and snapshot["request_id"] == "long"
    rest = "".join(f["content"] for f in frames[1:] if f["type"] == "response")
    assert snapshot["content"] + rest == words  # nothing missing, nothing twice


async def test_cancel_finds_queued_and_running_chats_on_any_node(nodes: list[Gateway]) -> None:
    a, b = nodes
    _listen(a, "watcher")
    await a.hub.join("watcher", KEY)
    long = " ".join(f"x{i}" for i in range(200))
    assert await _accept(a, "first", long) == 0
    assert await _accept(b, "second", "short") == 1
    assert await a.runner.queue.depth(KEY) == 2
    assert await b.runner.locate("second", "u") == KEY
    assert await b.runner.locate("second", "someone else") is None
    assert await b.runner.cancel("second", "u")  # queued: ends without starting
    assert await b.runner.cancel_in(KEY) == 1  # the running one, from the other node
    frames = await _ends(a, "watcher", 2)
    ends = {f["request_id"]: f["finish_reason"] for f in frames if f["type"] == "end"}
    assert ends == {"first": "cancelled", "second": "cancelled"}
    assert [f["request_id"] for f in frames if f["type"] == "start"] == ["first"]
    history = await a.store.history(KEY, 10)
    assert {m.request_id: m.status for m in history if m.role == "assistant"} == {
        "first": "cancelled",
        "second": "cancelled",
    }


# --- questions (interrupts) ------------------------------------------------------------------


async def test_a_question_is_answered_once_from_any_node(nodes: list[Gateway]) -> None:
    a, b = nodes
    job = Job("q-run", KEY, "hi", [], "u")
    waiting = await a.runner.queue.ask(job, "i-1", 30)
    assert await b.runner.queue.question("i-1") == KEY
    assert await b.runner.queue.question("i-unknown") is None
    assert await b.runner.queue.answer("i-1", {"pick": "예"}) == "accepted"
    async with asyncio.timeout(5):
        assert await waiting == {"pick": "예"}
    # Once: a second answer, from either node, finds it answered.
    assert await a.runner.queue.answer("i-1", "again") == "answered"
    assert await b.runner.queue.answer("i-1", "again") == "answered"
    assert await b.runner.queue.answer("i-unknown", 1) == "unknown"
    # Closing it afterwards (the waiting answer's expiry racing the answer) gives the value.
    assert await a.runner.queue.settle("i-1", "expired") == (True, {"pick": "예"})


async def test_a_closed_question_cannot_be_answered(nodes: list[Gateway]) -> None:
    a, b = nodes
    await a.runner.queue.ask(Job("q-run-2", KEY, "hi", [], "u"), "i-2", 30)
    await a.runner.queue.ask(Job("q-run-3", KEY, "hi", [], "u"), "i-3", 30)
    assert await a.runner.queue.settle("i-2", "cancelled") == (False, None)
    assert await a.runner.queue.settle("i-3", "expired") == (False, None)
    assert await b.runner.queue.answer("i-2", "late") == "cancelled"
    assert await b.runner.queue.answer("i-3", "late") == "expired"
    assert await b.runner.queue.question("i-2") == KEY


@pytest.mark.parametrize("engine", ["redis"])
async def test_a_chat_queued_by_a_node_that_dies_before_taking_the_lease_is_run_by_another(
    tmp_path: Path, engine_settings: dict[str, Any]
) -> None:
    """Pushing a chat and taking its conversation's lease are two steps: a node that dies (or
    loses Redis) between them must not leave the chat queued with nobody to run it."""
    timing = {"cluster": {"lease_s": 1.0, "renew_s": 0.2, "reap_s": 0.1}}
    a = Gateway(make_settings(tmp_path, **PROJECT, **engine_settings, **timing))
    b = Gateway(make_settings(tmp_path, **PROJECT, **engine_settings, **timing))
    await a.start()
    await b.start()
    try:
        _listen(b, "observer")
        await b.hub.join("observer", KEY)

        async def dies_first(key: ConversationKey) -> None:
            """The step after the push: node a is gone before it takes the lease."""

        a.runner.queue._start_if_free = dies_first  # type: ignore[method-assign]
        await _accept(a, "stranded", "hello there")
        await a.stop()
        frames = await _ends(b, "observer", 1)
        assert [f["type"] for f in frames if f["type"] in ("start", "end")] == ["start", "end"]
        assert "".join(f["content"] for f in frames if f["type"] == "response") == "hello there"
        history = await b.store.history(KEY, 10)
        assert [(m.role, m.content, m.status) for m in history] == [
            ("user", "hello there", "complete"),
            ("assistant", "hello there", "complete"),
        ]
    finally:
        await b.stop()


@pytest.mark.parametrize("engine", ["redis"])
async def test_a_socket_leaving_keeps_the_client_and_drops_only_its_own_attachment(
    nodes: list[Gateway],
) -> None:
    """On Redis: when a socket leaves, the client's record lives on for its TTL (a reconnect
    finds its log and subscriptions), and ``attached:<id>`` goes only if this node holds it."""
    first, second = (node.hub.delivery for node in nodes)
    assert isinstance(first, RedisDelivery) and isinstance(second, RedisDelivery)
    redis = first.redis

    async def record(client_id: str) -> tuple[bytes | None, float | None]:
        return (
            await redis.get(f"{first.prefix}attached:{client_id}"),
            await redis.zscore(f"{first.prefix}clients", client_id),
        )

    await first.attached("left")
    holder, _ = await record("left")
    assert holder == first.bus.node_id.encode()
    await redis.zadd(f"{first.prefix}clients", {"left": 0, "moved": 0})  # long expired
    before = time.time() * 1000
    await first.detached("left")
    holder, expiry = await record("left")
    assert holder is None
    assert expiry is not None and expiry >= before + first.ttl_s * 1000 - 1

    await first.attached("moved")
    await second.attached("moved")  # the client's newer socket is on the other node now
    await redis.zadd(f"{first.prefix}clients", {"moved": 0})
    await first.detached("moved")
    holder, expiry = await record("moved")
    assert holder == second.bus.node_id.encode()
    assert expiry is not None and expiry >= before + first.ttl_s * 1000 - 1
