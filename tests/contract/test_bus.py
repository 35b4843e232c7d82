"""The bus contract (dari.buses.base.Bus), for the memory bus and the real Redis alike.

Several bus objects stand for several nodes: memory buses share one broker, Redis buses share
the machine's Redis. Node ids and channel names are unique per test, so tests running at the
same time on the same Redis do not hear each other. Redis-only tests cut the connection or
restart Redis: on a redis-server of their own, never the machine's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from dari.buses import Bus, BusError, BusMessage, open_bus
from dari.buses.memory import MemoryBroker, MemoryBus
from dari.buses.redis import RedisBus
from tests.cluster.services import kill_connections, require_redis
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

NodeFactory = Callable[[str], Awaitable[Bus]]
WAIT_S = 10.0


class Inbox:
    """A handler that keeps what it receives, for awaiting it with a deadline."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[BusMessage] = asyncio.Queue()

    async def __call__(self, message: BusMessage) -> None:
        self.queue.put_nowait(message)

    async def next(self) -> BusMessage:
        return await asyncio.wait_for(self.queue.get(), WAIT_S)


class Signal:
    """A reconnect handler that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.event = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        self.event.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self.event.wait(), WAIT_S)
        self.event.clear()


def unique(name: str) -> str:
    return f"test:{name}:{uuid.uuid4().hex[:10]}"


async def _redis_url() -> str:
    return await require_redis()


@pytest.fixture(params=["memory", "redis"])
async def open_node(request: pytest.FixtureRequest) -> AsyncIterator[NodeFactory]:
    """Start buses of the kind under test, standing for nodes of one deployment."""
    broker = MemoryBroker()
    url = await _redis_url() if request.param == "redis" else ""
    opened: list[Bus] = []

    async def factory(name: str) -> Bus:
        node_id = unique(name)
        bus: Bus = (
            MemoryBus(node_id, broker)
            if request.param == "memory"
            else RedisBus(url, node_id, ping_interval_s=0.2)
        )
        await bus.start()
        opened.append(bus)
        return bus

    yield factory
    for bus in opened:
        await bus.close()


async def test_a_message_reaches_the_node_subscribed_to_its_channel(open_node: NodeFactory) -> None:
    a, b = await open_node("a"), await open_node("b")
    channel, inbox = unique("ch"), Inbox()
    await b.subscribe(channel, inbox)
    await a.publish(channel, b"hello \x00 binary \xff")
    assert await inbox.next() == BusMessage(channel, b"hello \x00 binary \xff", a.node_id)
    assert a.healthy and b.healthy


async def test_a_node_does_not_hear_its_own_messages(open_node: NodeFactory) -> None:
    a, b = await open_node("a"), await open_node("b")
    channel, heard_by_a = unique("ch"), Inbox()
    await a.subscribe(channel, heard_by_a)
    await b.subscribe(channel, Inbox())
    await a.publish(channel, b"from a")
    await b.publish(channel, b"from b")
    # a's own message was published first; what a hears first is b's.
    assert await heard_by_a.next() == BusMessage(channel, b"from b", b.node_id)
    assert heard_by_a.queue.empty()


async def test_two_nodes_hear_each_other(open_node: NodeFactory) -> None:
    a, b = await open_node("a"), await open_node("b")
    channel, heard_by_a, heard_by_b = unique("ch"), Inbox(), Inbox()
    await a.subscribe(channel, heard_by_a)
    await b.subscribe(channel, heard_by_b)
    await a.publish(channel, b"1")
    await b.publish(channel, b"2")
    assert (await heard_by_b.next()).payload == b"1"
    assert (await heard_by_a.next()).payload == b"2"


async def test_every_subscribed_node_hears_a_message_in_publish_order(
    open_node: NodeFactory,
) -> None:
    a, b, c = await open_node("a"), await open_node("b"), await open_node("c")
    channel, heard_by_b, heard_by_c = unique("ch"), Inbox(), Inbox()
    await b.subscribe(channel, heard_by_b)
    await c.subscribe(channel, heard_by_c)
    for i in range(100):
        await a.publish(channel, str(i).encode())
    for inbox in (heard_by_b, heard_by_c):
        assert [(await inbox.next()).payload for _ in range(100)] == [
            str(i).encode() for i in range(100)
        ]


async def test_only_subscribed_channels_are_heard(open_node: NodeFactory) -> None:
    a, b = await open_node("a"), await open_node("b")
    wanted, other, inbox = unique("wanted"), unique("other"), Inbox()
    await b.subscribe(wanted, inbox)
    await a.publish(other, b"not for b")
    await a.publish(wanted, b"for b")
    assert (await inbox.next()).payload == b"for b"


async def test_every_handler_of_a_channel_is_called(open_node: NodeFactory) -> None:
    a, b = await open_node("a"), await open_node("b")
    channel, first, second = unique("ch"), Inbox(), Inbox()
    await b.subscribe(channel, first)
    await b.subscribe(channel, second)
    await a.publish(channel, b"x")
    assert (await first.next()).payload == (await second.next()).payload == b"x"


async def test_a_failing_handler_does_not_stop_delivery(open_node: NodeFactory) -> None:
    a, b = await open_node("a"), await open_node("b")
    channel, inbox = unique("ch"), Inbox()

    async def explode(message: BusMessage) -> None:
        if message.payload == b"boom":
            raise RuntimeError("handler bug")

    await b.subscribe(channel, explode)
    await b.subscribe(channel, inbox)
    await a.publish(channel, b"boom")
    await a.publish(channel, b"after")
    assert [(await inbox.next()).payload for _ in range(2)] == [b"boom", b"after"]


async def test_an_unsubscribed_handler_hears_nothing_more(open_node: NodeFactory) -> None:
    a, b = await open_node("a"), await open_node("b")
    dropped, kept, marker = unique("dropped"), unique("kept"), Inbox()
    gone, stays = Inbox(), Inbox()
    await b.subscribe(dropped, gone)
    await b.subscribe(dropped, stays)
    await b.subscribe(kept, marker)
    await b.unsubscribe(dropped, gone)
    await a.publish(dropped, b"1")
    assert (await stays.next()).payload == b"1"  # the channel's other handler still hears
    await b.unsubscribe(dropped, stays)
    await a.publish(dropped, b"2")
    await a.publish(kept, b"after")
    assert (await marker.next()).payload == b"after"
    assert gone.queue.empty() and stays.queue.empty()
    await b.subscribe(dropped, stays)  # and a channel can be taken up again
    await a.publish(dropped, b"3")
    assert (await stays.next()).payload == b"3"


def test_open_bus_picks_the_engine_by_url() -> None:
    assert isinstance(open_bus("memory://", "n1"), MemoryBus)
    assert isinstance(open_bus("redis://127.0.0.1:6379/0", "n1"), RedisBus)
    with pytest.raises(ValueError, match=r"bus\.url"):
        open_bus("kafka://somewhere", "n1")
    with pytest.raises(ValueError, match="NUL"):
        open_bus("memory://", "bad\x00id")


# --- Redis only: losing the connection ---------------------------------------------------------


@pytest.fixture
async def redis_nodes(private_redis: RedisServer) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    url = private_redis.url
    a = RedisBus(url, unique("a"), ping_interval_s=0.2)
    b = RedisBus(url, unique("b"), ping_interval_s=0.2)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def test_a_killed_subscriber_connection_comes_back_by_itself(
    redis_nodes: tuple[RedisBus, RedisBus], private_redis: RedisServer
) -> None:
    a, b = redis_nodes
    channel, inbox, reconnected = unique("ch"), Inbox(), Signal()
    b.on_reconnect(reconnected)
    await b.subscribe(channel, inbox)
    assert await kill_connections(private_redis.url, f"dari-bus:{b.node_id}") == 1
    await reconnected.wait()  # the subscriptions are in effect again when this is called
    assert b.healthy
    await a.publish(channel, b"after the kill")
    assert (await inbox.next()).payload == b"after the kill"


async def test_the_bus_survives_a_redis_restart(
    redis_nodes: tuple[RedisBus, RedisBus], private_redis: RedisServer
) -> None:
    a, b = redis_nodes
    channel, heard_by_a, heard_by_b = unique("ch"), Inbox(), Inbox()
    a_back, b_back = Signal(), Signal()
    a.on_reconnect(a_back)
    b.on_reconnect(b_back)
    await a.subscribe(channel, heard_by_a)
    async with private_redis.stopped():
        await eventually(lambda: not a.healthy and not b.healthy, timeout=WAIT_S)
        with pytest.raises(BusError):
            await a.publish(channel, b"lost")
        # Subscribing while Redis is away returns at once and takes effect on reconnection.
        await b.subscribe(channel, heard_by_b)
    await a_back.wait()
    await b_back.wait()
    assert a.healthy and b.healthy
    await a.publish(channel, b"from a")
    await b.publish(channel, b"from b")
    assert (await heard_by_b.next()).payload == b"from a"
    assert (await heard_by_a.next()).payload == b"from b"
