"""The ``echo`` backend: answers with exactly the user's text, one word at a time.

Options: ``delay_ms`` before each piece (default 0), on an absolute schedule (piece n is due at
start + n × delay), so pacing does not drift under load. Used by tests and benchmarks, where a
known answer makes byte-for-byte checks possible.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import BaseModel, ConfigDict, Field

from dari.agents.base import AgentBackend, AgentContext, AgentEvent, AgentRequest
from dari.agents.text import iter_words
from dari.settings import AgentConfig, Settings


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option must not be ignored

    delay_ms: float = Field(default=0, ge=0)


class EchoBackend(AgentBackend):
    kind = "echo"
    uses_history = False

    def __init__(self, config: AgentConfig, settings: Settings) -> None:
        super().__init__(config, settings)
        self.options = self.parse_options(EchoOptions)

    async def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        delay = self.options.delay_ms / 1000
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, piece in enumerate(iter_words(request.message)):
            if delay:
                await asyncio.sleep(max(0.0, start + (index + 1) * delay - loop.time()))
            yield piece
