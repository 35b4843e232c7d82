"""The replay log contract (dari.hub.replay.ReplayLog), for the memory log and Redis Streams.

Redis logs use a key prefix of their own per test, so tests sharing the machine's Redis do not
see each other's clients or epochs; several log objects on one prefix stand for several nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from dari.hub.replay import MemoryReplayLog, ReplayLog
from dari.hub.replay_redis import RedisReplayLog, ReplayUnavailable
from dari.protocol.frames import Frame
from tests.cluster.services import require_redis
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

LogFactory = Callable[..., Awaitable[ReplayLog]]
A, B = "client-a", "client-b"


def frame(content: str, kind: str = "response", request_id: str = "r-1") -> Frame:
    return {"type": kind, "request_id": request_id, "content": content}


async def seqs(log: ReplayLog, client_id: str, after: int = 0, limit: int = 1000) -> list[int]:
    frames = await log.read(client_id, after, limit)
    assert frames is not None
    return [f["seq"] for f in frames]


@contextlib.asynccontextmanager
async def redis_namespace() -> AsyncIterator[tuple[str, str]]:
    """(Redis URL, a key prefix of its own); its keys are deleted afterwards."""
    url = await require_redis()
    prefix = f"dari-test:{uuid.uuid4().hex[:10]}:"
    try:
        yield url, prefix
    finally:
        client = aioredis.Redis.from_url(url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[str, str]]:
    async with redis_namespace() as namespace:
        yield namespace


@pytest.fixture(params=["memory", "redis"])
async def open_log(request: pytest.FixtureRequest) -> AsyncIterator[LogFactory]:
    """Make logs of the engine under test: ``await open_log(max_frames=…, max_age_s=…)``."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "redis":
            url, prefix = await stack.enter_async_context(redis_namespace())

        async def factory(
            max_frames: int = 10_000, max_age_s: float = 600.0, max_client_bytes: int = 2**24
        ) -> ReplayLog:
            if request.param == "memory":
                return MemoryReplayLog(max_frames, max_age_s, max_client_bytes)
            log = RedisReplayLog(
                url, max_frames, max_age_s, max_client_bytes=max_client_bytes, prefix=prefix
            )
            await log.start()
            stack.push_async_callback(log.close)
            return log

        yield factory


async def test_each_client_gets_contiguous_seq_from_one(open_log: LogFactory) -> None:
    log = await open_log()
    got: dict[str, list[int]] = {A: [], B: []}
    for i in range(8):
        client = A if i % 3 else B
        item = frame(f"piece {i}")
        seq = await log.append(client, item)
        assert item["seq"] == seq
        got[client].append(seq)
    assert got == {A: [1, 2, 3, 4, 5], B: [1, 2, 3]}
    assert await seqs(log, A) == [1, 2, 3, 4, 5]


async def test_read_returns_the_frames_after_a_position_up_to_a_limit(
    open_log: LogFactory,
) -> None:
    log = await open_log()
    sent: list[Frame] = [
        frame("안녕하세요"),
        frame("step", kind="step"),
        {"type": "history", "messages": [{"role": "user", "content": "x", "images": []}]},
        frame(""),
        frame("end", kind="end"),
    ]
    for item in sent:
        await log.append(A, dict(item))
    everything = await log.read(A, 0, 100)
    assert everything == [{**item, "seq": i} for i, item in enumerate(sent, start=1)]
    assert await seqs(log, A, after=2, limit=2) == [3, 4]
    assert await seqs(log, A, after=4, limit=10) == [5]
    assert await log.read(A, 5, 10) == []


async def test_a_client_without_a_log(open_log: LogFactory) -> None:
    log = await open_log()
    position = await log.position(A)
    assert (position.exists, position.first_seq, position.head) == (False, 1, 0)
    assert position.epoch == log.epoch
    assert await log.read(A, 0, 10) == []
    assert await log.read(A, 5, 10) is None  # nothing reaches back to seq 6


async def test_position_reports_the_span_held(open_log: LogFactory) -> None:
    log = await open_log()
    for i in range(4):
        await log.append(A, frame(str(i)))
    position = await log.position(A)
    assert (position.exists, position.first_seq, position.head) == (True, 1, 4)
    assert position.epoch == log.epoch and log.epoch


async def test_frames_past_the_count_limit_are_trimmed(open_log: LogFactory) -> None:
    log = await open_log(max_frames=3)
    for i in range(5):
        await log.append(A, frame(str(i)))
    position = await log.position(A)
    assert (position.first_seq, position.head) == (3, 5)
    assert await log.read(A, 1, 10) is None  # seq 2 is gone
    assert await seqs(log, A, after=2) == [3, 4, 5]
    assert await log.read(A, 0, 10) is None


