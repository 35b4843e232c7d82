"""Agents for tests, loaded through the ``python`` backend (``tests.support.agents:...``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from dari.agents.base import AgentContext, AgentRequest, Step


async def firehose(request: AgentRequest, ctx: AgentContext) -> AsyncIterator[str]:
    """``"<count> <size>"`` → ``count`` pieces of ``size`` characters, as fast as possible."""
    count, size = (int(part) for part in request.message.split())
    for index in range(count):
        yield f"{index % 10}" * size


async def step_storm(request: AgentRequest, ctx: AgentContext) -> AsyncIterator[str | Step]:
    """``"<count>"`` → ``count`` steps: frames the replay log cannot merge, as fast as possible."""
    for index in range(int(request.message)):
        yield Step("work", f"step {index}", "started")
        if index % 64 == 0:
            await asyncio.sleep(0)
    yield "done"


async def stepper(request: AgentRequest, ctx: AgentContext) -> AsyncIterator[str | Step]:
    """Reports steps both ways (yielded and through the context), then echoes the message."""
    yield Step("analyse", "데이터 분석 중...", "started")
    await asyncio.sleep(0)
    yield Step("analyse", "데이터 분석 완료", "finished")
    await ctx.step("chart", "차트 생성 중...")
    yield request.message
    await ctx.step("chart", "차트 생성 완료", "finished")


async def failing(request: AgentRequest, ctx: AgentContext) -> AsyncIterator[str]:
    """Yields a little, then raises, as a broken model would."""
    yield "partial "
    yield "answer"
    raise RuntimeError("model crashed")


async def delegator(request: AgentRequest, ctx: AgentContext) -> AsyncIterator[str]:
    """``"<agent> <task>"`` → delegates the task and says so."""
    agent, task = request.message.split(maxsplit=1)
    task_id = await ctx.delegate(agent, task)
    yield f"delegated {task_id}"


async def nul_writer(request: AgentRequest, ctx: AgentContext) -> AsyncIterator[str]:
    """Yields text with U+0000, which PostgreSQL text cannot hold."""
    yield "before\x00"
    yield "after"


_GATES: dict[str, asyncio.Event] = {}


def gate(name: str) -> asyncio.Event:
    """The gate a ``gated`` answer to the message ``name`` waits at (in-process servers)."""
    return _GATES.setdefault(name, asyncio.Event())


async def gated(request: AgentRequest, ctx: AgentContext) -> AsyncIterator[str]:
    """Says ``"<message> "``, then waits until the test opens ``gate(message)``: an answer
    that runs exactly as long as the test wants."""
    yield f"{request.message} "
    try:
        await gate(request.message).wait()
    finally:
        _GATES.pop(request.message, None)
    yield "done"


async def asking(request: AgentRequest, ctx: AgentContext) -> AsyncIterator[str]:
    """A Python agent that asks before it answers."""
    yield "Let me check. "
    value = await ctx.interrupt({"question": "Which colour?", "schema": {"type": "string"}})
    yield f"You picked {value}."
