"""The store's side of conversations owned by users (dari.stores.threads), on SQLite and
PostgreSQL alike: owners, per-user default threads, sharing, titles, deletion, read markers and
the listing."""

from __future__ import annotations

import asyncio

from dari.protocol.frames import ConversationKey
from dari.stores.sql import SqlStore
from dari.stores.threads import ConversationView, Ownership
from tests.contract.conftest import StoreFactory
from tests.contract.test_store import answer, chat, contents

TEAM = ConversationKey("p1", "echo", "team")
ALICE_MAIN = ConversationKey("p1", "echo", "main", "alice")
BOB_MAIN = ConversationKey("p1", "echo", "main", "bob")


def view(user: str, **fields: object) -> ConversationView:
    return ConversationView(user_id=user, **fields)  # type: ignore[arg-type]


async def listed(store: SqlStore, user: str, **fields: object) -> list[tuple[str, str, str]]:
    records = await store.threads.conversations(view(user, **fields), 100)
    return [(r.key.agent_name, r.key.thread_id, r.key.scope) for r in records]


async def test_the_first_chat_makes_its_user_the_owner(store: SqlStore) -> None:
    assert await store.threads.ownership(TEAM) is None
    await chat(store, "hi", user="alice", key=TEAM)
    assert await store.threads.ownership(TEAM) == Ownership("alice", False)
    # Bob writing later (the service refuses him first; the store does not move ownership).
    await chat(store, "me too", user="bob", key=TEAM)
    assert await store.threads.ownership(TEAM) == Ownership("alice", False)


async def test_a_claim_creates_an_owned_empty_conversation_once(store: SqlStore) -> None:
    assert await store.threads.claim(TEAM, "alice") == Ownership("alice", False)
    assert await store.threads.claim(TEAM, "bob") == Ownership("alice", False)
    assert await contents(store, TEAM) == []
    assert await listed(store, "alice") == []  # nothing written yet: not listed


async def test_concurrent_claims_from_several_nodes_agree_on_one_owner(
    open_store: StoreFactory,
) -> None:
    stores = [await open_store() for _ in range(4)]
    users = ["u0", "u1", "u2", "u3"]
    results = await asyncio.gather(
        *(s.threads.claim(TEAM, user) for s, user in zip(stores, users, strict=True))
    )
    assert len({result.owner for result in results}) == 1
    assert results[0].owner in users


async def test_two_users_default_threads_are_two_conversations(store: SqlStore) -> None:
    await chat(store, "alice's", user="alice", key=ALICE_MAIN)
    await chat(store, "bob's", user="bob", key=BOB_MAIN)
    assert await contents(store, ALICE_MAIN) == ["alice's"]
    assert await contents(store, BOB_MAIN) == ["bob's"]
    assert (await store.threads.ownership(ALICE_MAIN)) == Ownership("alice", False)
    assert await listed(store, "alice") == [("echo", "main", "alice")]
    assert await listed(store, "bob") == [("echo", "main", "bob")]


async def test_sharing_shows_a_thread_to_everyone_and_unsharing_hides_it(store: SqlStore) -> None:
    await chat(store, "plan", user="alice", key=TEAM)
    assert await listed(store, "bob") == []
    await store.threads.set_shared(TEAM, True)
    assert await store.threads.ownership(TEAM) == Ownership("alice", True)
    assert await listed(store, "bob") == [("echo", "team", "")]
    await store.threads.set_shared(TEAM, False)
    assert await listed(store, "bob") == []


async def test_threads_declared_shared_are_listed_for_everyone(store: SqlStore) -> None:
    await chat(store, "room", user="alice", key=TEAM)
    declared = frozenset({("p1", "team")})
    assert await listed(store, "bob", shared_threads=declared) == [("echo", "team", "")]
    assert await listed(store, "bob", shared_threads=frozenset({("p2", "team")})) == []


async def test_a_shared_default_thread_replaces_the_per_user_ones(store: SqlStore) -> None:
    shared_main = ConversationKey("p1", "echo", "main")
    await chat(store, "mine", user="alice", key=ALICE_MAIN)
    await chat(store, "ours", user="alice", key=shared_main)
    declared = frozenset({("p1", "main")})
    # Declared shared, "main" is one conversation; the per-user one is no longer reachable.
    assert await listed(store, "alice", shared_threads=declared) == [("echo", "main", "")]
    assert await listed(store, "bob", shared_threads=declared) == [("echo", "main", "")]
    # Not declared: each user has their own, and the unscoped one is reached by nobody.
    assert await listed(store, "alice") == [("echo", "main", "alice")]


async def test_one_local_user_sees_every_unscoped_conversation(store: SqlStore) -> None:
    await chat(store, "a", user="anonymous", key=ConversationKey("p1", "echo", "main"))
    await chat(store, "b", user="anonymous", key=TEAM)
    assert {t for _, t, _ in await listed(store, "anonymous", everything=True)} == {"main", "team"}


