"""The ``openai`` backend: any OpenAI-compatible chat-completions server, streamed.

Works with OpenAI, vLLM, Ollama, llama.cpp's server and LM Studio. Options (all but ``model``
optional): ``base_url``, ``model``, ``api_key_env``, ``system_prompt``, ``temperature``,
``max_tokens``, ``timeout_s``, ``max_retries``, ``history_limit``, ``report_role``,
``delegates``, ``include_usage``, ``http_client``. See docs/backends.md.

Besides the text, the backend yields the model's reasoning (``delta.reasoning_content`` or
``delta.reasoning``) as :class:`Reasoning`, each completion's usage (asked for with
``stream_options.include_usage``) as :class:`Usage`, and :class:`Finish` when the model was cut
off (``length``, ``content_filter``).

Every upstream failure (an error status, a timeout, a stream that stops half way) ends the answer
with :class:`AgentFailed` and a short message that names no URL or key. Retries are off by
default: text already shown to people cannot be taken back, so the gateway reports instead.
When the agent may delegate, the model gets a ``delegate_task`` tool; its calls are carried out
with ``ctx.delegate`` and the model continues, for at most :data:`MAX_TOOL_ROUNDS` rounds. Each
call is reported as :class:`ToolUpdate` events: ``started`` and ``arguments`` as the model
writes it, then ``finished`` with the tool's result or ``failed`` (also for a call that is not
run: an unknown tool, bad arguments, or a model cut off mid-call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from http import HTTPStatus
from typing import Any, Literal, cast

import openai
import orjson
from openai.types.chat import (
    ChatCompletionContentPartParam,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from pydantic import BaseModel, ConfigDict, Field

from dari.agents.base import (
    AgentBackend,
    AgentContext,
    AgentEvent,
    AgentRequest,
    Finish,
    HistoryMessage,
    ModelFinish,
    Reasoning,
    Step,
    ToolUpdate,
    Usage,
)
from dari.agents.messages import content_parts, report_text
from dari.agents.sse import DONE, MalformedChunk, SSEDecoder, ToolCall, Turn, UpstreamError
from dari.protocol.errors import AgentFailed, DariError
from dari.settings import AgentConfig, Settings

MAX_TOOL_ROUNDS = 4
DELEGATE_TOOL = "delegate_task"
NO_KEY = "not-needed"  # local servers ignore the key, but the client wants one
_DETAIL_STATUSES = frozenset({400, 404, 413, 422})  # their message helps and holds no secret
_DRAIN_S = 0.1  # how long to read on after [DONE] for the body's end
# Upstream finish reasons that end the answer short of what the model meant to say.
_CUT_SHORT: dict[str | None, ModelFinish] = {
    "length": "length",
    "content_filter": "content_filter",
}


class OpenAIOptions(BaseModel):
    """``options`` of an ``openai`` agent; unknown keys are refused so typos show at start."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    base_url: str | None = None  # None: the client's default (OpenAI, or OPENAI_BASE_URL)
    api_key_env: str | None = None  # name of the env var holding the key
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)  # connect, and the longest silence mid-stream
    max_retries: int = Field(default=0, ge=0)
    history_limit: int | None = Field(default=None, ge=0)  # on top of the agent's own limit
    report_role: Literal["assistant", "system"] = "assistant"
    delegates: list[str] | None = None  # agents the model may hand tasks to
    # Ask for the usage chunk (stream_options); off for servers that refuse the field.
    include_usage: bool = True
    # The HTTP library under the official client. aiohttp reads a streamed body at about half
    # the CPU of the client's default (httpx2) transport; "auto" takes it when installed.
    http_client: Literal["auto", "aiohttp", "httpx"] = "auto"


