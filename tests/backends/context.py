"""A small real :class:`AgentContext` for calling backends directly, plus request helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from dari.agents.base import AgentEvent, AgentRequest, HistoryMessage, Step, StepState, ToolUpdate
from dari.protocol.errors import DariError


class RecordingContext:
    """Records steps, delegations and questions; ``delegate`` answers ``t-1``, ``t-2``... or
    raises; ``interrupt`` answers with ``answers`` in turn."""

    def __init__(self, refuse: DariError | None = None, answers: list[Any] | None = None) -> None:
        self.refuse = refuse
        self.steps: list[Step] = []
        self.delegations: list[tuple[str, str]] = []
        self.answers = list(answers or [])
        self.questions: list[dict[str, Any]] = []

    async def step(self, name: str, content: str, state: StepState = "started") -> None:
        self.steps.append(Step(name, content, state))

    async def delegate(self, agent_name: str, task: str) -> str:
        self.delegations.append((agent_name, task))
        if self.refuse is not None:
            raise self.refuse
        return f"t-{len(self.delegations)}"

    async def interrupt(self, payload: dict[str, Any]) -> Any:
        self.questions.append(payload)
        return self.answers.pop(0)


def make_request(
    message: str = "hi",
    *,
    images: list[str] | None = None,
    history: list[HistoryMessage] | None = None,
    thread_id: str = "main",
) -> AgentRequest:
    return AgentRequest(
        message=message,
        images=images or [],
        history=history or [],
        project_id="p1",
        agent_name="assistant",
        thread_id=thread_id,
        request_id="r-1",
        user_id="u-1",
    )


async def collect(
    events: AsyncIterator[AgentEvent], into: list[AgentEvent] | None = None
) -> list[AgentEvent]:
    """Every event of a stream; with ``into``, events land there as they come (for failures)."""
    seen: list[AgentEvent] = [] if into is None else into
    async for event in events:
        seen.append(event)
    return seen


def without_tools(events: list[AgentEvent]) -> list[AgentEvent]:
    """The events but the tool updates (tests of what else a backend yields)."""
    return [event for event in events if not isinstance(event, ToolUpdate)]


def tool_updates(events: list[AgentEvent]) -> list[ToolUpdate]:
    return [event for event in events if isinstance(event, ToolUpdate)]
