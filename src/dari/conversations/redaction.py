"""Frames of deleted conversations, withheld from replay.

Deleting a conversation removes its history from the store, but frames already logged for its
clients (answers, reports, ``history`` and ``threads`` replies) may still be in their replay
logs. Each node keeps, for as long as a log may hold them (the replay window), what a deletion
removed: the request and task ids of its messages and its newest message id. A socket's writer
asks ``visible`` before it sends a logged frame: a frame of deleted history goes out as
``{"type": "redacted", "seq": n}``, like a frame the user may no longer see, and a ``threads``
listing loses the deleted conversation's item. Frames of the same thread written after the
deletion carry new request ids and message ids, and are sent as usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dari.auth.base import Principal
from dari.conversations.policy import ThreadPolicy
from dari.protocol.frames import ConversationKey, Frame


@dataclass(frozen=True, slots=True)
class Deletion:
    key: ConversationKey
    request_ids: frozenset[str]
    last_message_id: int | None
    expires_at: float


Names = tuple[str, str, str]
# Deletions remembered at most (the oldest go first): a bound on memory whatever the rate.
MAX_DELETIONS = 10_000


class Redactions:
    def __init__(
        self,
        policy: ThreadPolicy,
        keep_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.keep_s = keep_s
        self._clock = clock
        self._deletions: dict[Names, list[Deletion]] = {}
        self._next_expiry = float("inf")

    def __len__(self) -> int:
        return sum(len(found) for found in self._deletions.values())

    def add(
        self, key: ConversationKey, request_ids: frozenset[str], last_message_id: int | None
    ) -> None:
        if not request_ids and last_message_id is None:
            return  # nothing was deleted
        expires_at = self._clock() + self.keep_s
        names = (key.project_id, key.agent_name, key.thread_id)
        self._deletions.setdefault(names, []).append(
            Deletion(key, request_ids, last_message_id, expires_at)
        )
        self._next_expiry = min(self._next_expiry, expires_at)
        if len(self) > MAX_DELETIONS:
            oldest = min((d for found in self._deletions.values() for d in found), key=_expiry)
            self._expire(oldest.expires_at)  # drops it (and any as old)

    def _expire(self, now: float) -> None:
        kept: dict[Names, list[Deletion]] = {}
        for names, found in self._deletions.items():
            alive = [d for d in found if d.expires_at > now]
            if alive:
                kept[names] = alive
        self._deletions = kept
        self._next_expiry = min(
            (d.expires_at for found in kept.values() for d in found), default=float("inf")
        )

    def visible(self, principal: Principal, frame: Frame) -> Frame | None:
        """``frame`` as it may reach a client of ``principal``: unchanged (the usual case),
        without the listing items of deleted conversations (a ``threads`` frame), or None when
        it belongs to deleted history (sent as ``redacted``)."""
        if not self._deletions:
            return frame  # the usual case: one dict check per frame
        now = self._clock()
        if now >= self._next_expiry:
            self._expire(now)
            if not self._deletions:
                return frame
        if frame.get("type") == "threads":
            return self._listing(principal, frame)
        # A report names the agent that did the work; its conversation is origin_agent's.
        agent = frame.get("origin_agent", frame.get("agent_name"))
        found = self._deletions_of(
            principal, frame.get("project_id"), agent, frame.get("thread_id")
        )
        request_id = frame.get("request_id", frame.get("task_id"))
        for deletion in found:
            if isinstance(request_id, str) and request_id in deletion.request_ids:
                return None
            if frame.get("type") == "history" and _lists_deleted(frame, deletion):
                return None
        return frame

    def _deletions_of(
        self, principal: Principal, project: object, agent: object, thread: object
    ) -> list[Deletion]:
        """Deletions of the conversation the principal means by these names."""
        if not (isinstance(project, str) and isinstance(agent, str) and isinstance(thread, str)):
            return []
        found = self._deletions.get((project, agent, thread))
        if not found:
            return []
        key = self.policy.key(principal.user_id, project, agent, thread)
        # Another user's conversation under the same names is not this one.
        return [deletion for deletion in found if deletion.key == key]

    def _listing(self, principal: Principal, frame: Frame) -> Frame:
        items = frame.get("items")
        if not isinstance(items, list):
            return frame
        kept = [item for item in items if not self._listed_deleted(principal, item)]
        return frame if len(kept) == len(items) else {**frame, "items": kept}

    def _listed_deleted(self, principal: Principal, item: object) -> bool:
        if not isinstance(item, dict):
            return False
        newest = item.get("message_id")
        for deletion in self._deletions_of(
            principal, item.get("project_id"), item.get("agent_name"), item.get("thread_id")
        ):
            last = deletion.last_message_id
            if last is not None and isinstance(newest, int) and newest <= last:
                return True
        return False


def _expiry(deletion: Deletion) -> float:
    return deletion.expires_at


def _lists_deleted(frame: Frame, deletion: Deletion) -> bool:
    last = deletion.last_message_id
    if last is None:
        return False
    messages = frame.get("messages")
    if not isinstance(messages, list):
        return False
    return any(
        isinstance(m, dict) and isinstance(m.get("id"), int) and m["id"] <= last for m in messages
    )