async def test_the_listing_is_newest_first_paginated_and_filtered(store: SqlStore) -> None:
    keys = [ConversationKey("p1" if i % 2 else "p2", "echo", f"t{i}") for i in range(5)]
    for key in keys:
        await chat(store, f"hello {key.thread_id}", user="alice", key=key)
    await chat(store, "again", user="alice", key=keys[0])  # t0 is now the newest
    everything = await store.threads.conversations(view("alice"), 10)
    assert [r.key.thread_id for r in everything] == ["t0", "t4", "t3", "t2", "t1"]
    first = await store.threads.conversations(view("alice"), 2)
    second = await store.threads.conversations(view("alice"), 2, first[-1].last_message_id)
    third = await store.threads.conversations(view("alice"), 2, second[-1].last_message_id)
    assert [r.key.thread_id for r in first + second + third] == ["t0", "t4", "t3", "t2", "t1"]
    assert [r.key.thread_id for r in third] == ["t1"]
    assert [t for _, t, _ in await listed(store, "alice", project_id="p1")] == ["t3", "t1"]
    assert await listed(store, "alice", agent_name="other") == []
    assert [t for _, t, _ in await listed(store, "alice", projects=frozenset({"p2"}))] == [
        "t0",
        "t4",
        "t2",
    ]


async def test_records_carry_first_words_title_time_and_owner(store: SqlStore) -> None:
    long = "word " * 100
    await chat(store, long, user="alice", key=TEAM)
    await answer(store, "reply", key=TEAM)
    (record,) = await store.threads.conversations(view("alice"), 10)
    assert record.first_words is not None and long.startswith(record.first_words)
    assert 60 <= len(record.first_words) < len(long)
    assert record.title is None and record.owner == "alice" and not record.shared
    assert record.updated_at.tzinfo is not None
    await store.threads.rename(TEAM, "Weekly plan")
    (renamed,) = await store.threads.conversations(view("alice"), 10)
    assert renamed.title == "Weekly plan"
    await store.threads.rename(TEAM, None)
    assert (await store.threads.conversations(view("alice"), 10))[0].title is None


async def test_unread_counts_what_others_added_since_the_marker(store: SqlStore) -> None:
    await chat(store, "question", user="alice", key=TEAM, request_id="ra")
    await store.begin_answer(TEAM, "ra", "node-a")  # the answer to her own chat
    assert (await store.threads.conversations(view("alice"), 10))[0].unread == 0
    await store.add_report(TEAM, "report", "t-1", "worker")
    await chat(store, "from bob", user="bob", key=TEAM, request_id="rb")
    await store.begin_answer(TEAM, "rb", "node-a")
    # The report, bob's chat and its answer.
    assert (await store.threads.conversations(view("alice"), 10))[0].unread == 3
    await store.threads.mark_read(TEAM, "alice")
    assert (await store.threads.conversations(view("alice"), 10))[0].unread == 0
    await store.add_report(TEAM, "another", "t-2", "worker")
    assert (await store.threads.conversations(view("alice"), 10))[0].unread == 1


async def test_deleting_removes_history_and_keeps_the_owner(store: SqlStore) -> None:
    await chat(store, "secret", user="alice", key=TEAM, request_id="r-a")
    last = await answer(store, "answer", key=TEAM)
    await store.add_report(TEAM, "report", "t-9", "worker")
    await store.threads.set_shared(TEAM, True)
    await store.threads.rename(TEAM, "named")
    await store.threads.mark_read(TEAM, "alice")
    await chat(store, "elsewhere", user="alice", key=ALICE_MAIN)
    deleted = await store.threads.delete_history(TEAM)
    assert "r-a" in deleted.request_ids and "t-9" in deleted.request_ids
    assert deleted.last_message_id is not None and deleted.last_message_id > last
    assert await contents(store, TEAM) == []
    assert await store.threads.ownership(TEAM) == Ownership("alice", False)
    assert await contents(store, ALICE_MAIN) == ["elsewhere"]
    assert await listed(store, "alice") == [("echo", "main", "alice")]
    # Written again, it starts afresh, still alice's.
    await chat(store, "new", user="alice", key=TEAM)
    (record, _) = await store.threads.conversations(view("alice"), 10)
    assert record.title is None and record.unread == 0 and record.first_words == "new"


async def test_deleting_an_unknown_conversation_removes_nothing(store: SqlStore) -> None:
    deleted = await store.threads.delete_history(TEAM)
    assert deleted.request_ids == frozenset() and deleted.last_message_id is None


async def test_client_owners_are_read_for_known_clients_only(open_store: StoreFactory) -> None:
    first = await open_store()
    await first.claim_client("c-a", "alice")
    await first.claim_client("c-b", "bob")
    other = await open_store()  # another node: nothing cached
    assert dict(await other.threads.client_owners(["c-a", "c-b", "c-x"])) == {
        "c-a": "alice",
        "c-b": "bob",
    }


async def test_a_task_remembers_the_scope_of_its_origin(store: SqlStore) -> None:
    await store.create_task("t-1", "p1", "worker", "do it", ALICE_MAIN)
    task = await store.get_task("t-1")
    assert task is not None and task.origin == ALICE_MAIN
