"""What the runner queues (a job) and what it knows of an answer in progress."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from dari.agents.base import Usage
from dari.auth.base import Principal
from dari.protocol.frames import ConversationKey
from dari.runner.intake import Intake

# stop, length and content_filter come from the model (length: it hit its token limit;
# content_filter: the provider withheld the rest); cancelled and error from the gateway.
FinishReason = Literal["stop", "length", "content_filter", "cancelled", "error"]

# What a draining node (SIGTERM) says of a chat it refuses, and of one it accepted but that
# will not get its turn (``shutting_down`` errors).
DRAIN_REFUSED = "the gateway is shutting down; reconnect and send it again"
DRAIN_UNANSWERED = "the gateway is shutting down before this chat's turn: it was not answered"


@dataclass(frozen=True, slots=True)
class Outcome:
    finish_reason: FinishReason
    text: str
    error: str | None = None
    usage: Usage | None = None


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
    # Why the gateway (not a user) cancelled it: sent as a `shutting_down` error before `end`.
    stop_reason: str | None = None
    task: asyncio.Task[Outcome] | None = None
    # Whose rights the answer runs with (what it may delegate to); None: unknown, so none.
    principal: Principal | None = None
    # The user's fair-use ticket (runner/quota.py), given back when the chat ends; None: the
    # chat is not counted (auth.mode = "none").
    ticket: str | None = None
    # The chat is still being taken in (runner/intake.py) until its answer reaches the agent.
    intake: Intake | None = None


@dataclass(eq=False, slots=True)
class Progress:
    """The text, steps, reasoning, tool calls and questions of an answer so far: what a
    ``snapshot`` frame carries; and what the model said of how it ended and what it cost."""

    request_id: str
    key: ConversationKey
    pieces: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    # Pieces (text and reasoning) already checkpointed to the store: a count, not characters,
    # so that a checkpoint of a long answer does not walk its pieces to see if it changed
    # (pieces are never empty and only added; one taken back ends the answer).
    saved_pieces: int = 0
    reasoning: list[str] = field(default_factory=list)
    usage: Usage | None = None  # summed over the model calls of the answer
    finish: FinishReason = "stop"  # as the model said; the gateway's own reasons override it
    # The latest state of each tool call (``tool`` frame fields, without ``arguments_delta``)
    # and of each question asked (``interrupt`` frame fields), in the order they began.
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupts: dict[str, dict[str, Any]] = field(default_factory=dict)
    revision: int = 0  # bumped by each tool or question update: the checkpoint saves it
    saved_revision: int = 0
    # Set by the first piece of text or reasoning: the first checkpoint saves it at once, so a
    # crash never leaves an empty row for text people saw.
    first_said: asyncio.Event = field(default_factory=asyncio.Event)

    def text(self) -> str:
        return "".join(self.pieces)

    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    def tool_list(self) -> list[dict[str, Any]]:
        return list(self.tools.values())

    def interrupt_list(self) -> list[dict[str, Any]]:
        return list(self.interrupts.values())
