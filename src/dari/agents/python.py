"""The ``python`` backend: any async generator function, named by ``entrypoint = "pkg.mod:func"``.

The function is called as ``func(request, ctx)`` with an :class:`AgentRequest` (message, images,
history, ids) and an :class:`AgentContext` (``step``, ``delegate``), and yields ``str`` pieces
or :class:`Step`, :class:`Reasoning`, :class:`Usage`, :class:`Finish` and :class:`ToolUpdate`
events (``dari.agents.base``); ``await ctx.interrupt({"question": ...})`` pauses the answer
until someone in the conversation answers, and returns their value::

    async def answer(request, ctx):
        await ctx.step("search", "찾는 중...")
        yield "Hello, "
        yield request.message
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from dari.agents.base import (
    AgentBackend,
    AgentContext,
    AgentEvent,
    AgentRequest,
    Finish,
    Reasoning,
    Step,
    ToolUpdate,
    Usage,
)

_EVENTS = (str, Step, Reasoning, Usage, Finish, ToolUpdate)


def load_entrypoint(spec: str) -> Any:
    """Import ``"pkg.module:attr"`` (attr may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"entrypoint must look like 'package.module:function', got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    return target


class PythonBackend(AgentBackend):
    kind = "python"
    takes_images = True

    async def start(self) -> None:
        spec = self.config.options.get("entrypoint")
        if not isinstance(spec, str):
            raise ValueError(
                f"agent {self.config.name!r}: backend 'python' needs options.entrypoint"
            )
        func = load_entrypoint(spec)
        if not inspect.isasyncgenfunction(func):
            raise ValueError(f"entrypoint {spec!r} must be an async generator function")
        self._func: Callable[[AgentRequest, AgentContext], AsyncIterator[Any]] = func

    async def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        async for event in self._func(request, ctx):
            if isinstance(event, _EVENTS):
                yield event
            elif event is not None:
                raise TypeError(
                    f"python agent yielded {type(event).__name__}, expected str, Step, "
                    "Reasoning, Usage, Finish or ToolUpdate"
                )
