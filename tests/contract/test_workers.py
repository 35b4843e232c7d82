"""The store's workers: operations batched into one transaction still succeed or fail alone."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from dari.stores.sql import SqlStore
from dari.stores.workers import Worker, make_worker
from tests.contract.test_store import KEY, chat, contents


@pytest.fixture
async def worker(store: SqlStore, store_url: str) -> Worker:
    # The store has migrated the database; a second worker on it runs raw operations.
    worker = make_worker(make_url(store_url))
    await worker.start()
    yield worker  # type: ignore[misc]
    await worker.close()


def _insert_conversation(thread: str) -> object:
    def insert(conn: Connection) -> int:
        conn.execute(
            text(
                "INSERT INTO conversations (project_id, agent_name, thread_id, created_at) "
                "VALUES ('p', 'a', :thread, CURRENT_TIMESTAMP)"
            ),
            {"thread": thread},
        )
        return 1

    return insert


def _fail(conn: Connection) -> int:
    conn.execute(text("SELECT 1"))
    raise ValueError("this operation fails")


async def test_one_failing_operation_in_a_batch_fails_alone(worker: Worker) -> None:
    # Submitted together in one order, these land in one batch; the failure must not roll back
    # the others.
    operations = [_insert_conversation(f"t{n}") for n in range(20)]
    operations.insert(7, _fail)
    results = await asyncio.gather(
        *(worker.run(op, "one order") for op in operations),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert isinstance(results[7], ValueError)
    assert [r for n, r in enumerate(results) if n != 7] == [1] * 20
    count = await worker.run(
        lambda conn: conn.execute(text("SELECT count(*) FROM conversations")).scalar_one()
    )
    assert count == 20


async def test_a_constraint_violation_fails_only_its_operation(worker: Worker) -> None:
    operations = [_insert_conversation("same"), _insert_conversation("other")]
    operations.append(_insert_conversation("same"))  # unique (project, agent, thread)
    results = await asyncio.gather(
        *(worker.run(op, "one order") for op in operations),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert results[:2] == [1, 1]
    assert isinstance(results[2], Exception)
    threads = await worker.run(
        lambda conn: sorted(
            conn.execute(text("SELECT thread_id FROM conversations")).scalars().all()
        )
    )
    assert threads == ["other", "same"]


async def test_many_concurrent_chats_are_all_saved_in_order(store: SqlStore) -> None:
    # 300 chats at once: batches form; each chat is stored once, in submission order.
    accepted = await asyncio.gather(*(chat(store, f"m{n}", id=f"c{n}") for n in range(300)))
    assert [a.duplicate for a in accepted] == [False] * 300
    assert await contents(store, KEY) == [f"m{n}" for n in range(300)]
    resent = await asyncio.gather(*(chat(store, f"m{n}", id=f"c{n}") for n in range(300)))
    assert all(r.duplicate for r in resent)
    assert [r.request_id for r in resent] == [a.request_id for a in accepted]
    assert len(await contents(store, KEY)) == 300


async def test_a_caller_that_gives_up_does_not_stop_the_work(store: SqlStore) -> None:
    waiting = asyncio.create_task(chat(store, "kept", id="gave-up"))
    await asyncio.sleep(0)  # let it submit its operation
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The store stays usable, and the chat is saved exactly once: by the cancelled call (its
    # operation was already queued), the resend then being a duplicate, or by the resend.
    again = await chat(store, "kept", id="gave-up")
    assert await contents(store, KEY) == ["kept"]
    resent = await chat(store, "kept", id="gave-up")
    assert resent.duplicate and resent.request_id == again.request_id


async def test_one_conversations_operations_keep_their_order(store: SqlStore) -> None:
    # Answer rows are queued without waiting, then the next chat: on every engine (PostgreSQL
    # runs several loops) one conversation's writes land in the order they were made.
    rows = [store.begin_answer(KEY, f"a{n}", "node-a") for n in range(0, 40, 2)]
    chats = []
    for n in range(20):
        chats.append(asyncio.ensure_future(chat(store, f"q{n}", id=f"o{n}")))
        await asyncio.sleep(0)  # each chat queues its write before the next answer row does
        rows.append(store.begin_answer(KEY, f"b{n}", "node-a"))
    await asyncio.gather(*rows, *chats)
    history = await store.history(KEY, 100)
    ids = [m.id for m in history]
    assert ids == sorted(ids)
    order = [m.request_id if m.role == "assistant" else m.content for m in history]
    expected = [f"a{n}" for n in range(0, 40, 2)]
    for n in range(20):
        expected += [f"q{n}", f"b{n}"]
    assert order == expected


async def test_a_full_queue_refuses_new_operations_and_serves_the_queued_ones(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from dari.protocol.errors import StoreUnavailable
    from dari.stores import workers

    monkeypatch.setattr(workers, "MAX_PENDING", 5)
    started, release = threading.Event(), threading.Event()

    def blocked(conn: Connection) -> int:
        started.set()
        if conn.dialect.name == "postgresql":
            # On the event loop (through the async driver): wait in the database, not the loop.
            while not release.is_set():
                conn.execute(text("SELECT pg_sleep(0.01)"))
        else:
            release.wait(10)  # holds the SQLite worker's thread busy
        return 0

    holding = worker.submit(blocked, "one order")
    assert await asyncio.to_thread(started.wait, 10)
    # The worker is busy with the blocking operation; five more wait in its queue.
    queued = [worker.submit(_insert_conversation(f"q{n}"), "one order") for n in range(5)]
    refused = worker.submit(_insert_conversation("over"), "one order")
    with pytest.raises(StoreUnavailable, match="overloaded"):
        await refused
    release.set()
    assert await holding == 0
    assert await asyncio.gather(*queued) == [1] * 5  # nothing queued was lost