class OpenAIBackend(AgentBackend):
    kind = "openai"
    takes_images = True

    def __init__(self, config: AgentConfig, settings: Settings) -> None:
        super().__init__(config, settings)
        self._client: openai.AsyncOpenAI | None = None
        self._tools: list[ChatCompletionToolParam] = []

    async def start(self) -> None:
        self.options = self.parse_options(OpenAIOptions)
        self._client = openai.AsyncOpenAI(
            api_key=self._api_key(),
            base_url=self.options.base_url,
            timeout=openai.Timeout(self.options.timeout_s),
            max_retries=self.options.max_retries,
            http_client=self._http_client(),
        )
        self._tools = self._delegate_tools()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        messages = build_messages(request, self.options)
        for round_ in range(MAX_TOOL_ROUNDS + 1):
            turn = Turn()
            # aclosing: when the answer is closed at a yield, the upstream response closes now.
            completion = self._complete(messages, turn, last=round_ == MAX_TOOL_ROUNDS)
            async with contextlib.aclosing(completion) as pieces:
                async for piece in pieces:
                    yield piece
            usage = usage_of(turn.usage)
            if usage is not None:
                yield usage
            finish = turn.finish_reason
            if finish in _CUT_SHORT:
                # Tool calls cut off by the token limit or a filter are not run.
                for call in turn.calls:
                    yield _failed(call, f"not run: the model was cut off ({finish})")
                yield Finish(_CUT_SHORT[finish])
                return
            if not turn.calls:
                return
            if round_ == MAX_TOOL_ROUNDS:
                for call in turn.calls:
                    yield _failed(call, f"not run: at most {MAX_TOOL_ROUNDS} rounds of tool calls")
                return
            messages.append(assistant_message(turn))
            for call in turn.calls:
                arguments = delegation(call)
                if isinstance(arguments, str):
                    result = _tool_result(error=arguments)
                    yield _failed(call, arguments)
                else:
                    agent_name, task = arguments
                    yield Step(DELEGATE_TOOL, f"Delegating to {agent_name}: {_short(task)}")
                    result, summary, failure = await _delegate(ctx, agent_name, task)
                    yield Step(DELEGATE_TOOL, summary, "finished")
                    if failure is None:
                        yield _update(call, "finished", result=json.loads(result))
                    else:
                        yield _failed(call, failure)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})

    # --- one completion ----------------------------------------------------------------------

    async def _complete(
        self, messages: list[ChatCompletionMessageParam], turn: Turn, *, last: bool
    ) -> AsyncGenerator[str | Reasoning | ToolUpdate, None]:
        """Stream one completion into ``turn``, yielding its text and reasoning as they arrive.

        The official client sends the request (auth, base URL, retries, status errors); the
        body is read raw (:mod:`dari.agents.sse`), not as one pydantic model per chunk."""
        assert self._client is not None, "start() first"
        request = self._client.chat.completions.with_streaming_response.create(
            model=self.options.model,
            messages=messages,
            stream=True,
            **self._extra_arguments(last),
        )
        # Leaving this block for any reason (end, error, cancellation) closes the response.
        async with contextlib.AsyncExitStack() as stack:
            try:
                response = await stack.enter_async_context(request)
            except openai.APIError as exc:
                raise self._failure(exc, streaming=False) from exc
            body = response.http_response
            timeouts, broken = _transport_errors(body)
            try:
                async with contextlib.aclosing(_events(body)) as events:
                    async for payload in events:
                        if payload == DONE:
                            await _drain(events, broken)
                            break
                        reasoning, piece = turn.add(orjson.loads(payload))
                        if reasoning:
                            yield Reasoning(reasoning)
                        if piece:
                            yield piece
                        if turn.tool_deltas:
                            for update in _written(turn):
                                yield update
            except timeouts as exc:
                if not timed_out(exc):
                    raise AgentFailed("upstream connection broke off mid-answer") from exc
                raise AgentFailed(
                    f"upstream timed out (no data for {self.options.timeout_s:g}s)"
                ) from exc
            except broken as exc:
                raise AgentFailed("upstream connection broke off mid-answer") from exc
            except UpstreamError as exc:
                raise AgentFailed(f"upstream error: {_short(exc.message)}") from exc
            except (orjson.JSONDecodeError, MalformedChunk) as exc:
                raise AgentFailed("upstream sent malformed data") from exc
        if turn.finish_reason is None:
            # The body ended cleanly but the answer did not (e.g. a proxy cut it short).
            raise AgentFailed("upstream stream ended before the answer was complete")

    def _extra_arguments(self, last: bool) -> dict[str, Any]:
        """Only what is set: some local servers refuse fields they do not know, even null."""
        extra: dict[str, Any] = {}
        if self.options.temperature is not None:
            extra["temperature"] = self.options.temperature
        if self.options.max_tokens is not None:
            extra["max_tokens"] = self.options.max_tokens
        if self.options.include_usage:
            extra["stream_options"] = {"include_usage": True}
        if self._tools:
            extra["tools"] = self._tools
            if last:
                extra["tool_choice"] = "none"  # the final round must answer in words
        return extra

    def _failure(self, exc: openai.APIError, *, streaming: bool) -> AgentFailed:
        if isinstance(exc, openai.APIStatusError):
            return AgentFailed(f"upstream returned {_status_text(exc)}")
        if isinstance(exc, openai.APITimeoutError) and timed_out(exc):
            return AgentFailed(f"upstream timed out (no data for {self.options.timeout_s:g}s)")
        if isinstance(exc, openai.APIConnectionError):
            if streaming:
                return AgentFailed("upstream connection broke off mid-answer")
            return AgentFailed("could not connect to upstream")
        return AgentFailed(f"upstream error: {_short(exc.message)}")

    # --- start-up -----------------------------------------------------------------------------

    def _api_key(self) -> str:
        env = self.options.api_key_env
        if env is None and self.options.base_url is None:
            env = "OPENAI_API_KEY"  # talking to OpenAI itself, which always wants a key
        if env is None:
            return NO_KEY
        key = os.environ.get(env)
        if not key:
            raise ValueError(
                f"agent {self.config.name!r}: environment variable {env} "
                "(options.api_key_env) is not set"
            )
        return key

    def _http_client(self) -> Any:
        """The client's HTTP library as ``http_client`` says; None keeps the client's default."""
        choice = self.options.http_client
        if choice == "httpx":
            return None
        transport = aiohttp_client(self.options.timeout_s)
        if transport is None and choice == "aiohttp":
            raise ValueError(
                f"agent {self.config.name!r}: options.http_client = 'aiohttp' needs aiohttp; "
                "install it with: pip install 'openai[aiohttp]'"
            )
        return transport

    def _delegate_tools(self) -> list[ChatCompletionToolParam]:
        if not self.config.can_delegate:
            return []
        siblings = self._siblings()
        names = self.options.delegates
        if names is None and siblings is not None:
            names = list(siblings)
        if names is not None and not names:
            return []  # nobody to hand work to
        return [delegate_tool(names, siblings or {})]

    def _siblings(self) -> dict[str, str] | None:
        """The other agents of this agent's project (name -> description), if it is declared."""
        for project in self.settings.projects:
            if any(agent is self.config for agent in project.agents):
                return {
                    agent.name: agent.description
                    for agent in project.agents
                    if agent is not self.config
                }
        return None


