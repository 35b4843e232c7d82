"""Agents that the dari server under test loads (``backend = "python"``) for some scenarios.

This module is imported inside the dari process (the harness puts ``bench/`` on its
``PYTHONPATH``); it must not import the rest of the harness.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from dari.agents.base import Step


async def steps(request: Any, ctx: Any) -> AsyncIterator[Step]:
    """``"<count> <wait_ms>"``: wait, then yield ``count`` steps numbered 0, 1, 2, ...

    Each step is its own frame (steps are never merged, unlike ``response`` pieces), so one chat
    puts an exact number of frames into the client's replay log.
    """
    count, _, wait = request.message.partition(" ")
    await asyncio.sleep(float(wait or 0) / 1000)
    for index in range(int(count)):
        yield Step("n", str(index))
        if index % 64 == 63:
            await asyncio.sleep(0)  # let the rest of the server run
