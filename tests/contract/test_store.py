"""The store contract (dari.stores.base.Store), for SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dari.protocol.frames import ConversationKey
from dari.stores.base import MessageRecord
from dari.stores.sql import SqlStore
from tests.contract.conftest import StoreFactory

KEY = ConversationKey("p1", "집사", "main")
_request_ids = itertools.count(1)


def new_request_id() -> str:
    return f"r-{next(_request_ids)}"


async def chat(
    store: SqlStore,
    message: str = "hello",
    *,
    user: str = "alice",
    id: str | None = None,
    key: ConversationKey = KEY,
    images: list[str] | None = None,
    request_id: str | None = None,
) -> Any:
    return await store.accept_chat(
        user_id=user,
        client_message_id=id,
        request_id=request_id or new_request_id(),
        key=key,
        message=message,
        images=images or [],
    )


async def answer(
    store: SqlStore,
    content: str,
    *,
    key: ConversationKey = KEY,
    status: Any = "complete",
    node: str = "node-a",
    steps: list[dict[str, Any]] | None = None,
) -> int:
    message_id = await store.begin_answer(key, new_request_id(), node)
    await store.save_answer(message_id, content, status, steps or [])
    return message_id


async def contents(store: SqlStore, key: ConversationKey = KEY, limit: int = 1000) -> list[str]:
    return [m.content for m in await store.history(key, limit)]


# --- idempotency of chats -------------------------------------------------------------------


async def test_a_new_chat_is_saved_as_a_user_message(store: SqlStore) -> None:
    accepted = await chat(store, "hello", id="m-1", request_id="m-1")
    assert accepted.duplicate is False
    assert accepted.request_id == "m-1"
    [message] = await store.history(KEY, 10)
    assert message.id == accepted.message_id
    assert (message.role, message.content, message.status) == ("user", "hello", "complete")
    assert message.request_id == "m-1"


async def test_same_user_and_id_is_a_duplicate_with_the_original_request_id(
    store: SqlStore,
) -> None:
    first = await chat(store, "hello", id="m-1", request_id="req-original")
    again = await chat(store, "hello", id="m-1", request_id="req-second")
    assert first.duplicate is False
    assert again.duplicate is True
    assert again.request_id == "req-original"
    assert again.message_id is None
    assert await contents(store) == ["hello"]


async def test_the_same_id_from_another_user_is_independent(store: SqlStore) -> None:
    alice = await chat(store, "from alice", user="alice", id="m-1", request_id="ra")
    bob = await chat(store, "from bob", user="bob", id="m-1", request_id="rb")
    assert (alice.duplicate, bob.duplicate) == (False, False)
    assert bob.request_id == "rb"
    assert await contents(store) == ["from alice", "from bob"]
    assert (await chat(store, user="bob", id="m-1")).request_id == "rb"


async def test_chats_without_id_are_never_duplicates(store: SqlStore) -> None:
    results = [await chat(store, "same text") for _ in range(3)]
    assert [r.duplicate for r in results] == [False, False, False]
    assert len({r.message_id for r in results}) == 3
    assert await contents(store) == ["same text"] * 3


async def test_an_id_is_unique_per_user_across_conversations(store: SqlStore) -> None:
    other = ConversationKey("p1", "echo", "t-2")
    await chat(store, "first", id="m-1", request_id="r-first")
    again = await chat(store, "elsewhere", id="m-1", key=other)
    assert again.duplicate is True
    assert again.request_id == "r-first"
    assert await store.history(other, 10) == []


async def test_concurrent_chats_with_the_same_id_are_accepted_exactly_once(
    store: SqlStore,
) -> None:
    results = await asyncio.gather(
        *(chat(store, "once", id="m-race", request_id=f"req-{i}") for i in range(20))
    )
    originals = [r for r in results if not r.duplicate]
    assert len(originals) == 1
    assert {r.request_id for r in results} == {originals[0].request_id}
    assert await contents(store) == ["once"]


async def test_concurrent_chats_with_the_same_id_on_several_nodes_are_accepted_once(
    open_store: StoreFactory,
) -> None:
    nodes = [await open_store() for _ in range(3)]
    results = await asyncio.gather(
        *(
            chat(nodes[i % 3], "once", id="m-race", request_id=f"req-{i}", key=KEY)
            for i in range(15)
        )
    )
    originals = [r for r in results if not r.duplicate]
    assert len(originals) == 1
    assert {r.request_id for r in results} == {originals[0].request_id}
    assert await contents(nodes[0]) == ["once"]


async def test_concurrent_chats_into_a_new_conversation_from_several_nodes_all_land(
    open_store: StoreFactory,
) -> None:
    nodes = [await open_store() for _ in range(3)]
    fresh = ConversationKey("p-new", "echo", "main")
    await asyncio.gather(*(chat(nodes[i % 3], f"m{i}", key=fresh) for i in range(12)))
    assert sorted(await contents(nodes[1], fresh)) == sorted(f"m{i}" for i in range(12))


# --- client ownership -----------------------------------------------------------------------


async def test_the_first_user_to_claim_a_client_owns_it(store: SqlStore) -> None:
    assert await store.claim_client("tab-1", "alice") == "alice"
    assert await store.claim_client("tab-1", "bob") == "alice"
    assert await store.claim_client("tab-1", "alice") == "alice"
    assert await store.claim_client("tab-2", "bob") == "bob"


async def test_concurrent_claims_agree_on_one_owner(open_store: StoreFactory) -> None:
    nodes = [await open_store() for _ in range(2)]
    users = [f"user-{i}" for i in range(12)]
    owners = await asyncio.gather(
        *(nodes[i % 2].claim_client("tab-race", user) for i, user in enumerate(users))
    )
    assert len(set(owners)) == 1
    assert owners[0] in users
    assert await nodes[0].claim_client("tab-race", "late") == owners[0]


# --- answers --------------------------------------------------------------------------------


async def test_an_answer_streams_then_completes(store: SqlStore) -> None:
    await chat(store, "question")
    message_id = await store.begin_answer(KEY, "r-ans", "node-a")
    streaming = (await store.history(KEY, 10))[-1]
    assert (streaming.id, streaming.role, streaming.status) == (
        message_id,
        "assistant",
        "streaming",
    )
    assert (streaming.content, streaming.request_id) == ("", "r-ans")
    steps = [{"name": "search", "state": "finished", "content": "검색 중..."}]
    await store.save_answer(message_id, "the answer", "complete", steps)
    done = (await store.history(KEY, 10))[-1]
    assert (done.id, done.status, done.content, done.steps) == (
        message_id,
        "complete",
        "the answer",
        steps,
    )


@pytest.mark.parametrize("status", ["complete", "cancelled", "failed", "streaming"])
async def test_an_answer_is_saved_with_its_status(store: SqlStore, status: Any) -> None:
    message_id = await answer(store, "partial", status=status)
    [saved] = await store.history(KEY, 10)
    assert (saved.id, saved.status, saved.content) == (message_id, status, "partial")


async def test_saving_an_answer_again_replaces_its_content(store: SqlStore) -> None:
    message_id = await store.begin_answer(KEY, "r-1", "node-a")
    await store.save_answer(message_id, "Hel", "streaming", [])
    await store.save_answer(message_id, "Hello", "complete", [])
    assert await contents(store) == ["Hello"]


async def test_saves_of_one_answer_commit_in_the_order_they_were_made(store: SqlStore) -> None:
    """A checkpoint still queued when the answer ends (its caller stopped waiting) must not
    commit after the final save: the answer would stay ``streaming`` with part of its text."""
    ids = [await store.begin_answer(KEY, new_request_id(), "node-a") for _ in range(64)]
    saves = []
    for message_id in ids:
        # Submitted in this order, neither awaited before the other is submitted.
        # A bulky checkpoint takes longer to write than the final save that follows it.
        checkpoint = store.save_answer(message_id, "Hel" * 100_000, "streaming", [])
        saves.append(asyncio.ensure_future(checkpoint))
        saves.append(asyncio.ensure_future(store.save_answer(message_id, "Hello", "complete", [])))
    await asyncio.gather(*saves)
    saved = {m.id: (m.status, m.content) for m in await store.history(KEY, 100)}
    assert [saved[message_id] for message_id in ids] == [("complete", "Hello")] * len(ids)


# --- history --------------------------------------------------------------------------------


async def test_history_is_oldest_first(store: SqlStore) -> None:
    await chat(store, "q1")
    await answer(store, "a1")
    await chat(store, "q2")
    await answer(store, "a2")
    history = await store.history(KEY, 10)
    assert [(m.role, m.content) for m in history] == [
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "a2"),
    ]
    assert [m.id for m in history] == sorted(m.id for m in history)
    assert [m.created_at for m in history] == sorted(m.created_at for m in history)


async def test_history_limit_keeps_the_newest_messages(store: SqlStore) -> None:
    for i in range(7):
        await chat(store, f"m{i}")
    assert await contents(store, limit=3) == ["m4", "m5", "m6"]
    assert await contents(store, limit=1) == ["m6"]
    assert await contents(store, limit=100) == [f"m{i}" for i in range(7)]
    assert await store.history(KEY, 0) == []


async def test_before_pages_backwards_without_gaps_or_overlaps(store: SqlStore) -> None:
    for i in range(10):
        await chat(store, f"m{i}")
    pages: list[list[str]] = []
    before: int | None = None
    while True:
        page = await store.history(KEY, 3, before=before)
        if not page:
            break
        pages.append([m.content for m in page])
        before = page[0].id
    assert pages == [["m7", "m8", "m9"], ["m4", "m5", "m6"], ["m1", "m2", "m3"], ["m0"]]


async def test_before_is_exclusive(store: SqlStore) -> None:
    ids = [(await chat(store, f"m{i}")).message_id for i in range(3)]
    assert [m.content for m in await store.history(KEY, 10, before=ids[2])] == ["m0", "m1"]
    assert await store.history(KEY, 10, before=ids[0]) == []


async def test_history_never_leaks_other_conversations(store: SqlStore) -> None:
    keys = [
        KEY,
        ConversationKey(KEY.project_id, KEY.agent_name, "other-thread"),
        ConversationKey(KEY.project_id, "echo", KEY.thread_id),
        ConversationKey("p2", KEY.agent_name, KEY.thread_id),
    ]
    for key in keys:
        await chat(store, f"q {key}", key=key)
        await answer(store, f"a {key}", key=key)
        await store.add_report(key, f"report {key}", "task-1")
    for key in keys:
        assert await contents(store, key) == [f"q {key}", f"a {key}", f"report {key}"]
    # before= an id of another conversation does not pull its messages in
    [other_first, *_] = await store.history(keys[3], 10)
    assert all(
        str(keys[3]) not in m.content
        for m in await store.history(KEY, 10, before=other_first.id + 100)
    )


async def test_history_of_an_unknown_conversation_is_empty(store: SqlStore) -> None:
    await chat(store, "hi")
    assert await store.history(ConversationKey("nope", "nobody", "main"), 10) == []


async def test_names_are_matched_exactly(store: SqlStore) -> None:
    await chat(store, "lower", key=ConversationKey("p1", "echo", "main"))
    await chat(store, "upper", key=ConversationKey("p1", "Echo", "main"))
    await chat(store, "spaced", key=ConversationKey("p1", "echo ", "main"))
    assert await contents(store, ConversationKey("p1", "echo", "main")) == ["lower"]
    assert await contents(store, ConversationKey("p1", "Echo", "main")) == ["upper"]


async def test_images_and_steps_round_trip_as_json(store: SqlStore) -> None:
    images = [
        "data:image/png;base64,iVBORw0KGgo=",
        'https://example.com/고양이.png?size=large&x="q"',
    ]
    accepted = await chat(store, "look", images=images)
    steps = [
        {"name": "analyze", "state": "started", "content": "데이터 분석 중..."},
        {
            "name": "chart",
            "state": "finished",
            "content": "차트 생성 중...",
            "meta": {"n": [1, 2.5, None, True]},
        },
    ]
    await answer(store, "done", steps=steps)
    user, assistant = await store.history(KEY, 10)
    assert user.id == accepted.message_id
    assert user.images == images
    assert user.steps == []
    assert assistant.steps == steps
    assert assistant.images == []


@pytest.mark.parametrize(
    "text",
    [
        "안녕하세요, 집사입니다 🙂",
        "emoji 👩‍👩‍👧‍👦 and flags 🇰🇷",
        "mixed scripts: Ωμέγα ∑ 日本語 العربية עברית",
        "quotes ' \" ` and backslash \\ and % _ wildcards",
        "newlines\nand\ttabs\r\n",
        "\u2028\u2029 zero\u200bwidth",
        "x" * 100_000,
        "",
    ],
    ids=["korean", "emoji", "scripts", "quotes", "whitespace", "separators", "long", "empty"],
)
async def test_text_round_trips_exactly(store: SqlStore, text: str) -> None:
    await chat(store, text)
    await answer(store, text)
    await store.add_report(KEY, text, "task-x")
    assert await contents(store) == [text, text, text]


async def test_non_ascii_names_are_conversation_keys(store: SqlStore) -> None:
    key = ConversationKey("프로젝트", "집사", "스레드-1")
    await chat(store, "hi", key=key)
    assert await contents(store, key) == ["hi"]


async def test_created_at_is_timezone_aware_utc(store: SqlStore) -> None:
    started = datetime.now(UTC)
    await chat(store)
    await answer(store, "a")
    report = await store.add_report(KEY, "r", "task-1")
    for message in await store.history(KEY, 10):
        assert message.created_at.tzinfo is not None
        assert message.created_at.utcoffset() == timedelta(0)
        assert started - timedelta(seconds=5) <= message.created_at <= datetime.now(UTC)
    assert report.created_at.tzinfo is not None


async def test_history_records_have_the_wire_shape(store: SqlStore) -> None:
    await chat(store, "hi", images=["https://example.com/a.png"], request_id="r-wire")
    [record] = await store.history(KEY, 10)
    wire = record.to_wire()
    assert set(wire) == {
        "id",
        "role",
        "content",
        "images",
        "created_at",
        "request_id",
        "status",
        "steps",
    }
    assert datetime.fromisoformat(wire["created_at"]) == record.created_at
    assert (wire["request_id"], wire["images"]) == ("r-wire", ["https://example.com/a.png"])


async def test_an_answer_keeps_its_reasoning_usage_and_finish_reason_apart(store: SqlStore) -> None:
    await chat(store, "think first")
    message_id = await store.begin_answer(KEY, "r-thinks", "node-a")
    await store.save_answer(message_id, "Hel", "streaming", [], reasoning="Greeting")
    [_, streaming] = await store.history(KEY, 10)
    assert (streaming.content, streaming.reasoning, streaming.usage) == ("Hel", "Greeting", None)
    usage = {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12, "reasoning_tokens": 4}
    await store.save_answer(
        message_id,
        "Hello",
        "complete",
        [],
        reasoning="Greeting. Be brief.",
        usage=usage,
        finish_reason="length",
    )
    [question, answer] = await store.history(KEY, 10)
    assert (answer.content, answer.reasoning) == ("Hello", "Greeting. Be brief.")
    assert (answer.usage, answer.finish_reason) == (usage, "length")
    wire = answer.to_wire()
    assert (wire["reasoning"], wire["usage"], wire["finish_reason"]) == (
        "Greeting. Be brief.",
        usage,
        "length",
    )
    # Messages with none of these keep their shape.
    assert not {"reasoning", "usage", "finish_reason"} & set(question.to_wire())


# --- interrupted answers --------------------------------------------------------------------


async def test_fail_interrupted_marks_only_this_nodes_streaming_answers(store: SqlStore) -> None:
    other_key = ConversationKey("p2", "echo", "t")
    await chat(store, "question")
    mine_1 = await store.begin_answer(KEY, "r-1", "node-a")
    mine_2 = await store.begin_answer(other_key, "r-2", "node-a")
    mine_done = await answer(store, "finished", node="node-a")
    mine_cancelled = await answer(store, "stopped", node="node-a", status="cancelled")
    theirs = await store.begin_answer(KEY, "r-3", "node-b")
    await store.save_answer(mine_1, "half an answ", "streaming", [])

    assert await store.fail_interrupted("node-a") == 2

    statuses = {
        m.id: (m.status, m.content)
        for key in (KEY, other_key)
        for m in await store.history(key, 100)
    }
    assert statuses[mine_1] == ("failed", "half an answ")  # the text so far is kept
    assert statuses[mine_2] == ("failed", "")
    assert statuses[mine_done] == ("complete", "finished")
    assert statuses[mine_cancelled] == ("cancelled", "stopped")
    assert statuses[theirs] == ("streaming", "")
    assert [m.status for m in await store.history(KEY, 100) if m.role == "user"] == ["complete"]
    assert await store.fail_interrupted("node-a") == 0
    assert await store.fail_interrupted("node-unknown") == 0


async def test_fail_interrupted_of_every_node_for_one_node_alone(store: SqlStore) -> None:
    # A single node's id changes with each process: at start it fails whatever is left streaming.
    await chat(store, "question")
    earlier_process = await store.begin_answer(KEY, "r-1", "host-1-aaaa")
    another = await store.begin_answer(ConversationKey("p2", "echo", "t"), "r-2", "host-2-bbbb")
    done = await answer(store, "finished", node="host-1-aaaa")
    assert await store.fail_interrupted(None) == 2
    statuses = {m.id: m.status for m in await store.history(KEY, 100)}
    assert statuses[earlier_process] == "failed" and statuses[done] == "complete"
    assert [m.status for m in await store.history(ConversationKey("p2", "echo", "t"), 10)] == [
        "failed"
    ]
    assert another and await store.fail_interrupted(None) == 0


# --- delegated tasks and reports ------------------------------------------------------------


async def test_a_task_is_created_running_and_can_be_read_back(store: SqlStore) -> None:
    created = await store.create_task("task-1", "p1", "researcher", "요약해 줘", KEY)
    assert (created.status, created.result, created.finished_at) == ("running", None, None)
    loaded = await store.get_task("task-1")
    assert loaded is not None
    assert (loaded.id, loaded.project_id, loaded.agent_name, loaded.task) == (
        "task-1",
        "p1",
        "researcher",
        "요약해 줘",
    )
    assert loaded.status == "running"
    assert loaded.origin == KEY
    assert abs(loaded.created_at - created.created_at) < timedelta(seconds=1)
    assert loaded.created_at.tzinfo is not None


@pytest.mark.parametrize("status", ["complete", "failed"])
async def test_finishing_a_task_records_status_result_and_time(
    store: SqlStore, status: Any
) -> None:
    await store.create_task("task-1", "p1", "researcher", "work", KEY)
    finished = await store.finish_task("task-1", status, "결과 🙂")
    assert (finished.status, finished.result) == (status, "결과 🙂")
    assert finished.finished_at is not None and finished.finished_at.tzinfo is not None
    assert finished.finished_at >= finished.created_at
    assert await store.get_task("task-1") == finished


async def test_a_task_without_origin(store: SqlStore) -> None:
    await store.create_task("task-ext", "p1", "researcher", "work", None)
    loaded = await store.get_task("task-ext")
    assert loaded is not None and loaded.origin is None
    assert loaded.to_wire()["origin"] is None


async def test_tasks_are_independent(store: SqlStore) -> None:
    await store.create_task("task-1", "p1", "researcher", "one", KEY)
    await store.create_task("task-2", "p1", "researcher", "two", None)
    await store.finish_task("task-1", "complete", "done")
    task_2 = await store.get_task("task-2")
    assert task_2 is not None and task_2.status == "running"


async def test_an_unknown_task_is_none(store: SqlStore) -> None:
    assert await store.get_task("nope") is None


async def test_finishing_an_unknown_task_raises_key_error(store: SqlStore) -> None:
    with pytest.raises(KeyError):
        await store.finish_task("nope", "complete", "x")


async def test_a_report_appears_in_history_with_role_report(store: SqlStore) -> None:
    await chat(store, "please delegate")
    await answer(store, "delegated")
    report = await store.add_report(KEY, "researcher finished: 3 sources", "task-7")
    assert (report.role, report.status, report.request_id) == ("report", "complete", "task-7")
    history = await store.history(KEY, 10)
    assert [m.role for m in history] == ["user", "assistant", "report"]
    assert history[-1] == MessageRecord(
        id=report.id,
        role="report",
        content="researcher finished: 3 sources",
        images=[],
        status="complete",
        request_id="task-7",
        created_at=history[-1].created_at,
    )
    assert abs(history[-1].created_at - report.created_at) < timedelta(seconds=1)


# --- durability -----------------------------------------------------------------------------


async def test_data_survives_closing_and_reopening_the_store(open_store: StoreFactory) -> None:
    first = await open_store()
    await first.claim_client("tab-1", "alice")
    await chat(first, "질문", id="m-1", request_id="r-keep", images=["https://example.com/a.png"])
    message_id = await answer(
        first, "답변", steps=[{"name": "s", "state": "finished", "content": "c"}]
    )
    await first.add_report(KEY, "report", "task-1")
    await first.create_task("task-1", "p1", "researcher", "work", KEY)
    await first.finish_task("task-1", "complete", "ok")
    streaming = await first.begin_answer(KEY, "r-live", "node-a")
    before = await first.history(KEY, 100)
    task = await first.get_task("task-1")
    await first.close()

    second = await open_store()
    assert await second.history(KEY, 100) == before
    assert [m.id for m in before][1] == message_id
    assert await second.get_task("task-1") == task
    assert await second.claim_client("tab-1", "bob") == "alice"
    again = await chat(second, "질문", id="m-1")
    assert (again.duplicate, again.request_id) == (True, "r-keep")
    assert await second.fail_interrupted("node-a") == 1
    assert {m.id: m.status for m in await second.history(KEY, 100)}[streaming] == "failed"


async def test_ping_succeeds_on_a_started_store(store: SqlStore) -> None:
    await store.ping()


async def test_a_store_that_is_not_started_says_so(store_url: str) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await SqlStore(store_url).ping()


# --- failures roll back ---------------------------------------------------------------------
# A failure in the middle of a write (a lost connection, a cancelled task, a full disk) is
# injected through the clock the store reads once per inserted row.


class InjectedFailure(Exception):
    pass


@pytest.fixture
def fail_clock_read(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``fail_clock_read(n)``: the store's n-th read of the clock from now on raises."""
    import dari.stores.sql as sql_module

    real_now = sql_module._now

    def arm(n: int) -> None:
        calls = 0

        def now() -> datetime:
            nonlocal calls
            calls += 1
            if calls == n:
                monkeypatch.setattr(sql_module, "_now", real_now)
                raise InjectedFailure(f"clock read {n}")
            return real_now()

        monkeypatch.setattr(sql_module, "_now", now)

    return arm


async def test_a_chat_that_failed_leaves_no_idempotency_key_behind(
    store: SqlStore, engine: str, request: pytest.FixtureRequest, fail_clock_read: Any
) -> None:
    await chat(store, "earlier")  # the conversation exists
    fail_clock_read(2)  # 1: the idempotency key row, 2: the message row
    with pytest.raises(InjectedFailure):
        await chat(store, "lost", id="m-1", request_id="r-first")
    resent = await chat(store, "resent", id="m-1", request_id="r-second")
    assert (resent.duplicate, resent.request_id) == (False, "r-second")
    assert await contents(store) == ["earlier", "resent"]


async def test_a_conversation_whose_creation_was_rolled_back_is_created_again(
    store: SqlStore, engine: str, request: pytest.FixtureRequest, fail_clock_read: Any
) -> None:
    fresh = ConversationKey("p-rollback", "echo", "main")
    fail_clock_read(2)  # 1: the conversation row, 2: the message row
    with pytest.raises(InjectedFailure):
        await chat(store, "lost", key=fresh)
    await chat(store, "kept", key=fresh)
    await answer(store, "answer", key=fresh)
    assert await contents(store, fresh) == ["kept", "answer"]