def aiohttp_client(timeout_s: float) -> Any:
    """The official client's aiohttp transport (``openai[aiohttp]``), or None if not installed."""
    make = getattr(openai, "DefaultAioHttpClient", None)
    if make is None:
        return None
    try:
        return make(timeout=openai.Timeout(timeout_s))
    except RuntimeError:  # the client is there, the aiohttp extra is not
        return None


# --- request building ----------------------------------------------------------------------


def build_messages(
    request: AgentRequest, options: OpenAIOptions
) -> list[ChatCompletionMessageParam]:
    """System prompt, then history (oldest first), then the new user message."""
    messages: list[ChatCompletionMessageParam] = []
    if options.system_prompt:
        messages.append({"role": "system", "content": options.system_prompt})
    history = request.history
    if options.history_limit is not None:
        history = history[len(history) - options.history_limit :] if options.history_limit else []
    messages.extend(_history_message(item, options.report_role) for item in history)
    messages.append({"role": "user", "content": user_content(request.message, request.images)})
    return messages


def user_content(text: str, images: list[str]) -> str | list[ChatCompletionContentPartParam]:
    return cast("str | list[ChatCompletionContentPartParam]", content_parts(text, images))


def _history_message(
    item: HistoryMessage, report_role: Literal["assistant", "system"]
) -> ChatCompletionMessageParam:
    if item.role == "user":
        return {"role": "user", "content": user_content(item.content, item.images)}
    if item.role == "assistant":
        return {"role": "assistant", "content": item.content}
    content = report_text(item.content)
    if report_role == "system":
        return {"role": "system", "content": content}
    return {"role": "assistant", "content": content}


