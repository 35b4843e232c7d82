"""The built-in offline agent: the out-of-the-box demo, with no network and no model.

It streams visibly (``delay_ms`` per word, default 35), answers in Korean when spoken to in
Korean, reports its work as steps, and understands two commands:

- ``/delegate <agent> <task>`` hands the task to another agent of the project; an
  ``auto_report`` arrives when it is done;
- ``/help`` lists what it can do.

With ``options.persona = "researcher"`` it plays a researcher who takes delegated tasks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dari.agents.base import AgentBackend, AgentContext, AgentEvent, AgentRequest, Step
from dari.agents.text import iter_words
from dari.protocol.errors import DariError
from dari.settings import AgentConfig, Settings

_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _korean(text: str) -> bool:
    return _HANGUL.search(text) is not None


class OfflineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option must not be ignored

    delay_ms: float = Field(default=35, ge=0)
    persona: Literal["assistant", "researcher"] = "assistant"


class OfflineBackend(AgentBackend):
    kind = "offline"
    takes_images = True

    def __init__(self, config: AgentConfig, settings: Settings) -> None:
        super().__init__(config, settings)
        self.options = self.parse_options(OfflineOptions)

    async def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        delay = self.options.delay_ms / 1000
        message = request.message.strip()
        ko = _korean(message) or not message
        if message.startswith("/delegate"):
            answer = await self._delegate(message, ctx, ko)
        elif message.startswith("/help"):
            answer = self._help(ko)
        elif self.options.persona == "researcher":
            yield Step("research", "자료 조사 중..." if ko else "Researching...", "started")
            await asyncio.sleep(delay * 10)
            yield Step("research", "자료 조사 완료" if ko else "Research done", "finished")
            answer = self._research(message, ko)
        else:
            yield Step("think", "생각 중..." if ko else "Thinking...", "started")
            await asyncio.sleep(delay * 4)
            yield Step("think", "정리 완료" if ko else "Ready", "finished")
            answer = self._chat(request, ko)
        for piece in iter_words(answer):
            if delay:
                await asyncio.sleep(delay)
            yield piece

    async def _delegate(self, message: str, ctx: AgentContext, ko: bool) -> str:
        parts = message.split(maxsplit=2)
        if len(parts) < 3:
            return (
                "사용법: /delegate <에이전트> <작업>" if ko else "Usage: /delegate <agent> <task>"
            )
        _, agent, task = parts
        ko = ko or _korean(task)
        await ctx.step(
            "delegate", f"{agent}에게 작업 위임 중..." if ko else f"Delegating to {agent}..."
        )
        try:
            task_id = await ctx.delegate(agent, task)
        except DariError as exc:
            await ctx.step("delegate", exc.message, "finished")
            return (
                f"{agent}에게 작업을 맡기지 못했습니다: {exc.message}"
                if ko
                else f"I could not hand this to {agent}: {exc.message}"
            )
        await ctx.step("delegate", "위임 완료" if ko else "Delegated", "finished")
        if ko:
            return (
                f'{agent}에게 "{task}" 작업을 맡겼습니다 (작업 {task_id}). '
                "끝나면 자동으로 보고드릴게요."
            )
        return (
            f'I handed "{task}" to {agent} (task {task_id}). You will get a report when it is done.'
        )

    @staticmethod
    def _help(ko: bool) -> str:
        if ko:
            return (
                "저는 네트워크 없이 동작하는 오프라인 에이전트입니다. "
                "메시지를 보내면 답을 한 단어씩 스트리밍합니다. "
                "`/delegate researcher <작업>` 으로 다른 에이전트에게 일을 맡길 수 있고, "
                "작업이 끝나면 자동 보고가 옵니다."
            )
        return (
            "I am an offline agent that needs no network. "
            "I stream my answers word by word. "
            "Use `/delegate researcher <task>` to hand work to another agent; "
            "an automatic report arrives when it is done."
        )

    def _chat(self, request: AgentRequest, ko: bool) -> str:
        turns = sum(1 for item in request.history if item.role == "user") + 1
        images = len(request.images)
        if ko:
            seen = f" 이미지 {images}장도 잘 받았습니다." if images else ""
            return (
                f"안녕하세요! 저는 {self.config.name}입니다. "
                f'"{request.message.strip()}" 라고 하셨네요.{seen} '
                f"이 대화에서 {turns}번째 메시지입니다. "
                "저는 오프라인 데모 에이전트라서 실제 모델 대신 이렇게 답합니다. "
                "`/help` 를 입력하면 할 수 있는 일을 알려드려요."
            )
        seen = f" I also received {images} image(s)." if images else ""
        return (
            f"Hello! I am {self.config.name}. "
            f'You said: "{request.message.strip()}".{seen} '
            f"This is message {turns} of our conversation. "
            "I am an offline demo agent, so I answer like this instead of a real model. "
            "Type `/help` to see what I can do."
        )

    @staticmethod
    def _research(task: str, ko: bool) -> str:
        if ko:
            return f'"{task}" 에 대한 조사를 마쳤습니다. 요약: 핵심 사항 세 가지를 정리했습니다.'
        return f'Finished researching "{task}". Summary: three key points are written up.'