async def test_frames_past_the_byte_budget_are_trimmed_oldest_first(
    open_log: LogFactory,
) -> None:
    # Each frame costs its 2,000 characters plus the engine's fixed overhead (memory: 256 per
    # frame; Redis: its JSON plus 64): four fit in 10,000 bytes, five do not.
    log = await open_log(max_client_bytes=10_000)
    for i in range(10):
        await log.append(A, frame(str(i) * 2000))
        await log.append(B, frame("small"))
    position = await log.position(A)
    assert (position.first_seq, position.head) == (7, 10)
    assert await log.read(A, 5, 10) is None  # seq 6 is gone: a resume from there is expired
    kept = await log.read(A, 6, 10)
    assert kept is not None and [f["content"][0] for f in kept] == ["6", "7", "8", "9"]
    assert (await log.position(B)).first_seq == 1  # another client's budget is its own


async def test_a_frame_larger_than_the_byte_budget_is_kept_alone(open_log: LogFactory) -> None:
    log = await open_log(max_client_bytes=10_000)
    for i in range(3):
        await log.append(A, frame(f"small {i}"))
    await log.append(A, {"type": "history", "messages": [{"content": "x" * 30_000}]})
    position = await log.position(A)
    assert (position.first_seq, position.head) == (4, 4)  # the unread newest frame stays
    await log.append(A, frame("next"))
    assert (await log.position(A)).first_seq == 5  # and goes when the next one comes


async def test_frames_past_the_age_limit_are_trimmed(open_log: LogFactory) -> None:
    log = await open_log(max_age_s=0.2)
    await log.append(A, frame("old 1"))
    await log.append(A, frame("old 2"))
    await eventually(lambda: _is_none(log.read(A, 0, 10)), timeout=5)
    position = await log.position(A)
    assert (position.exists, position.first_seq, position.head) == (True, 3, 2)
    assert await log.read(A, 2, 10) == []  # up to date: nothing held, nothing missing
    # Numbering goes on after the trim.
    assert await log.append(A, frame("new")) == 3
    assert await seqs(log, A, after=2) == [3]


async def _is_none(result: Awaitable[Any]) -> bool:
    return await result is None


async def test_forget_drops_the_log_and_its_numbering(open_log: LogFactory) -> None:
    log = await open_log()
    await log.append(A, frame("a"))
    await log.append(B, frame("b"))
    await log.forget(A)
    assert (await log.position(A)).exists is False
    assert await log.read(A, 0, 10) == []
    assert await log.append(A, frame("again")) == 1
    assert await seqs(log, B) == [1]  # other clients keep theirs


async def test_pieces_with_a_merge_key_read_back_as_the_whole_text(
    open_log: LogFactory,
) -> None:
    # The memory log may merge unread pieces, the Redis log never does; either way seq stays
    # contiguous and the text read is exactly the text appended.
    log = await open_log()
    pieces = ["Hel", "lo", ", ", "wor", "ld"]
    for piece in pieces:
        await log.append(A, frame(piece), merge_key="r-1")
    frames = await log.read(A, 0, 100)
    assert frames is not None
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert "".join(f["content"] for f in frames) == "Hello, world"


async def test_frames_already_read_never_change(open_log: LogFactory) -> None:
    log = await open_log()
    await log.append(A, frame("one"), merge_key="r-1")
    first = await log.read(A, 0, 100)
    await log.append(A, frame("two"), merge_key="r-1")
    assert await log.read(A, 0, 100) == [*first, {**frame("two"), "seq": 2}]  # type: ignore[misc]


# --- Redis only: several nodes, lost data ----------------------------------------------------


@pytest.fixture
async def two_nodes(redis_prefix: tuple[str, str]) -> AsyncIterator[list[RedisReplayLog]]:
    url, prefix = redis_prefix
    logs = [RedisReplayLog(url, prefix=prefix), RedisReplayLog(url, prefix=prefix)]
    for log in logs:
        await log.start()
    yield logs
    for log in logs:
        await log.close()


async def test_two_nodes_share_a_clients_numbering(two_nodes: list[RedisReplayLog]) -> None:
    one, two = two_nodes
    assert one.epoch == two.epoch
    assert await one.append(A, frame("from one")) == 1
    assert await two.append(A, frame("from two")) == 2
    assert await one.append(A, frame("from one again")) == 3
    frames = await two.read(A, 0, 10)
    assert frames is not None
    assert [(f["seq"], f["content"]) for f in frames] == [
        (1, "from one"),
        (2, "from two"),
        (3, "from one again"),
    ]
    assert await one.position(A) == await two.position(A)


async def test_appends_from_many_nodes_at_once_never_share_a_seq(
    two_nodes: list[RedisReplayLog],
) -> None:
    one, two = two_nodes
    numbers = await asyncio.gather(
        *(node.append(A, frame(str(i))) for i in range(50) for node in (one, two))
    )
    assert sorted(numbers) == list(range(1, 101))
    assert await seqs(one, A) == list(range(1, 101))


