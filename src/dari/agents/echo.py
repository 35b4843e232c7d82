"""The ``echo`` backend: answers with exactly the user's text, one word at a time.

Options: ``delay_ms`` between pieces (default 0). Used by tests and benchmarks, where a known
answer makes byte-for-byte checks possible.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from dari.agents.base import AgentBackend, AgentContext, AgentEvent, AgentRequest
from dari.agents.text import split_words


class EchoBackend(AgentBackend):
    kind = "echo"

    async def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        delay = float(self.config.options.get("delay_ms", 0)) / 1000
        for piece in split_words(request.message):
            if delay:
                await asyncio.sleep(delay)
            yield piece
