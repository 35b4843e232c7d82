"""MemoryReplayLog: numbered frames, merging into the unread tail only, trimming, position."""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import dari.hub.replay as replay_module
from dari.hub.replay import FRAME_OVERHEAD, MemoryReplayLog, frame_bytes
from dari.protocol.resume import LogPosition

C = "client-1"


def response(content: str, request_id: str = "r-1") -> dict[str, Any]:
    return {"type": "response", "request_id": request_id, "content": content}


def other(kind: str = "step") -> dict[str, Any]:
    return {"type": kind, "request_id": "r-1", "content": kind}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The replay module's ``time`` replaced by a fake (the class takes no clock)."""
    fake = FakeClock()
    monkeypatch.setattr(replay_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def seqs(frames: list[dict[str, Any]] | None) -> list[int]:
    assert frames is not None
    return [frame["seq"] for frame in frames]


# --- numbering ------------------------------------------------------------------------------


async def test_appends_get_contiguous_seqs_from_one() -> None:
    log = MemoryReplayLog()
    frames = [other("start"), response("a"), other("end")]
    assert [await log.append(C, frame) for frame in frames] == [1, 2, 3]
    assert [frame["seq"] for frame in frames] == [1, 2, 3]
    assert seqs(await log.read(C, 0, 100)) == [1, 2, 3]


async def test_each_client_has_its_own_numbering() -> None:
    log = MemoryReplayLog()
    assert await log.append("a", other()) == 1
    assert await log.append("b", other()) == 1
    assert await log.append("a", other()) == 2
    assert seqs(await log.read("b", 0, 10)) == [1]


async def test_read_returns_frames_after_the_position_in_order_up_to_limit() -> None:
    log = MemoryReplayLog()
    for i in range(5):
        await log.append(C, response(str(i), request_id=f"r-{i}"))
    assert seqs(await log.read(C, 1, 2)) == [2, 3]
    assert seqs(await log.read(C, 3, 100)) == [4, 5]
    assert await log.read(C, 5, 100) == []
    assert await log.read(C, 9, 100) == []  # ahead of head: nothing yet


async def test_read_of_an_unknown_client() -> None:
    log = MemoryReplayLog()
    assert await log.read("nobody", 0, 10) == []
    assert await log.read("nobody", 3, 10) is None


# --- merging --------------------------------------------------------------------------------


async def test_same_key_merges_into_the_unread_tail() -> None:
    log = MemoryReplayLog()
    first = await log.append(C, response("Hello"), merge_key="r-1")
    assert await log.append(C, response(", "), merge_key="r-1") == first
    assert await log.append(C, response("world"), merge_key="r-1") == first
    frames = await log.read(C, 0, 10)
    assert frames == [{**response("Hello, world"), "seq": 1}]
    assert (await log.position(C)).head == 1


async def test_a_different_key_starts_a_new_entry() -> None:
    log = MemoryReplayLog()
    await log.append(C, response("a", "r-1"), merge_key="r-1")
    assert await log.append(C, response("b", "r-2"), merge_key="r-2") == 2
    assert await log.append(C, response("c", "r-1"), merge_key="r-1") == 3
    assert [f["content"] for f in await log.read(C, 0, 10) or []] == ["a", "b", "c"]


async def test_frames_without_a_key_never_merge_and_are_never_merged_into() -> None:
    log = MemoryReplayLog()
    await log.append(C, response("a"))
    assert await log.append(C, response("b")) == 2
    assert await log.append(C, response("c"), merge_key="r-1") == 3
    await log.append(C, other("end"))
    assert await log.append(C, response("d"), merge_key="r-1") == 5
    assert [f["content"] for f in await log.read(C, 0, 10) or []] == ["a", "b", "c", "end", "d"]


async def test_only_the_tail_is_merged_into() -> None:
    log = MemoryReplayLog()
    await log.append(C, response("a"), merge_key="r-1")
    await log.append(C, other("step"))  # the tail now has no key
    assert await log.append(C, response("b"), merge_key="r-1") == 3


async def test_a_read_entry_is_sealed_and_never_changes() -> None:
    log = MemoryReplayLog()
    await log.append(C, response("Hello"), merge_key="r-1")
    await log.append(C, response(" there"), merge_key="r-1")
    sent = await log.read(C, 0, 10)
    assert sent is not None
    snapshot = copy.deepcopy(sent)
    assert await log.append(C, response("!"), merge_key="r-1") == 2
    assert sent == snapshot == [{**response("Hello there"), "seq": 1}]
    assert await log.read(C, 0, 10) == [*snapshot, {**response("!"), "seq": 2}]


async def test_a_partial_read_seals_only_what_it_returned() -> None:
    log = MemoryReplayLog()
    await log.append(C, response("a", "r-1"), merge_key="r-1")
    await log.append(C, response("b", "r-2"), merge_key="r-2")
    assert seqs(await log.read(C, 0, 1)) == [1]
    assert await log.append(C, response("c", "r-2"), merge_key="r-2") == 2  # unread tail
    assert await log.append(C, response("d", "r-1"), merge_key="r-1") == 3
    assert [f["content"] for f in await log.read(C, 1, 10) or []] == ["bc", "d"]


async def test_rereading_an_old_position_does_not_unseal_newer_entries() -> None:
    log = MemoryReplayLog()
    await log.append(C, response("a"), merge_key="r-1")
    await log.append(C, response("b"), merge_key="r-2")
    await log.read(C, 0, 10)  # seals 1 and 2
    await log.read(C, 0, 1)  # a resumed reader starting over
    assert await log.append(C, response("c"), merge_key="r-2") == 3


async def test_an_empty_read_seals_nothing() -> None:
    log = MemoryReplayLog()
    await log.append(C, response("a"), merge_key="r-1")
    assert await log.read(C, 1, 10) == []
    assert await log.read(C, 0, 0) == []
    assert await log.append(C, response("b"), merge_key="r-1") == 1


# --- trimming -------------------------------------------------------------------------------


async def test_count_trimming_keeps_the_newest_frames() -> None:
    log = MemoryReplayLog(max_frames=3)
    for i in range(5):
        await log.append(C, other(f"f{i}"))
    assert await log.position(C) == LogPosition(True, log.epoch, first_seq=3, head=5)
    assert await log.read(C, 0, 10) is None
    assert await log.read(C, 1, 10) is None
    assert seqs(await log.read(C, 2, 10)) == [3, 4, 5]


async def test_merging_does_not_count_as_a_new_frame() -> None:
    log = MemoryReplayLog(max_frames=2)
    await log.append(C, other("start"))
    for piece in ["many", "small", "pieces"]:
        await log.append(C, response(piece), merge_key="r-1")
    assert await log.position(C) == LogPosition(True, log.epoch, first_seq=1, head=2)


async def test_age_trimming_drops_old_frames(clock: FakeClock) -> None:
    log = MemoryReplayLog(max_age_s=10.0)
    await log.append(C, other("f1"))
    clock.now += 5
    await log.append(C, other("f2"))
    clock.now += 6  # f1 is 11 s old, f2 5 s
    assert await log.position(C) == LogPosition(True, log.epoch, first_seq=2, head=2)
    assert await log.read(C, 0, 10) is None
    assert seqs(await log.read(C, 1, 10)) == [2]


async def test_a_frame_exactly_max_age_old_is_kept(clock: FakeClock) -> None:
    log = MemoryReplayLog(max_age_s=10.0)
    await log.append(C, other())
    clock.now += 10
    assert seqs(await log.read(C, 0, 10)) == [1]


async def test_when_everything_expired_the_head_is_kept(clock: FakeClock) -> None:
    log = MemoryReplayLog(max_age_s=1.0)
    for _ in range(3):
        await log.append(C, other())
    clock.now += 60
    assert await log.position(C) == LogPosition(True, log.epoch, first_seq=4, head=3)
    assert await log.read(C, 3, 10) == []
    assert await log.read(C, 2, 10) is None
    assert await log.append(C, other()) == 4  # numbering continues
    assert seqs(await log.read(C, 3, 10)) == [4]


async def test_append_trims_by_age_too(clock: FakeClock) -> None:
    log = MemoryReplayLog(max_age_s=1.0)
    await log.append(C, other())
    clock.now += 2
    await log.append(C, other())
    assert (await log.position(C)).first_seq == 2


# --- position and forget --------------------------------------------------------------------


async def test_position_of_an_unknown_client() -> None:
    log = MemoryReplayLog()
    assert await log.position("nobody") == LogPosition(False, log.epoch, first_seq=1, head=0)


async def test_position_follows_appends() -> None:
    log = MemoryReplayLog()
    await log.append(C, other())
    await log.append(C, other())
    assert await log.position(C) == LogPosition(True, log.epoch, first_seq=1, head=2)


async def test_each_log_has_its_own_epoch() -> None:
    first, second = MemoryReplayLog(), MemoryReplayLog()
    assert first.epoch and second.epoch and first.epoch != second.epoch


async def test_forget_drops_the_log_of_one_client() -> None:
    log = MemoryReplayLog()
    await log.append("a", other())
    await log.append("b", other())
    await log.forget("a")
    assert (await log.position("a")).exists is False
    assert await log.read("a", 1, 10) is None
    assert seqs(await log.read("b", 0, 10)) == [1]
    await log.forget("never-seen")  # no error


# --- bytes ----------------------------------------------------------------------------------


async def test_bytes_follow_appends_merges_trims_and_forget() -> None:
    log = MemoryReplayLog(max_frames=2)
    await log.append("a", response("x" * 100), merge_key="r-1")
    await log.append("a", response("y" * 50), merge_key="r-1")  # merged into the unread tail
    assert log.client_bytes("a") == FRAME_OVERHEAD + 150
    await log.append("a", other())
    await log.append("a", other())  # the count trim drops the merged frame
    kept = await log.read("a", 1, 10)
    assert kept is not None and log.client_bytes("a") == sum(frame_bytes(f) for f in kept)
    await log.append("b", response("z" * 10))
    assert log.total_bytes == log.client_bytes("a") + FRAME_OVERHEAD + 10
    await log.forget("a")
    assert log.total_bytes == FRAME_OVERHEAD + 10


async def test_a_history_reply_is_counted_by_its_messages() -> None:
    reply = {"type": "history", "messages": [{"content": "m" * 5000, "images": ["i" * 3000]}]}
    assert 8000 < frame_bytes(reply) - FRAME_OVERHEAD < 8200


async def test_past_the_client_budget_the_oldest_frames_go_but_never_the_newest() -> None:
    log = MemoryReplayLog(max_client_bytes=3 * (FRAME_OVERHEAD + 1000))
    for i in range(5):
        await log.append(C, response(str(i) * 1000, request_id=f"r-{i}"))
    position = await log.position(C)
    assert (position.first_seq, position.head) == (3, 5)
    await log.append(C, response("big" * 5000, request_id="r-big"))
    position = await log.position(C)
    assert (position.first_seq, position.head) == (6, 6)


async def test_merging_past_the_client_budget_trims_too() -> None:
    log = MemoryReplayLog(max_client_bytes=2 * FRAME_OVERHEAD + 1000)
    await log.append(C, other())
    for _ in range(20):
        await log.append(C, response("x" * 100), merge_key="r-1")  # one growing tail
    position = await log.position(C)
    assert (position.first_seq, position.head) == (2, 2)
    assert log.client_bytes(C) == FRAME_OVERHEAD + 2000


async def test_past_the_total_budget_absent_clients_lose_frames_first(clock: FakeClock) -> None:
    size = FRAME_OVERHEAD + 30_000
    # Four frames pass the total; eviction goes down to 7/8 of it, which one frame is enough.
    log = MemoryReplayLog(max_client_bytes=10**9, max_total_bytes=4 * size - 1)
    present = {"here"}
    log.attached = lambda client_id: client_id in present
    await log.append("here", response("h" * 30_000))
    for client_id in ("left-first", "left-later"):
        clock.now += 1
        await log.append(client_id, response("x" * 30_000))
    clock.now += 1
    await log.append("here", response("n" * 30_000))
    assert log.total_bytes == 3 * size
    early = await log.position("left-first")
    assert (early.first_seq, early.head) == (2, 1)  # resuming from 0 is now `expired`
    assert (await log.position("left-later")).first_seq == 1
    assert (await log.position("here")).first_seq == 1


async def test_past_the_total_budget_attached_clients_lose_frames_when_nobody_else_has_any(
    clock: FakeClock,
) -> None:
    size = FRAME_OVERHEAD + 30_000
    log = MemoryReplayLog(max_client_bytes=10**9, max_total_bytes=3 * size)
    log.attached = lambda client_id: True
    await log.append("older", response("o" * 30_000))
    for i in range(3):
        clock.now += 1
        await log.append("newer", response(str(i) * 30_000, request_id=f"r-{i}"))
    assert log.total_bytes <= 3 * size
    assert (await log.position("older")).first_seq == 2  # its frame was the oldest
    assert (await log.position("newer")).head == 3


async def test_sweep_drops_the_logs_of_absent_clients_whose_frames_all_expired(
    clock: FakeClock,
) -> None:
    log = MemoryReplayLog(max_age_s=60)
    present = {"here"}
    log.attached = lambda client_id: client_id in present
    for client_id in ("here", "gone", "gone-recently"):
        await log.append(client_id, response("x" * 1000))
    clock.now += 30
    await log.append("gone-recently", response("y"))
    assert log.sweep() == 0  # nothing expired yet
    clock.now += 31  # the first frames are 61 s old
    assert log.sweep() == 1
    assert "gone" not in log and "here" in log and "gone-recently" in log
    assert log.client_bytes("here") == 0  # expired, but its log (its numbering) stays
    assert log.total_bytes == FRAME_OVERHEAD + 1
    clock.now += 30
    assert log.sweep() == 1 and "gone-recently" not in log
    assert log.total_bytes == 0


# --- the model: random appends and reads ----------------------------------------------------

REQUESTS = ("r-1", "r-2")
pieces = st.text(alphabet="ab 가🙂\n", min_size=0, max_size=4)


class ReplayLogMachine(RuleBasedStateMachine):
    """One writer appends; one reader reads from where it stopped, with random limits.

    Model: merged iff the tail has the same key and is unread. Checked: seqs read are
    contiguous; nothing read ever changes; reading everything and joining runs of the same
    request gives exactly what was appended, in the same order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.log = MemoryReplayLog(max_frames=100_000, max_age_s=1e9)
        self.appended: list[tuple[str, str | None, str]] = []  # (kind, key, content)
        self.read_frames: list[dict[str, Any]] = []
        self.read_snapshots: list[dict[str, Any]] = []
        self.position = 0
        self.head = 0
        self.tail_key: str | None = None

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.check_everything_arrives()
        finally:
            self.loop.close()

    @initialize()
    def start(self) -> None:
        assert self.run(self.log.read(C, 0, 10)) == []

    @rule(request=st.sampled_from(REQUESTS), content=pieces)
    def append_piece(self, request: str, content: str) -> None:
        mergeable = self.tail_key == request and self.head > self.position
        seq = self.run(self.log.append(C, response(content, request), merge_key=request))
        if mergeable:
            assert seq == self.head, "a piece for the unread tail of its request is merged"
        else:
            assert seq == self.head + 1, "a piece is merged only into its request's unread tail"
            self.head = seq
        self.tail_key = request
        self.appended.append(("response", request, content))

    @rule(kind=st.sampled_from(["start", "step", "end"]))
    def append_other(self, kind: str) -> None:
        seq = self.run(self.log.append(C, other(kind)))
        assert seq == self.head + 1
        self.head = seq
        self.tail_key = None
        self.appended.append((kind, None, kind))

    @rule(limit=st.integers(min_value=1, max_value=4))
    def read(self, limit: int) -> None:
        frames = self.run(self.log.read(C, self.position, limit))
        assert frames is not None
        expected = list(range(self.position + 1, min(self.head, self.position + limit) + 1))
        assert [f["seq"] for f in frames] == expected
        self.read_frames.extend(frames)
        self.read_snapshots.extend(copy.deepcopy(frames))
        if frames:
            self.position = frames[-1]["seq"]

    @precondition(lambda self: self.position > 0)
    @rule(data=st.data())
    def reread(self, data: st.DataObject) -> None:
        after = data.draw(st.integers(min_value=0, max_value=self.position - 1))
        frames = self.run(self.log.read(C, after, self.position - after))
        assert frames == self.read_snapshots[after : self.position]

    @invariant()
    def nothing_read_changes(self) -> None:
        assert self.read_frames == self.read_snapshots

    @invariant()
    def position_matches_the_model(self) -> None:
        position = self.run(self.log.position(C))
        assert (position.first_seq, position.head) == (1, self.head)

    def check_everything_arrives(self) -> None:
        rest = self.run(self.log.read(C, self.position, 1_000_000))
        frames = self.read_frames + (rest or [])
        assert [f["seq"] for f in frames] == list(range(1, self.head + 1))
        # The bytes counted at each append and merge are the frames' sizes as they ended up.
        assert self.log.client_bytes(C) == sum(frame_bytes(f) for f in frames)
        assert self.log.total_bytes == self.log.client_bytes(C)
        assert coalesce(
            (f["type"], f.get("request_id") if f["type"] == "response" else None, f["content"])
            for f in frames
        ) == coalesce(self.appended)


def coalesce(items: Any) -> list[tuple[str, str | None, str]]:
    """Join adjacent response pieces of the same request; keep everything else as is."""
    out: list[tuple[str, str | None, str]] = []
    for kind, key, content in items:
        if kind == "response" and out and out[-1][0] == "response" and out[-1][1] == key:
            out[-1] = (kind, key, out[-1][2] + content)
        else:
            out.append((kind, key, content))
    return out


ReplayLogMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None
)
test_replay_log_model = ReplayLogMachine.TestCase


@given(
    keys=st.lists(st.sampled_from([None, "r-1", "r-2"]), max_size=40),
    max_frames=st.integers(min_value=1, max_value=6),
)
async def test_count_trimming_keeps_exactly_the_newest_max_frames(
    keys: list[str | None], max_frames: int
) -> None:
    log = MemoryReplayLog(max_frames=max_frames, max_age_s=1e9)
    for key in keys:
        await log.append(C, response("x", key or "r-0"), merge_key=key)
    position = await log.position(C)
    head = position.head
    oldest = max(1, head - max_frames + 1)
    assert position.first_seq == (oldest if head else 1)
    for after in range(head + 1):
        frames = await log.read(C, after, 100)
        if after + 1 < oldest:
            assert frames is None
        else:
            assert seqs(frames) == list(range(after + 1, head + 1))


async def test_logged_frames_are_left_out_of_cyclic_garbage_collection() -> None:
    # Thousands of kept frames per client must not lengthen the collector's full passes: a
    # logged response frame and its entry hold only strings and ints, so they are untracked.
    import gc

    log = MemoryReplayLog()
    for n in range(100):
        await log.append(C, response(f"piece {n}", request_id=f"r-{n}"), merge_key=f"r-{n}")
    await log.read(C, 0, 1000)
    gc.collect()
    kept = log._logs[C].frames
    assert len(kept) == 100
    assert not any(gc.is_tracked(frame) for frame in kept)
