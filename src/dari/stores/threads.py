"""The store's side of conversations owned by users: who owns one, whether it is shared, its
title, what each user has read, deleting its history, and listing a user's conversations.

Messages and answers stay with ``Store``; this is the part the conversations service
(``dari.conversations``) asks. Owners are recorded when a conversation is created (by its first
chat, or by a ``claim``) and never change afterwards, so they may be cached; the shared flag
and the title change by request and are read from the database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from dari.protocol.frames import ConversationKey


@dataclass(frozen=True, slots=True)
class Ownership:
    owner: str | None  # None: made before owners were recorded (such conversations are shared)
    shared: bool


@dataclass(frozen=True, slots=True)
class DeletedHistory:
    """What a deletion removed: the request and task ids its messages carried, and the newest
    message id (frames logged for them before are redacted from replay)."""

    request_ids: frozenset[str]
    last_message_id: int | None


@dataclass(frozen=True, slots=True)
class ConversationView:
    """Which conversations a listing covers, as the caller may see them."""

    user_id: str
    # One local user (auth off): every conversation, and the default thread is not per user.
    everything: bool = False
    projects: frozenset[str] | None = None  # None: every project
    project_id: str | None = None
    agent_name: str | None = None
    # (project, thread) pairs the settings declare shared.
    shared_threads: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    key: ConversationKey
    owner: str | None
    shared: bool  # the stored flag (the settings may share it too)
    title: str | None  # a rename
    first_words: str | None  # the start of the first user message
    updated_at: datetime  # when its newest message was written
    last_message_id: int  # the listing's order and cursor
    unread: int


class ThreadStore(ABC):
    @abstractmethod
    def cached_owner(self, key: ConversationKey) -> str | None:
        """The owner of ``key`` if this node has read it already (owners never change), so a
        user's own conversations are checked without a query; None when not known here."""

    @abstractmethod
    async def ownership(self, key: ConversationKey) -> Ownership | None:
        """The conversation's owner and shared flag; None if it does not exist."""

    @abstractmethod
    async def claim(self, key: ConversationKey, user_id: str) -> Ownership:
        """Create the conversation owned by ``user_id`` unless it exists; its ownership."""

    @abstractmethod
    async def set_shared(self, key: ConversationKey, shared: bool) -> None: ...

    @abstractmethod
    async def rename(self, key: ConversationKey, title: str | None) -> None:
        """Set the title (None: back to the first words of the first user message)."""

    @abstractmethod
    async def delete_history(self, key: ConversationKey) -> DeletedHistory:
        """Delete every message of the conversation, its title, shared flag and read markers.
        The conversation itself (its owner) stays, so its name stays its owner's."""

    @abstractmethod
    async def mark_read(self, key: ConversationKey, user_id: str) -> None:
        """``user_id`` has seen the conversation up to its newest message."""

    @abstractmethod
    async def conversations(
        self, view: ConversationView, limit: int, before: int | None = None
    ) -> list[ConversationRecord]:
        """Up to ``limit`` conversations of ``view`` with at least one message, newest activity
        first, whose newest message id is below ``before``.

        ``unread`` counts the messages after the user's read marker that are neither the
        user's own chats nor answers to them."""

    @abstractmethod
    async def client_owners(self, client_ids: Collection[str]) -> Mapping[str, str]:
        """The user owning each of ``client_ids`` that has one (see ``Store.claim_client``)."""