def delegate_tool(names: list[str] | None, descriptions: dict[str, str]) -> ChatCompletionToolParam:
    """The ``delegate_task`` function; ``names`` None means the agents are not known here."""
    about = (
        "Hand a task to another agent of this project. It works in the background; its report "
        "is posted to this conversation when it is done, so tell the user it is on its way."
    )
    agent_name: dict[str, object] = {"type": "string", "description": "The agent to hand it to."}
    if names:
        listing = "\n".join(
            f"- {name}: {descriptions[name]}" if descriptions.get(name) else f"- {name}"
            for name in names
        )
        about += f"\nAgents:\n{listing}"
        agent_name["enum"] = names
    return {
        "type": "function",
        "function": {
            "name": DELEGATE_TOOL,
            "description": about,
            "parameters": {
                "type": "object",
                "properties": {
                    "agent_name": agent_name,
                    "task": {
                        "type": "string",
                        "description": "What the agent should do, with the context it needs.",
                    },
                },
                "required": ["agent_name", "task"],
                "additionalProperties": False,
            },
        },
    }


# --- reading the stream --------------------------------------------------------------------


def delegation(call: ToolCall) -> tuple[str, str] | str:
    """``(agent_name, task)`` of a ``delegate_task`` call, or why it cannot be carried out."""
    if call.name != DELEGATE_TOOL:
        return f"unknown tool {call.name!r}"
    try:
        arguments = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        return "arguments are not valid JSON"
    agent_name = arguments.get("agent_name") if isinstance(arguments, dict) else None
    task = arguments.get("task") if isinstance(arguments, dict) else None
    if not isinstance(agent_name, str) or not isinstance(task, str) or not task.strip():
        return 'expected arguments {"agent_name": string, "task": non-empty string}'
    return agent_name, task


def usage_of(usage: dict[str, Any] | None) -> Usage | None:
    """The usage object of a chunk as :class:`Usage`; None if absent or not understood."""
    if not usage:
        return None
    try:
        details = usage.get("completion_tokens_details") or {}
        return Usage.reported(
            usage.get("prompt_tokens") or 0,
            usage.get("completion_tokens") or 0,
            usage.get("total_tokens"),
            details.get("reasoning_tokens"),
        )
    except (AttributeError, TypeError, ValueError):
        return None  # a server's odd usage must not fail an answer that streamed fine


def assistant_message(turn: Turn) -> ChatCompletionMessageParam:
    """The model's turn as it goes back to the model: its text and its tool calls."""
    calls = turn.calls
    for call in calls:
        call.id = call.id or f"call_{call.index}"
    return {
        "role": "assistant",
        "content": "".join(turn.text) or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ],
    }


