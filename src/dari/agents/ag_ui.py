"""The ``ag-ui`` backend: answers come from a remote AG-UI agent endpoint (any framework's).

dari POSTs a ``RunAgentInput`` (the conversation's history and the new user message, ``runId``
= the request id) and turns the SSE event stream into its own events: text message content
becomes the answer's pieces, reasoning message content its reasoning, steps become steps, each
tool call is shown as a step while it runs, and ``RUN_FINISHED.usage`` is the answer's usage.
``RUN_ERROR``, an error status, a stream that ends before ``RUN_FINISHED`` (the remote dropped)
and a remote silent for longer than ``read_timeout_s`` all fail the answer with
``agent_failed``; what was streamed until then is saved with it.

Options::

    url = "http://127.0.0.1:8123/agent"   # the AG-UI endpoint (POST, SSE answer)
    headers = {}                           # sent with every run
    api_key_env = "AGENT_KEY"              # optional: Authorization: Bearer $AGENT_KEY
    connect_timeout_s = 10
    read_timeout_s = 120                   # the longest silence between two events
    forwarded_props = {}                   # RunAgentInput.forwardedProps
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
from ag_ui.core import (
    AssistantMessage,
    DataSource,
    Event,
    ImagePart,
    Message,
    ReasoningMessageChunkEvent,
    ReasoningMessageContentEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageChunkEvent,
    TextMessageContentEvent,
    TextPart,
    ToolCallEndEvent,
    ToolCallStartEvent,
    UrlSource,
    UserMessage,
)
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from dari.agents.base import (
    AgentBackend,
    AgentContext,
    AgentEvent,
    AgentRequest,
    Reasoning,
    Step,
    Usage,
)
from dari.agents.sse import SSEDecoder
from dari.protocol.errors import AgentFailed

_EVENTS: TypeAdapter[Any] = TypeAdapter(Event)
_ERROR_BODY = 500  # characters of an error response quoted in the failure


class AgUiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    api_key_env: str | None = None
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=120.0, gt=0)
    forwarded_props: dict[str, Any] = Field(default_factory=dict)


def thread_of(request: AgentRequest) -> str:
    """The remote thread: stable per dari conversation and user, naming neither."""
    key = "\x1f".join((request.user_id, request.project_id, request.agent_name, request.thread_id))
    return f"dari-{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _user(message_id: str, text: str, images: list[str]) -> UserMessage:
    if not images:
        return UserMessage(id=message_id, content=text)
    parts: list[Any] = [TextPart(text=text)] if text else []
    for image in images:
        if image.startswith("data:"):
            header, _, data = image.partition(",")
            mime = header[5:].split(";")[0]
            parts.append(ImagePart(source=DataSource(value=data, mime_type=mime)))
        else:
            parts.append(ImagePart(source=UrlSource(value=image)))
    return UserMessage(id=message_id, content=parts)


def run_input(request: AgentRequest, forwarded_props: dict[str, Any]) -> RunAgentInput:
    """The conversation as AG-UI messages (reports as assistant messages), then the new one."""
    messages: list[Message] = []
    for index, past in enumerate(request.history):
        message_id = f"{request.request_id}-h{index}"
        if past.role == "user":
            messages.append(_user(message_id, past.content, past.images))
        else:
            messages.append(AssistantMessage(id=message_id, content=past.content))
    messages.append(_user(request.request_id, request.message, request.images))
    return RunAgentInput(
        thread_id=thread_of(request),
        run_id=request.request_id,
        messages=messages,
        state={},
        tools=[],
        context=[],
        forwarded_props=forwarded_props,
    )


class RemoteRun:
    """One remote run's events, as dari agent events. Pure: fed each event's JSON text."""

    def __init__(self) -> None:
        self.finished = False
        self._tools: dict[str, str] = {}  # open tool calls: id -> name

    def add(self, data: bytes) -> list[AgentEvent]:
        try:
            event = _EVENTS.validate_json(data)
        except ValidationError:
            raise AgentFailed("the AG-UI agent sent an event that is not AG-UI") from None
        if isinstance(event, TextMessageContentEvent):
            return [event.delta]
        if isinstance(event, TextMessageChunkEvent):
            return [event.delta] if event.delta else []
        if isinstance(event, ReasoningMessageContentEvent | ReasoningMessageChunkEvent):
            return [Reasoning(event.delta)] if event.delta else []
        if isinstance(event, StepStartedEvent):
            return [Step(event.step_name, event.step_name, "started")]
        if isinstance(event, StepFinishedEvent):
            return [Step(event.step_name, event.step_name, "finished")]
        if isinstance(event, ToolCallStartEvent):
            self._tools[event.tool_call_id] = event.tool_call_name
            return [Step(event.tool_call_name, event.tool_call_name, "started")]
        if isinstance(event, ToolCallEndEvent):
            name = self._tools.pop(event.tool_call_id, None)
            return [Step(name, name, "finished")] if name else []
        if isinstance(event, RunErrorEvent):
            raise AgentFailed(f"the AG-UI agent failed: {event.message}")
        if isinstance(event, RunFinishedEvent):
            self.finished = True
            return [usage] if (usage := _usage(event)) is not None else []
        return []  # state, snapshots, custom and raw events are the remote UI's business


def _usage(event: RunFinishedEvent) -> Usage | None:
    """The run's token usage (one entry per model, summed), if the remote reported any."""
    if not event.usage:
        return None
    total = Usage()
    for entry in event.usage:
        prompt, completion = entry.input_tokens or 0, entry.output_tokens or 0
        total += Usage(
            prompt,
            completion,
            entry.total_tokens if entry.total_tokens is not None else prompt + completion,
            entry.reasoning_tokens,
        )
    return total


class AgUiBackend(AgentBackend):
    kind = "ag-ui"
    takes_images = True

    async def start(self) -> None:
        self.options = self.parse_options(AgUiOptions)
        headers = {**self.options.headers, "accept": "text/event-stream"}
        if self.options.api_key_env:
            key = os.environ.get(self.options.api_key_env)
            if not key:
                raise ValueError(
                    f"agent {self.config.name!r}: environment variable "
                    f"{self.options.api_key_env} is not set"
                )
            headers["authorization"] = f"Bearer {key}"
        timeout = httpx.Timeout(self.options.read_timeout_s, connect=self.options.connect_timeout_s)
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            await client.aclose()

    async def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        body = run_input(request, self.options.forwarded_props).model_dump_json(by_alias=True)
        run = RemoteRun()
        try:
            async with self._client.stream(
                "POST",
                self.options.url,
                content=body,
                headers={"content-type": "application/json"},
            ) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:_ERROR_BODY]
                    raise AgentFailed(
                        f"the AG-UI agent answered HTTP {response.status_code}: {detail}"
                    )
                decoder = SSEDecoder()
                async for chunk in response.aiter_bytes():
                    for data in decoder.feed(chunk):
                        for event in run.add(data):
                            yield event
                        if run.finished:
                            return
                for data in decoder.finish():
                    for event in run.add(data):
                        yield event
        except httpx.TimeoutException:
            raise AgentFailed(
                f"the AG-UI agent did not answer (no event for {self.options.read_timeout_s:g}s)"
            ) from None
        except httpx.TransportError as exc:
            raise AgentFailed(
                f"the connection to the AG-UI agent broke: {type(exc).__name__}"
            ) from None
        if not run.finished:
            raise AgentFailed("the AG-UI agent's stream ended before RUN_FINISHED")
