"""The :class:`AgentContext` a running answer gets: steps now, delegation in the background,
questions to the people in the conversation (interrupts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dari.agents.base import Step, StepState

if TYPE_CHECKING:
    from dari.runner.answer import AnswerRun


class RunContext:
    def __init__(self, run: AnswerRun) -> None:
        self._run = run

    async def step(self, name: str, content: str, state: StepState = "started") -> None:
        await self._run.emit_step(Step(name, content, state))

    async def delegate(self, agent_name: str, task: str) -> str:
        return await self._run.runner.delegate(self._run.job, agent_name, task)

    async def interrupt(self, payload: dict[str, Any]) -> Any:
        return await self._run.ask(payload)