async def _events(body: Any) -> AsyncGenerator[bytes, None]:
    """The ``data`` of each server-sent event of ``body``, as the bytes arrive."""
    decoder = SSEDecoder()
    async for data in body.aiter_bytes():
        for payload in decoder.feed(data):
            yield payload
    for payload in decoder.finish():
        yield payload


_ErrorTypes = tuple[type[BaseException], ...]
_TRANSPORT_ERRORS: dict[type[Any], tuple[_ErrorTypes, _ErrorTypes]] = {}


def _transport_errors(body: Any) -> tuple[_ErrorTypes, _ErrorTypes]:
    """(timeouts, broken connections) of the HTTP library the client's response comes from.

    openai 1.x reads with ``httpx``, 3.x with ``httpx2``; both name these errors alike."""
    kind = type(body)
    known = _TRANSPORT_ERRORS.get(kind)
    if known is None:
        library = sys.modules[kind.__module__.partition(".")[0]]
        known = _TRANSPORT_ERRORS[kind] = (
            (library.TimeoutException,),
            (library.RequestError,),
        )
    return known


def timed_out(exc: BaseException) -> bool:
    """Whether an error raised as a timeout is one. The aiohttp transport raises every lost
    connection (refused, reset, closed) as a connect timeout; the error it wraps tells."""
    cause: BaseException | None = exc
    while cause is not None:
        if type(cause).__module__.partition(".")[0] == "aiohttp":
            return isinstance(cause, TimeoutError)
        cause = cause.__cause__
    return True


async def _drain(events: AsyncIterator[bytes], broken: _ErrorTypes) -> None:
    """Read what follows ``[DONE]`` up to the body's end, so the connection can be used again;
    briefly, because a server may hold the body open."""
    with contextlib.suppress(TimeoutError, *broken):
        async with asyncio.timeout(_DRAIN_S):
            async for _ in events:
                pass


# --- helpers -------------------------------------------------------------------------------


async def _delegate(
    ctx: AgentContext, agent_name: str, task: str
) -> tuple[str, str, str | None]:
    """Hand the task over; return the tool result for the model, a step text for people and,
    if it could not be handed over, why."""
    try:
        task_id = await ctx.delegate(agent_name, task)
    except DariError as exc:
        summary = f"Could not delegate to {agent_name}: {exc.message}"
        return _tool_result(error=exc.message), summary, exc.message
    result = _tool_result(status="delegated", task_id=task_id, agent_name=agent_name)
    return result, f"Delegated to {agent_name} (task {task_id})", None


def _call_id(call: ToolCall) -> str:
    # Some servers send no id for single calls; the model gets the same one back.
    call.id = call.id or f"call_{call.index}"
    return call.id


def _written(turn: Turn) -> list[ToolUpdate]:
    """The tool calls the last chunk began or continued, as ``started``/``arguments``."""
    updates: list[ToolUpdate] = []
    for call, added, new in turn.tool_deltas:
        if new:
            updates.append(ToolUpdate(_call_id(call), call.name, "started", call.arguments))
        elif added:
            updates.append(
                ToolUpdate(_call_id(call), call.name, "arguments", call.arguments, delta=added)
            )
    turn.tool_deltas.clear()
    return updates


def _update(call: ToolCall, state: Literal["finished"], *, result: Any) -> ToolUpdate:
    return ToolUpdate(_call_id(call), call.name, state, call.arguments, result=result)


def _failed(call: ToolCall, error: str) -> ToolUpdate:
    return ToolUpdate(_call_id(call), call.name, "failed", call.arguments, error=error)


def _tool_result(**fields: str) -> str:
    return json.dumps(fields, ensure_ascii=False)


def _status_text(exc: openai.APIStatusError) -> str:
    try:
        text = f"{exc.status_code} {HTTPStatus(exc.status_code).phrase}"
    except ValueError:
        text = str(exc.status_code)
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    if exc.status_code in _DETAIL_STATUSES and isinstance(message, str) and message:
        text += f": {_short(message)}"
    return text


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
