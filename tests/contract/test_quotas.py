"""The fair-use interface (dari.runner.quota.UserQuotas), for memory and Redis: a token bucket per
subject with the time to wait, and per-user counts of waiting and running chats by ticket. On
Redis, two objects on one prefix stand for two nodes, and a count nobody gives back expires."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from dari.runner.quota import UserQuotas
from dari.runner.quota_memory import MemoryQuotas
from dari.runner.quota_redis import RedisQuotas
from dari.settings import LimitsSettings
from tests.contract.test_replay import redis_namespace
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

LIMITS = LimitsSettings(rate_per_s=0.5, rate_burst=3, max_running_per_user=2, max_queued_per_user=2)
QuotaFactory = Callable[..., UserQuotas]


@pytest.fixture(params=["memory", "redis"])
async def make_quotas(request: pytest.FixtureRequest) -> AsyncIterator[QuotaFactory]:
    """``make_quotas()``: a node's quotas; on Redis, each call is another node (one prefix)."""
    if request.param == "memory":
        shared = MemoryQuotas(LIMITS)  # one node: one object
        yield lambda **_: shared
        return
    async with contextlib.AsyncExitStack() as stack:
        url, prefix = await stack.enter_async_context(redis_namespace())
        clients: list[aioredis.Redis] = []

        def factory(**options: float) -> UserQuotas:
            client = aioredis.Redis.from_url(url)
            clients.append(client)
            return RedisQuotas(LIMITS, client, prefix, **options)

        yield factory
        for client in clients:
            await client.aclose()


async def test_a_bucket_gives_its_burst_then_says_how_long_to_wait(
    make_quotas: QuotaFactory,
) -> None:
    one, two = make_quotas(), make_quotas()
    assert [await one.take_frame("u:alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await two.take_frame("u:alice")  # another node: the same bucket
    assert 1.5 < wait <= 2.0  # one token at 0.5 per second
    assert await one.take_frame("u:bob") == 0.0  # another subject: a bucket of its own


async def test_waiting_chats_are_capped_and_running_ones_do_not_count_as_waiting(
    make_quotas: QuotaFactory,
) -> None:
    one, two = make_quotas(), make_quotas()
    assert await one.admit("alice", "t1") and await two.admit("alice", "t2")
    assert not await one.admit("alice", "t3")  # two waiting: the cap
    assert await one.admit("bob", "b1")
    assert await two.try_start("alice", "t1")
    assert await one.counts("alice") == (1, 1)
    assert await two.admit("alice", "t3")  # t1 runs now: one waiting, room for another
    assert await one.counts("alice") == (2, 1)
    await one.release("alice", "t1")
    await one.release("alice", "t1")  # giving back twice is harmless
    assert await two.counts("alice") == (2, 0)


async def test_running_places_are_capped_and_one_given_back_lets_a_waiter_start(
    make_quotas: QuotaFactory,
) -> None:
    one, two = make_quotas(), make_quotas()
    for ticket in ("t1", "t2", "t3"):
        await one.admit("alice", ticket)
    assert await one.try_start("alice", "t1") and await two.try_start("alice", "t2")
    assert await one.try_start("alice", "t1")  # holding one already
    assert not await two.try_start("alice", "t3")
    assert await one.try_start("bob", "b1")  # another user is not held up
    waiter = asyncio.create_task(two.wait_start("alice", "t3"))
    await one.release("alice", "t1")  # on the other node, with Redis: found by polling
    async with asyncio.timeout(5):
        await waiter
    assert await one.counts("alice") == (0, 2)
    assert not await one.try_start("alice", "t4")


async def test_a_waiter_cancelled_after_its_wake_passes_it_on() -> None:
    """One node wakes its first waiter when a place is given back; if that one is cancelled
    before it takes the place, the next one gets it."""
    quotas = MemoryQuotas(LIMITS)
    for ticket in ("t1", "t2"):
        assert await quotas.admit("alice", ticket) and await quotas.try_start("alice", ticket)
    assert await quotas.admit("alice", "t3") and await quotas.admit("alice", "t4")
    first = asyncio.create_task(quotas.wait_start("alice", "t3"))
    second = asyncio.create_task(quotas.wait_start("alice", "t4"))
    await eventually(lambda: len(quotas._waiters.get("alice", ())) == 2)
    await quotas.release("alice", "t1")  # wakes the first
    first.cancel()  # which leaves before it runs
    with contextlib.suppress(asyncio.CancelledError):
        await first
    async with asyncio.timeout(5):
        await second
    assert await quotas.counts("alice") == (1, 2)  # t3 still counted: its chat gives it back


async def test_a_count_nobody_gives_back_expires() -> None:
    """A node that dies holding a running place (and did not reach the reaper) cannot keep it:
    members expire, and so do the keys."""
    async with redis_namespace() as (url, prefix):
        client = aioredis.Redis.from_url(url)
        try:
            dead = RedisQuotas(LIMITS, client, prefix, running_ttl_s=1.0, admitted_ttl_s=2.0)
            alive = RedisQuotas(LIMITS, client, prefix)
            for ticket in ("t1", "t2"):
                assert await dead.admit("alice", ticket)
                assert await dead.try_start("alice", ticket)
            await dead.take_frame("u:x")
            # Every key goes by itself (the bucket once it would be full again: 6 s + 1 s).
            ttls = {
                key: await client.pttl(prefix + key)
                for key in ("quota:running:alice", "quota:admitted:alice", "quota:rate:u:x")
            }
            assert all(0 < ttl <= 7000 for ttl in ttls.values()), ttls
            await alive.admit("alice", "t3")
            assert not await alive.try_start("alice", "t3")

            async def freed() -> bool:
                return await alive.try_start("alice", "t3")

            await eventually(freed, timeout=5)
        finally:
            await client.aclose()


async def test_the_rate_limit_falls_back_to_the_nodes_own_buckets_while_redis_is_away(
    private_redis: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(private_redis.url, socket_timeout=1)
    try:
        quotas = RedisQuotas(LIMITS, client)
        async with private_redis.stopped():
            assert [await quotas.take_frame("u:alice") for _ in range(3)] == [0.0] * 3
            assert await quotas.take_frame("u:alice") > 0  # still limited, by this node
    finally:
        await client.aclose()
