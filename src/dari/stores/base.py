"""The store interface and its records.

One implementation (SQLAlchemy) serves both SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from dari.protocol.frames import ConversationKey
from dari.stores.threads import ThreadStore

Role = Literal["user", "assistant", "report"]
# ``interrupted``: the answer is paused on a question (``interrupt``) until someone answers.
Status = Literal["complete", "streaming", "interrupted", "cancelled", "failed"]
TaskStatus = Literal["running", "complete", "failed"]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    role: Role
    content: str
    images: list[str]
    status: Status
    request_id: str | None
    created_at: datetime
    steps: list[dict[str, Any]] = field(default_factory=list)
    author: str | None = None  # reports: the agent that did the work
    # Answers: the model's reasoning (never part of content), its usage, how it ended.
    reasoning: str = ""
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    # Answers: the latest state of each tool call and of each question asked (revision 0005).
    tools: list[dict[str, Any]] = field(default_factory=list)
    interrupts: list[dict[str, Any]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "images": self.images,
            "created_at": self.created_at.isoformat(),
            "request_id": self.request_id,
            "status": self.status,
            "steps": self.steps,
        }
        if self.role == "report":
            # The same fields as the live auto_report frame, so a reload shows the same thing.
            wire["task_id"] = self.request_id
            wire["agent_name"] = self.author
        # Only where there is something to say, so other messages keep their shape.
        if self.finish_reason is not None:
            wire["finish_reason"] = self.finish_reason
        if self.usage is not None:
            wire["usage"] = self.usage
        if self.reasoning:
            wire["reasoning"] = self.reasoning
        if self.tools:
            wire["tools"] = self.tools
        if self.interrupts:
            wire["interrupts"] = self.interrupts
        return wire


@dataclass(frozen=True, slots=True)
class AcceptedChat:
    request_id: str
    duplicate: bool
    message_id: int | None  # the stored user message; None for a duplicate


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    project_id: str
    agent_name: str
    task: str
    status: TaskStatus
    result: str | None
    origin: ConversationKey | None
    created_at: datetime
    finished_at: datetime | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "agent_name": self.agent_name,
            "task": self.task,
            "status": self.status,
            "result": self.result,
            "origin": self.origin.fields() if self.origin else None,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class Store(ABC):
    # Owners, sharing, titles, read markers and listing of conversations (stores/threads.py).
    threads: ThreadStore

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the store cannot be reached."""

    @abstractmethod
    async def claim_client(self, client_id: str, user_id: str) -> str:
        """Record ``user_id`` as owner of ``client_id`` if it has none; return the owner."""

    @abstractmethod
    async def accept_chat(
        self,
        *,
        user_id: str,
        client_message_id: str | None,
        request_id: str,
        key: ConversationKey,
        message: str,
        images: list[str],
    ) -> AcceptedChat:
        """Save the user's message, once per (user, client message id)."""

    @abstractmethod
    async def answered(self, key: ConversationKey, request_id: str) -> bool:
        """Whether chat ``request_id`` of ``key`` has an answer row (it started at least)."""

    @abstractmethod
    async def find_request(self, user_id: str, client_message_id: str) -> str | None:
        """The request id of ``user_id``'s chat ``client_message_id`` if it was accepted."""

    @abstractmethod
    def begin_answer(
        self, key: ConversationKey, request_id: str, node_id: str
    ) -> asyncio.Future[int]:
        """Add the answer's row (status ``streaming``); resolves to its id.

        The row's place in the conversation is fixed when this is called, not when awaited,
        so an answer can start streaming while its row is being written. The future may be awaited
        more than once."""

    @abstractmethod
    async def save_answer(
        self,
        message_id: int,
        content: str,
        status: Status,
        steps: list[dict[str, Any]],
        *,
        reasoning: str = "",
        usage: dict[str, int] | None = None,
        finish_reason: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        interrupts: list[dict[str, Any]] | None = None,
    ) -> None:
        """Save the answer so far (status ``streaming`` or ``interrupted``) or for good.
        ``usage`` and ``finish_reason`` are given when it ends; ``tools`` and ``interrupts``
        (None: none) are its tool calls and questions."""

    @abstractmethod
    async def add_report(
        self, key: ConversationKey, content: str, task_id: str, author: str | None = None
    ) -> MessageRecord: ...

    @abstractmethod
    async def history(
        self, key: ConversationKey, limit: int, before: int | None = None
    ) -> list[MessageRecord]:
        """The last ``limit`` messages (older than id ``before``), oldest first."""

    @abstractmethod
    async def fail_interrupted(self, node_id: str | None) -> int:
        """Mark answers this node left ``streaming`` or ``interrupted`` (it stopped
        mid-answer) as ``failed``.

        ``None``: every node's (one node alone on its store, whose id changes per process).
        """

    @abstractmethod
    async def create_task(
        self,
        task_id: str,
        project_id: str,
        agent_name: str,
        task: str,
        origin: ConversationKey | None,
    ) -> TaskRecord: ...

    @abstractmethod
    async def finish_task(self, task_id: str, status: TaskStatus, result: str) -> TaskRecord: ...

    @abstractmethod
    async def get_task(self, task_id: str) -> TaskRecord | None: ...

    @abstractmethod
    async def running_tasks(self) -> list[TaskRecord]:
        """Tasks whose status is still ``running``, oldest first."""


def open_store(url: str) -> Store:
    from dari.stores.sql import SqlStore

    return SqlStore(url)