async def test_age_trimming_finds_the_first_young_entry_among_many(
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    # Old entries written by a node keeping frames long (so the stream key does not expire),
    # then trimmed by a node keeping them 0.3 s: the binary search over seqs finds the cut.
    patient = RedisReplayLog(url, max_age_s=600, prefix=prefix)
    strict = RedisReplayLog(url, max_age_s=0.3, prefix=prefix)
    raw = aioredis.Redis.from_url(url)
    stream = f"{prefix}replay:{A}:log"
    try:
        for i in range(20):
            await patient.append(A, frame(f"old {i}"))

        async def all_old() -> bool:  # looks without trimming, unlike read() and position()
            seconds, micros = await raw.time()
            newest = await raw.xrevrange(stream, count=1)
            return int(newest[0][1][b"t"]) < seconds * 1000 + micros // 1000 - 300

        await eventually(all_old, timeout=5)
        for i in range(7):
            await strict.append(A, frame(f"young {i}"))
        position = await strict.position(A)
        assert (position.first_seq, position.head) == (21, 27)
        assert await raw.xlen(stream) == 7
        assert await seqs(patient, A, after=20) == list(range(21, 28))
    finally:
        await raw.aclose()
        await patient.close()
        await strict.close()


async def test_appends_check_the_age_limit_once_every_32_frames(
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    patient = RedisReplayLog(url, max_age_s=600, prefix=prefix)
    strict = RedisReplayLog(url, max_age_s=0.5, prefix=prefix)
    raw = aioredis.Redis.from_url(url)
    stream = f"{prefix}replay:{A}:log"
    try:
        for i in range(20):
            await patient.append(A, frame(f"old {i}"))

        async def all_old() -> bool:
            seconds, micros = await raw.time()
            newest = await raw.xrevrange(stream, count=1)
            return int(newest[0][1][b"t"]) < seconds * 1000 + micros // 1000 - 500

        await eventually(all_old, timeout=5)
        for i in range(21, 32):
            assert await strict.append(A, frame(f"young {i}")) == i
        assert await raw.xlen(stream) == 31  # no age check on these appends: no search per frame
        assert await strict.append(A, frame("young 32")) == 32
        assert await raw.xlen(stream) == 12  # the 32nd drops what aged out
    finally:
        await raw.aclose()
        await patient.close()
        await strict.close()


async def test_a_position_past_the_head_reads_as_lost(two_nodes: list[RedisReplayLog]) -> None:
    one, _ = two_nodes
    await one.append(A, frame("x"))
    # Only numbering that no longer exists puts a reader past the head (Redis lost the keys).
    assert await one.read(A, 5, 10) is None


async def test_lost_redis_data_means_a_new_epoch_and_no_resume(
    two_nodes: list[RedisReplayLog], redis_prefix: tuple[str, str]
) -> None:
    one, two = two_nodes
    for i in range(3):
        await one.append(A, frame(str(i)))
    old = await one.position(A)
    assert await seqs(one, A) == [1, 2, 3]
    # What a Redis restart without persistence does to our keys.
    url, prefix = redis_prefix
    client = aioredis.Redis.from_url(url)
    try:
        await client.delete(*[key async for key in client.scan_iter(match=f"{prefix}*")])
    finally:
        await client.aclose()
    now = await two.position(A)
    assert now.exists is False and now.epoch != old.epoch
    assert await one.append(A, frame("new life")) == 1
    # A reader attached before the loss must not take seq 1 of the new numbering for its own.
    assert await one.read(A, 0, 10) is None
    assert one.epoch == two.epoch == now.epoch
    assert await seqs(one, A) == [1]  # the reconnected reader starts in the new epoch


@pytest.fixture
async def two_nodes_on_their_own_redis(
    private_redis: RedisServer,
) -> AsyncIterator[list[RedisReplayLog]]:
    """Two logs on a redis-server of the test's own, which the test may restart."""
    logs = [RedisReplayLog(private_redis.url), RedisReplayLog(private_redis.url)]
    for log in logs:
        await log.start()
    yield logs
    for log in logs:
        await log.close()


async def test_a_redis_restart_is_survived_with_a_new_epoch(
    two_nodes_on_their_own_redis: list[RedisReplayLog], private_redis: RedisServer
) -> None:
    one, two = two_nodes_on_their_own_redis
    await one.append(A, frame("before"))
    before = one.epoch
    async with private_redis.stopped():
        with pytest.raises(ReplayUnavailable):
            await one.append(A, frame("during"))
        with pytest.raises(ReplayUnavailable):
            await two.position(A)
    position = await two.position(A)
    assert position.exists is False and position.epoch != before
    assert await one.append(A, frame("after")) == 1
