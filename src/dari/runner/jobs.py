"""What the runner queues (a job) and what it knows of an answer in progress."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from dari.protocol.frames import ConversationKey

FinishReason = Literal["stop", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class Outcome:
    finish_reason: FinishReason
    text: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DelegatedTask:
    """What a job done for another conversation reports to: the agent that did the work and
    the conversation that asked for it (its report lands there)."""

    agent_name: str
    origin: ConversationKey


@dataclass(eq=False, slots=True)
class Job:
    request_id: str
    key: ConversationKey
    message: str
    images: list[str]
    user_id: str
    # A delegated task: reported to its origin once the answer has ended and been saved.
    delegated: DelegatedTask | None = None
    cancelled: bool = False
    task: asyncio.Task[Outcome] | None = None


@dataclass(eq=False, slots=True)
class Progress:
    """The text and steps of an answer so far: what a ``snapshot`` frame carries."""

    request_id: str
    key: ConversationKey
    pieces: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    saved_length: int = 0  # characters already checkpointed to the store

    def text(self) -> str:
        return "".join(self.pieces)
