"""The ``langgraph`` backend: a LangGraph graph (or any LangChain runnable), streamed.

``entrypoint = "pkg.module:attr"`` names a compiled graph, or a function (sync or async, no
arguments) that returns one. The graph runs with ``astream_events(version="v2")``:

- ``on_chat_model_stream`` chunks become the answer's pieces, as they arrive, and their
  reasoning (``additional_kwargs["reasoning_content"]``, ``reasoning``/``thinking`` content
  parts) :class:`Reasoning` events;
- ``on_chat_model_end`` gives each model call's ``usage_metadata`` as :class:`Usage` (every
  call counts), and the ``finish_reason`` (or ``stop_reason``) of a model whose tokens reach
  the answer as :class:`Finish` (``stop``, ``length``, ``content_filter``; the last one says
  how the answer ended);
- each pass through one of the graph's own nodes becomes a ``started`` and a ``finished`` step,
  and so does each tool call; ``step_labels`` gives them text for people;
- each tool call (``on_tool_start``, ``on_tool_end``, ``on_tool_error``) is also reported as
  :class:`ToolUpdate` events (``tool`` frames: its arguments, then its result or error);
- a node that calls LangGraph's ``interrupt(value)`` pauses the answer: the graph run ends with
  ``__interrupt__``, dari asks the people in the conversation (``ctx.interrupt``) and runs the
  graph again with ``Command(resume=...)`` from its checkpoint, in the same answer.

Interrupts need a checkpointer. A graph compiled with its own keeps it; otherwise (option
``checkpointer = "auto"``) dari gives each answer a fresh in-memory one with ``history =
"messages"`` (the graph gets the whole history every turn, so its checkpoint lives only as
long as the answer; a paused answer stays on the node running it), and a persistent one on the
store's database with ``history = "checkpointer"`` (``dari.agents.checkpoints``), shared by
every node; its threads are then ``{project_id}/{agent_name}/{thread_id}`` (and ``@{user}`` for
a user's own default thread) unless ``thread_id_template`` says otherwise.

The graph gets ``{"messages": [history..., new message]}`` with ``configurable.thread_id`` set,
or, with ``history = "checkpointer"``, only the new message: its checkpointer keeps the rest.
See docs/backends.md.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal, Protocol, cast

import orjson
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.schema import StreamEvent
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.constants import START, TAG_NOSTREAM
from langgraph.types import Command, Interrupt
from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    StepState,
    ToolUpdate,
    Usage,
)
from dari.agents.checkpoints import Closer, open_checkpointer
from dari.agents.messages import content_parts, report_text
from dari.agents.python import load_entrypoint

NS_SEP = "|"  # joins checkpoint namespaces: a subgraph's nodes have one in theirs
NO_STREAM_TAGS = frozenset({TAG_NOSTREAM, "langsmith:nostream"})
STEP_EVENTS = frozenset({"on_chain_start", "on_chain_end", "on_tool_start", "on_tool_end"})
# A model's reason for stopping, as providers name it, where it says how the answer ended.
FINISHES: dict[str, ModelFinish] = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
}
TOOL_EVENTS = frozenset({"on_tool_start", "on_tool_end", "on_tool_error"})
INTERRUPT_KEY = "__interrupt__"
DEFAULT_TEMPLATE = "{thread_id}"


class EventStreaming(Protocol):
    def astream_events(
        self, input: Any, config: RunnableConfig | None = None, *, version: Literal["v2"]
    ) -> AsyncGenerator[StreamEvent, None]: ...


class StepText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    started: str
    finished: str | None = None  # None: same as started


class LangGraphOptions(BaseModel):
    """``options`` of a ``langgraph`` agent; unknown keys are refused so typos show at start."""

    model_config = ConfigDict(extra="forbid")

    entrypoint: str = Field(min_length=1)
    history: Literal["messages", "checkpointer"] = "messages"
    input_key: str = "messages"
    step_labels: dict[str, str | StepText] = Field(default_factory=dict)
    hide_steps: list[str] = Field(default_factory=list)  # node or tool names not to report
    stream_nodes: list[str] | None = None  # only these nodes' model tokens reach the answer
    report_role: Literal["assistant", "system"] = "assistant"
    thread_id_template: str = DEFAULT_TEMPLATE  # also {project_id}, {agent_name}
    configurable: dict[str, Any] = Field(default_factory=dict)  # extra config for the graph
    recursion_limit: int | None = Field(default=None, gt=0)
    # Where a graph compiled without a checkpointer keeps what interrupt() needs: "auto" (see
    # the module's doc) or "none" (no checkpointer: the graph cannot interrupt).
    checkpointer: Literal["auto", "none"] = "auto"

    @field_validator("thread_id_template")
    @classmethod
    def _known_fields(cls, template: str) -> str:
        try:
            template.format(thread_id="t", project_id="p", agent_name="a")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError("may use only {thread_id}, {project_id} and {agent_name}") from exc
        return template


class LangGraphBackend(AgentBackend):
    kind = "langgraph"
    takes_images = True

    async def start(self) -> None:
        self.options = self.parse_options(LangGraphOptions)
        self.graph = await self._load_graph(self.options.entrypoint)
        nodes = getattr(self.graph, "nodes", None)
        # Without a node table (a plain runnable), any top-level node counts.
        self.nodes: frozenset[str] | None = (
            frozenset(nodes) - {START} if isinstance(nodes, dict) else None
        )

        # A graph without a checkpointer of its own gets one (see the module's doc).
        needs_one = (
            self.options.checkpointer == "auto"
            and getattr(self.graph, "checkpointer", False) is None
            and hasattr(self.graph, "copy")
        )
        self.per_answer_checkpoint = needs_one and self.options.history == "messages"
        self.shared_checkpoint = needs_one and self.options.history == "checkpointer"
        self._close_checkpointer: Closer | None = None
        if self.shared_checkpoint:
            saver, self._close_checkpointer = await open_checkpointer(self.settings.store.url)
            self.graph = cast(Any, self.graph).copy(update={"checkpointer": saver})

    async def aclose(self) -> None:
        if self._close_checkpointer is not None:
            await self._close_checkpointer()
            self._close_checkpointer = None

    async def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        graph = self.graph
        if self.per_answer_checkpoint:
            graph = cast(Any, graph).copy(update={"checkpointer": InMemorySaver()})
        config = self._config(request, ctx)
        graph_input: Any = self._input(request)
        streamed = False
        while True:
            asked: list[Interrupt] = []
            events = graph.astream_events(graph_input, config=config, version="v2")
            # Closing the event stream stops the graph run, e.g. when the answer is cancelled.
            async with contextlib.aclosing(events):
                async for event in events:
                    found = _interrupts(event)
                    if found:
                        asked.extend(found)
                        continue
                    # A run that paused has not answered: its end is not the final message.
                    for out in self._translate(event, streamed or bool(asked)):
                        streamed = streamed or isinstance(out, str)
                        yield out
            if not asked:
                return
            # Each question is put to the people in the conversation, in turn; the graph then
            # goes on from its checkpoint with their answers (by interrupt id).
            answers = {}
            for item in asked:
                answers[item.id] = await ctx.interrupt(interrupt_payload(item.value))
            graph_input = Command(resume=answers)

    # --- the graph's input and config -------------------------------------------------------

    def _input(self, request: AgentRequest) -> dict[str, list[BaseMessage]]:
        new = HumanMessage(content=human_content(request.message, request.images))
        if self.options.history == "checkpointer":
            return {self.options.input_key: [new]}
        role = self.options.report_role
        history = [to_message(item, role) for item in request.history]
        return {self.options.input_key: [*history, new]}

    def _config(self, request: AgentRequest, ctx: AgentContext) -> RunnableConfig:
        template = self.options.thread_id_template
        if self.shared_checkpoint and template == DEFAULT_TEMPLATE:
            # One checkpointer for every agent, project and user: each conversation its own.
            template = "{project_id}/{agent_name}/{thread_id}"
            if request.scope:
                template += "@" + request.scope.replace("{", "{{").replace("}", "}}")
        thread_id = template.format(
            thread_id=request.thread_id,
            project_id=request.project_id,
            agent_name=request.agent_name,
        )
        config: RunnableConfig = {
            "configurable": {
                **self.options.configurable,
                "thread_id": thread_id,
                "user_id": request.user_id,
                "dari_context": ctx,  # lets nodes call ctx.delegate() and ctx.step()
            },
            "metadata": {
                "dari_project_id": request.project_id,
                "dari_agent_name": request.agent_name,
                "dari_request_id": request.request_id,
            },
        }
        if self.options.recursion_limit is not None:
            config["recursion_limit"] = self.options.recursion_limit
        return config

    # --- reading events -------------------------------------------------------------------

    def _translate(self, event: StreamEvent, streamed: bool) -> list[AgentEvent]:
        """The piece, step or tool update an event stands for, if any."""
        kind = event["event"]
        if kind == "on_chat_model_stream":
            if not self._answers(event):
                return []
            chunk = event["data"].get("chunk")
            thought, piece = reasoning_text(chunk), chunk_text(chunk)
            return [*([Reasoning(thought)] if thought else []), *([piece] if piece else [])]
        if kind == "on_chat_model_end":
            return self._model_end(event)
        out: list[AgentEvent] = []
        if kind in STEP_EVENTS:
            step = self._step(event)
            if step is not None:
                out.append(step)
        if kind in TOOL_EVENTS and event["name"] not in self.options.hide_steps:
            out.append(tool_update(event))
        if kind == "on_chain_end" and not event.get("parent_ids") and not streamed:
            # The whole graph ended and no model streamed: answer with its last AI message.
            text = _final_text(event["data"].get("output"), self.options.input_key)
            if text:
                out.append(text)
        return out

    def _answers(self, event: StreamEvent) -> bool:
        """Whether this model's tokens reach the answer (not tagged nostream, and in one of
        ``stream_nodes`` when given)."""
        if NO_STREAM_TAGS.intersection(event.get("tags") or ()):
            return False
        allowed = self.options.stream_nodes
        if allowed is not None:
            metadata = event.get("metadata", {})
            # A model inside a subgraph counts for the subgraph's node too.
            if metadata.get("langgraph_node") not in allowed and _top_node(metadata) not in allowed:
                return False
        return True

    def _model_end(self, event: StreamEvent) -> list[AgentEvent]:
        """What a model call cost (any model: the answer paid for it) and, for a model that
        answers, why it stopped."""
        output = event["data"].get("output")
        out: list[AgentEvent] = []
        usage = usage_of(getattr(output, "usage_metadata", None))
        if usage is not None:
            out.append(usage)
        if self._answers(event):
            metadata = getattr(output, "response_metadata", None) or {}
            reason = metadata.get("finish_reason") or metadata.get("stop_reason")
            if isinstance(reason, str) and reason in FINISHES:
                out.append(Finish(FINISHES[reason]))
        return out

    def _step(self, event: StreamEvent) -> Step | None:
        """A step for a node of this graph or for a tool, else None (internal runnables)."""
        kind, name = event["event"], event["name"]
        if name in self.options.hide_steps:
            return None
        if kind.startswith("on_chain_") and not self._is_node(event):
            return None
        state: StepState = "started" if kind.endswith("_start") else "finished"
        return Step(name, self._label(name, state), state)

    def _is_node(self, event: StreamEvent) -> bool:
        name, metadata = event["name"], event.get("metadata", {})
        if metadata.get("langgraph_node") != name:
            return False  # a runnable inside a node, or the graph itself
        if self.nodes is not None and name not in self.nodes:
            return False
        return NS_SEP not in str(metadata.get("langgraph_checkpoint_ns", ""))

    def _label(self, name: str, state: StepState) -> str:
        label = self.options.step_labels.get(name)
        if label is None:
            return name
        if isinstance(label, str):
            return label
        return label.finished if state == "finished" and label.finished else label.started

    @staticmethod
    async def _load_graph(spec: str) -> EventStreaming:
        target = load_entrypoint(spec)
        if not hasattr(target, "astream_events") and callable(target):
            target = target()
            if inspect.isawaitable(target):
                target = await target
        if not hasattr(target, "astream_events"):
            raise ValueError(
                f"entrypoint {spec!r} must be a compiled graph (or runnable) with astream_events, "
                "or a function returning one"
            )
        graph: EventStreaming = target
        return graph


# --- messages ------------------------------------------------------------------------------


def human_content(text: str, images: list[str]) -> str | list[str | dict[str, Any]]:
    return cast("str | list[str | dict[str, Any]]", content_parts(text, images))


def to_message(item: HistoryMessage, report_role: Literal["assistant", "system"]) -> BaseMessage:
    if item.role == "user":
        return HumanMessage(content=human_content(item.content, item.images))
    if item.role == "assistant":
        return AIMessage(content=item.content)
    content = report_text(item.content)
    return SystemMessage(content=content) if report_role == "system" else AIMessage(content=content)


def chunk_text(chunk: object) -> str:
    """The text of a message chunk: string content, or the text parts of list content."""
    content = getattr(chunk, "content", None)
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    # List content (e.g. Anthropic-style): keep text parts, skip tool input and reasoning.
    return "".join(
        part if isinstance(part, str) else str(part.get("text", ""))
        for part in content
        if isinstance(part, str) or (isinstance(part, dict) and part.get("type") == "text")
    )


def reasoning_text(chunk: object) -> str:
    """The reasoning in a message chunk: ``additional_kwargs["reasoning_content"]`` (DeepSeek,
    Groq, xAI, OpenRouter and other OpenAI-compatible integrations) and ``reasoning`` or
    ``thinking`` content parts (LangChain's standard blocks, Anthropic)."""
    extra = getattr(chunk, "additional_kwargs", None)
    found = extra.get("reasoning_content") if isinstance(extra, dict) else None
    text = found if isinstance(found, str) else ""
    content = getattr(chunk, "content", None)
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("reasoning", "thinking"):
                value = part.get(part["type"])
                text += value if isinstance(value, str) else ""
    return text


def usage_of(metadata: object) -> Usage | None:
    """LangChain's ``usage_metadata`` (input, output and total tokens, reasoning among the
    output's details) as :class:`Usage`; None if absent or not understood."""
    if not isinstance(metadata, dict):
        return None
    try:
        details = metadata.get("output_token_details") or {}
        return Usage.reported(
            metadata["input_tokens"],
            metadata["output_tokens"],
            metadata.get("total_tokens"),
            details.get("reasoning") if isinstance(details, dict) else None,
        )
    except (KeyError, TypeError, ValueError):
        return None  # odd usage must not fail an answer that streamed fine


def jsonable(value: Any) -> Any:
    """``value`` as JSON can carry it: as it is when it can, a message's content, else text."""
    try:
        orjson.dumps(value)
    except TypeError:
        content = getattr(value, "content", None)
        if content is not None and content is not value:
            return jsonable(content)
        return str(value)
    return value


def tool_update(event: StreamEvent) -> ToolUpdate:
    """A tool event as a tool call's state: its run id names the call from start to end."""
    data = event["data"]
    call_id, name = str(event["run_id"]), event["name"]
    arguments = orjson.dumps(jsonable(data.get("input") or {})).decode()
    kind = event["event"]
    if kind == "on_tool_start":
        return ToolUpdate(call_id, name, "started", arguments)
    if kind == "on_tool_end":
        output = data.get("output")
        if getattr(output, "status", None) == "error":  # a ToolMessage the tool node failed
            failure = str(getattr(output, "content", "") or "the tool failed")
            return ToolUpdate(call_id, name, "failed", arguments, error=failure)
        return ToolUpdate(call_id, name, "finished", arguments, result=jsonable(output))
    error = data.get("error")
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return ToolUpdate(call_id, name, "failed", arguments, error=text)


def _interrupts(event: StreamEvent) -> list[Interrupt]:
    """The questions the graph asked, from its top-level ``__interrupt__`` update."""
    if event["event"] != "on_chain_stream" or event.get("parent_ids"):
        return []
    chunk = event["data"].get("chunk")
    if not isinstance(chunk, dict) or INTERRUPT_KEY not in chunk:
        return []
    return [item for item in chunk[INTERRUPT_KEY] if isinstance(item, Interrupt)]


def interrupt_payload(value: Any) -> dict[str, Any]:
    """What ``interrupt(value)`` asked, as an ``interrupt`` frame's payload: a dict as it is
    (with a ``question``), anything else as the question's text."""
    value = jsonable(value)
    if isinstance(value, dict):
        question = value.get("question")
        return value if isinstance(question, str) else {**value, "question": ""}
    return {"question": value if isinstance(value, str) else orjson.dumps(value).decode()}


def _top_node(metadata: dict[str, Any]) -> str | None:
    """The node of the outermost graph an event happened in ("team:<id>|chat:<id>" -> "team")."""
    namespace = metadata.get("langgraph_checkpoint_ns")
    if not isinstance(namespace, str) or not namespace:
        return None
    return namespace.split(NS_SEP, 1)[0].split(":", 1)[0]


def _final_text(output: object, input_key: str) -> str:
    messages = output.get(input_key) if isinstance(output, dict) else None
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return chunk_text(message)
        if isinstance(message, HumanMessage):
            return ""  # the graph did not answer this turn
    return ""
