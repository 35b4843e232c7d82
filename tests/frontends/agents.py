"""Agents for the frontend tests, loaded through the ``python`` backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

from dari.agents.base import AgentContext, AgentEvent, AgentRequest, Finish, Reasoning, Step, Usage

THOUGHT = ("The user greets me. ", "Answer briefly.")
USAGE = Usage(prompt_tokens=11, completion_tokens=9, total_tokens=20, reasoning_tokens=4)


async def thinker(request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
    """Reasons, works in a step, answers with the user's words, and stops at its token limit."""
    for piece in THOUGHT:
        yield Reasoning(piece)
    yield Step("write", "쓰는 중...", "started")
    yield request.message
    yield Step("write", "다 씀", "finished")
    yield USAGE
    yield Finish("length")
