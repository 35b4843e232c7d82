"""The ``echo`` backend: answers with exactly the user's text, one word at a time.

Options: ``delay_ms`` before each piece (default 0), on an absolute schedule (piece n is due at
start + n × delay), so pacing does not drift under load. Used by tests and benchmarks, where a
known answer makes byte-for-byte checks possible.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from dari.agents.base import AgentBackend, AgentContext, AgentEvent, AgentRequest
from dari.agents.text import split_words


class EchoBackend(AgentBackend):
    kind = "echo"
    uses_history = False

    async def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        delay = float(self.config.options.get("delay_ms", 0)) / 1000
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, piece in enumerate(split_words(request.message)):
            if delay:
                await asyncio.sleep(max(0.0, start + (index + 1) * delay - loop.time()))
            yield piece
