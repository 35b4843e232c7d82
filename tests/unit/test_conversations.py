"""Which conversation a user's names mean, who may use it, titles, and what a deletion withholds
from replay: the pure parts of dari.conversations (no server, no store)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dari.auth.base import Principal
from dari.conversations import redaction
from dari.conversations.policy import ThreadPolicy
from dari.conversations.redaction import Redactions
from dari.conversations.service import title_of
from dari.protocol.frames import ConversationKey
from dari.stores.threads import ConversationRecord, Ownership

POLICY = ThreadPolicy(single_user=False, declared=frozenset({("p1", "room"), ("p2", "main")}))
ALICE, BOB = Principal("alice"), Principal("bob")


def test_the_default_thread_is_per_user_unless_declared_shared() -> None:
    assert POLICY.key("alice", "p1", "echo", "main") == ConversationKey(
        "p1", "echo", "main", "alice"
    )
    assert POLICY.key("alice", "p1", "echo", "main") != POLICY.key("bob", "p1", "echo", "main")
    assert POLICY.key("alice", "p2", "echo", "main").scope == ""  # p2 shares main
    assert POLICY.key("alice", "p1", "echo", "plan").scope == ""
    one_user = ThreadPolicy(single_user=True, declared=frozenset())
    assert one_user.key("anonymous", "p1", "echo", "main").scope == ""


@pytest.mark.parametrize(
    ("thread", "user", "ownership", "allowed"),
    [
        ("plan", "alice", None, True),  # nobody has used it
        ("plan", "alice", Ownership("alice", False), True),
        ("plan", "bob", Ownership("alice", False), False),
        ("plan", "bob", Ownership("alice", True), True),  # shared by its owner
        ("plan", "bob", Ownership(None, True), True),  # from before owners were recorded
        ("room", "bob", Ownership("alice", False), True),  # declared shared
    ],
)
def test_who_may_use_a_thread(
    thread: str, user: str, ownership: Ownership | None, allowed: bool
) -> None:
    key = POLICY.key(user, "p1", "echo", thread)
    assert POLICY.may_use(key, user, ownership) is allowed


def test_a_per_user_key_is_only_its_users() -> None:
    alices = ConversationKey("p1", "echo", "main", "alice")
    assert POLICY.may_use(alices, "alice", None)
    assert not POLICY.may_use(alices, "bob", Ownership("alice", True))
    assert not POLICY.needs_owner(alices) and POLICY.needs_owner(POLICY.key("a", "p1", "e", "x"))


def record(first_words: str | None, title: str | None = None) -> ConversationRecord:
    return ConversationRecord(
        key=ConversationKey("p1", "echo", "t-1"),
        owner="alice",
        shared=False,
        title=title,
        first_words=first_words,
        updated_at=datetime.now(UTC),
        last_message_id=1,
        unread=0,
    )


def test_titles_are_the_first_words_cut_between_words() -> None:
    assert title_of(record("  short\nquestion ")) == "short question"
    long = "word " * 30
    title = title_of(record(long))
    assert title.endswith("…") and len(title) <= 61 and " wor…" not in title
    assert title_of(record("x" * 100)) == "x" * 60 + "…"  # one long word is cut anyway
    assert title_of(record(long, title="Renamed")) == "Renamed"
    assert title_of(record(None)) == "t-1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answer(thread: str, request_id: str, **extra: Any) -> dict[str, Any]:
    fields = {"project_id": "p1", "agent_name": "echo", "thread_id": thread}
    return {"type": "response", "seq": 5, "request_id": request_id, **fields, **extra}


def test_a_deletion_withholds_its_frames_and_nothing_else() -> None:
    clock = Clock()
    redactions = Redactions(POLICY, keep_s=600, clock=clock)
    frame = answer("plan", "r-1", content="secret")
    assert redactions.visible(ALICE, frame) is frame  # nothing deleted yet
    redactions.add(ConversationKey("p1", "echo", "plan"), frozenset({"r-1", "t-1"}), 7)
    assert redactions.visible(ALICE, frame) is None
    assert redactions.visible(ALICE, answer("plan", "r-2")) is not None  # written after
    report = {
        "type": "auto_report",
        "task_id": "t-1",
        "project_id": "p1",
        "agent_name": "worker",
        "origin_agent": "echo",
        "thread_id": "plan",
    }
    assert redactions.visible(ALICE, report) is None
    old_history = {**answer("plan", "x"), "type": "history", "messages": [{"id": 7}]}
    new_history = {**old_history, "messages": [{"id": 8}]}
    assert redactions.visible(ALICE, old_history) is None
    assert redactions.visible(ALICE, new_history) is new_history
    listing = {
        "type": "threads",
        "seq": 9,
        "items": [
            {"project_id": "p1", "agent_name": "echo", "thread_id": "plan", "message_id": 7},
            {"project_id": "p1", "agent_name": "echo", "thread_id": "other", "message_id": 6},
        ],
    }
    shown = redactions.visible(ALICE, listing)
    assert shown is not None and [i["thread_id"] for i in shown["items"]] == ["other"]
    # After the replay window the markers go: the logs no longer hold such frames.
    clock.now = 601
    assert redactions.visible(ALICE, frame) is frame and len(redactions) == 0


def test_deleting_one_users_main_leaves_anothers_alone() -> None:
    redactions = Redactions(POLICY, keep_s=600)
    redactions.add(ConversationKey("p1", "echo", "main", "alice"), frozenset({"same"}), 3)
    frame = answer("main", "same")
    assert redactions.visible(ALICE, frame) is None
    assert redactions.visible(BOB, frame) is frame


def test_deletions_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "MAX_DELETIONS", 3)
    clock = Clock()
    redactions = Redactions(POLICY, keep_s=600, clock=clock)
    for n in range(5):
        clock.now = n
        redactions.add(ConversationKey("p1", "echo", f"t{n}"), frozenset({f"r{n}"}), n + 1)
    assert len(redactions) == 3
    assert redactions.visible(ALICE, answer("t0", "r0")) is not None  # the oldest went
    assert redactions.visible(ALICE, answer("t4", "r4")) is None
