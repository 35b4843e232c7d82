"""The ``langgraph`` backend: a LangGraph graph (or any LangChain runnable), streamed.

``entrypoint = "pkg.module:attr"`` names a compiled graph, or a function (sync or async, no
arguments) that returns one. The graph runs with ``astream_events(version="v2")``:

- ``on_chat_model_stream`` chunks become the answer's pieces, as they arrive;
- each pass through one of the graph's own nodes becomes a ``started`` and a ``finished`` step,
  and so does each tool call; ``step_labels`` gives them text for people.

The graph gets ``{"messages": [history..., new message]}`` with ``configurable.thread_id`` set,
or, with ``history = "checkpointer"``, only the new message: its own checkpointer keeps the rest.
See docs/backends.md.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal, Protocol, cast

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.schema import StreamEvent
from langgraph.constants import START, TAG_NOSTREAM
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dari.agents.base import (
    AgentBackend,
    AgentContext,
    AgentEvent,
    AgentRequest,
    HistoryMessage,
    Step,
    StepState,
)
from dari.agents.messages import content_parts, report_text
from dari.agents.python import load_entrypoint

NS_SEP = "|"  # joins checkpoint namespaces: a subgraph's nodes have one in theirs
NO_STREAM_TAGS = frozenset({TAG_NOSTREAM, "langsmith:nostream"})
STEP_EVENTS = frozenset({"on_chain_start", "on_chain_end", "on_tool_start", "on_tool_end"})


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
    thread_id_template: str = "{thread_id}"  # also {project_id}, {agent_name}
    configurable: dict[str, Any] = Field(default_factory=dict)  # extra config for the graph
    recursion_limit: int | None = Field(default=None, gt=0)

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

    async def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        events = self.graph.astream_events(
            self._input(request), config=self._config(request, ctx), version="v2"
        )
        streamed = False
        # Closing the event stream stops the graph run, e.g. when the answer is cancelled.
        async with contextlib.aclosing(events):
            async for event in events:
                out = self._translate(event, streamed)
                if out is not None:
                    streamed = streamed or isinstance(out, str)
                    yield out

    # --- the graph's input and config -------------------------------------------------------

    def _input(self, request: AgentRequest) -> dict[str, list[BaseMessage]]:
        new = HumanMessage(content=human_content(request.message, request.images))
        if self.options.history == "checkpointer":
            return {self.options.input_key: [new]}
        role = self.options.report_role
        history = [to_message(item, role) for item in request.history]
        return {self.options.input_key: [*history, new]}

    def _config(self, request: AgentRequest, ctx: AgentContext) -> RunnableConfig:
        thread_id = self.options.thread_id_template.format(
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

    def _translate(self, event: StreamEvent, streamed: bool) -> AgentEvent | None:
        """The piece or step an event stands for, if any."""
        kind = event["event"]
        if kind == "on_chat_model_stream":
            return self._piece(event) or None
        if kind in STEP_EVENTS:
            step = self._step(event)
            if step is not None:
                return step
        if kind == "on_chain_end" and not event.get("parent_ids") and not streamed:
            # The whole graph ended and no model streamed: answer with its last AI message.
            return _final_text(event["data"].get("output"), self.options.input_key) or None
        return None

    def _piece(self, event: StreamEvent) -> str:
        if NO_STREAM_TAGS.intersection(event.get("tags") or ()):
            return ""
        allowed = self.options.stream_nodes
        if allowed is not None:
            metadata = event.get("metadata", {})
            # A model inside a subgraph counts for the subgraph's node too.
            if metadata.get("langgraph_node") not in allowed and _top_node(metadata) not in allowed:
                return ""
        return chunk_text(event["data"].get("chunk"))

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
