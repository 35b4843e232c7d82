"""A real AG-UI agent service on a loopback port: FastAPI and the ag-ui-protocol encoder.

It answers a run with the last user message's own words, between a step and inside a text
message; the message's first word picks a misbehaviour: ``fail`` (RUN_ERROR), ``drop`` (the
connection is cut after a few words), ``truncate`` (the stream ends without RUN_FINISHED),
``silent`` (nothing more after the first words), ``tool`` (a tool call before the text),
``reason`` (reasoning before the text, and token usage at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from ag_ui.core import (
    BaseEvent,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from dari.agents.text import split_words
from tests.support.waiting import eventually

DROP_AFTER = 3  # words sent before a "drop" run's connection is cut
THOUGHT = ["Let me ", "think. "]
USAGE = TokenUsage(input_tokens=5, output_tokens=7, total_tokens=12, reasoning_tokens=3)


class Dropped(Exception):
    """Raised inside the response body: the server cuts the connection mid-stream."""


class AgUiService:
    def __init__(self) -> None:
        self.inputs: list[RunAgentInput] = []
        self.headers: list[dict[str, str]] = []
        self.app = FastAPI()
        self.app.post("/agent")(self._run)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/agent"

    async def __aenter__(self) -> AgUiService:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="critical")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        server = self._server
        await eventually(lambda: server.started)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, 10)

    async def _run(self, run: RunAgentInput, request: Request) -> StreamingResponse:
        self.inputs.append(run)
        self.headers.append(dict(request.headers))
        encoder = EventEncoder(accept=request.headers.get("accept"))
        last = run.messages[-1]
        text = last.content if isinstance(last, UserMessage) and isinstance(last.content, str) else ""

        async def body() -> AsyncIterator[str]:
            for event in self._events(run, text):
                if isinstance(event, Exception):
                    raise event
                if event is None:
                    await asyncio.Event().wait()  # silent from here on
                yield encoder.encode(event)
                await asyncio.sleep(0)

        return StreamingResponse(body(), media_type=encoder.get_content_type())

    def _events(self, run: RunAgentInput, text: str) -> list[Any]:
        mode = text.split(" ", 1)[0]
        message_id = f"{run.run_id}-m"
        events: list[BaseEvent | Exception | None] = [
            RunStartedEvent(thread_id=run.thread_id, run_id=run.run_id)
        ]
        if mode == "fail":
            return [*events, RunErrorEvent(message="the model is down", code="model_down")]
        events.append(StepStartedEvent(step_name="think"))
        if mode == "tool":
            events += [
                ToolCallStartEvent(tool_call_id="c1", tool_call_name="search"),
                ToolCallArgsEvent(tool_call_id="c1", delta='{"q": 1}'),
                ToolCallEndEvent(tool_call_id="c1"),
            ]
        if mode == "reason":
            thought = f"{run.run_id}-r"
            events += [
                ReasoningStartEvent(message_id=thought),
                ReasoningMessageStartEvent(message_id=thought),
                *(ReasoningMessageContentEvent(message_id=thought, delta=d) for d in THOUGHT),
                ReasoningMessageEndEvent(message_id=thought),
                ReasoningEndEvent(message_id=thought),
            ]
        events.append(TextMessageStartEvent(message_id=message_id, role="assistant"))
        for index, word in enumerate(split_words(text)):
            if mode == "drop" and index == DROP_AFTER:
                return [*events, Dropped("cut mid-stream")]
            if mode == "silent" and index == DROP_AFTER:
                return [*events, None]
            events.append(TextMessageContentEvent(message_id=message_id, delta=word))
        if mode == "truncate":
            return events
        return [
            *events,
            TextMessageEndEvent(message_id=message_id),
            StepFinishedEvent(step_name="think"),
            RunFinishedEvent(
                thread_id=run.thread_id,
                run_id=run.run_id,
                usage=[USAGE] if mode == "reason" else None,
            ),
        ]
