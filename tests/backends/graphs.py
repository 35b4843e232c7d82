"""Real LangGraph graphs with fake chat models, for tests; importable as agent entrypoints.

    [[projects.agents]]
    backend = "langgraph"
    options = { entrypoint = "tests.backends.graphs:supervisor" }

Each model is LangChain's ``GenericFakeChatModel``, which streams its message token by token
(words and the spaces between them), so answers are known in advance yet really streamed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt
from pydantic import Field

Update = dict[str, list[AnyMessage]]


def say(text: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([text]))


def text_of(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(
        p["text"] for p in message.content if isinstance(p, dict) and p["type"] == "text"
    )


def image_count(message: BaseMessage) -> int:
    if isinstance(message.content, str):
        return 0
    return sum(1 for p in message.content if isinstance(p, dict) and p["type"] == "image_url")


# --- chat: one node that describes what it was given -----------------------------------------


def describe(messages: list[AnyMessage], config: RunnableConfig) -> str:
    """E.g. "3 messages (human ai human) in thread t1 with 0 images: hello"."""
    last = messages[-1]
    roles = " ".join(message.type for message in messages)
    thread = config["configurable"]["thread_id"]
    return (
        f"{len(messages)} messages ({roles}) in thread {thread} "
        f"with {image_count(last)} images: {text_of(last)}"
    )


async def chat_node(state: MessagesState, config: RunnableConfig) -> Update:
    reply = await say(describe(state["messages"], config)).ainvoke(state["messages"], config)
    return {"messages": [reply]}


def build_chat(checkpointer: InMemorySaver | None = None) -> CompiledStateGraph[Any]:
    graph = StateGraph(MessagesState)
    graph.add_node("chat", chat_node)
    graph.add_edge(START, "chat")
    graph.add_edge("chat", END)
    return graph.compile(checkpointer=checkpointer)


chat = build_chat()


def chat_with_memory() -> CompiledStateGraph[Any]:
    """A factory: each agent gets its own checkpointer."""
    return build_chat(InMemorySaver())


async def chat_async_factory() -> CompiledStateGraph[Any]:
    return build_chat()


def build_nested() -> CompiledStateGraph[Any]:
    """The chat graph as the single node "team" of an outer graph."""
    graph = StateGraph(MessagesState)
    graph.add_node("team", build_chat())
    graph.add_edge(START, "team")
    graph.add_edge("team", END)
    return graph.compile()


nested = build_nested()


# --- supervisor: routes to an analyst, then a writer ------------------------------------------


class TeamState(MessagesState):
    next: str


@tool
async def lookup_sales(quarter: str) -> str:
    """Sales figures of a quarter."""
    return f"{quarter}: +12%"


def this_turn(messages: list[AnyMessage]) -> list[AnyMessage]:
    """Messages after the last human message: what the team has said this turn."""
    last_human = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
    return messages[last_human + 1 :]


def supervisor_node(state: TeamState) -> dict[str, str]:
    spoken = {m.name for m in this_turn(state["messages"]) if isinstance(m, AIMessage)}
    for member in ("analyst", "writer"):
        if member not in spoken:
            return {"next": member}
    return {"next": END}


async def analyst_node(state: TeamState, config: RunnableConfig) -> Update:
    figures = await lookup_sales.ainvoke({"quarter": "Q3"}, config)
    reply = await say(f"Sales {figures}.").ainvoke(state["messages"], config)
    reply.name = "analyst"
    return {"messages": [reply]}


async def writer_node(state: TeamState, config: RunnableConfig) -> Update:
    reply = await say("Report: sales are up.").ainvoke(state["messages"], config)
    reply.name = "writer"
    return {"messages": [reply]}


def build_supervisor() -> CompiledStateGraph[Any]:
    graph = StateGraph(TeamState)
    graph.add_node("supervisor", supervisor_node)
    graph.add_node("analyst", analyst_node)
    graph.add_node("writer", writer_node)
    graph.add_edge(START, "supervisor")
    graph.add_conditional_edges(
        "supervisor", lambda state: state["next"], ["analyst", "writer", END]
    )
    graph.add_edge("analyst", "supervisor")
    graph.add_edge("writer", "supervisor")
    return graph.compile()


supervisor = build_supervisor()
SUPERVISOR_ANSWER = "Sales Q3: +12%.Report: sales are up."  # both members stream, in turn


# --- graphs for the edges -----------------------------------------------------------------


def canned_node(state: MessagesState) -> Update:
    return {"messages": [AIMessage("A canned answer, no model involved.")]}


def failing_node(state: MessagesState) -> Update:
    raise RuntimeError("the graph broke")


def single_node_graph(name: str, node: Any) -> CompiledStateGraph[Any]:
    graph = StateGraph(MessagesState)
    graph.add_node(name, node)
    graph.add_edge(START, name)
    graph.add_edge(name, END)
    return graph.compile()


silent = single_node_graph("canned", canned_node)
failing = single_node_graph("explode", failing_node)


async def delegating_node(state: MessagesState, config: RunnableConfig) -> Update:
    """Hands the user's text to the researcher through the gateway, then says so."""
    ctx = config["configurable"]["dari_context"]
    task_id = await ctx.delegate("researcher", text_of(state["messages"][-1]))
    reply = await say(f"Handed over as {task_id}.").ainvoke(state["messages"], config)
    return {"messages": [reply]}


delegating = single_node_graph("delegate", delegating_node)


# --- slow: streams with a pause per token, and tells a probe when it was stopped ---------------


@dataclass
class Probe:
    """Passed in ``options.configurable.probe``; events bind to the loop that awaits them."""

    streaming: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


class SlowChatModel(GenericFakeChatModel):
    delay_s: float = 0.05

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for token in re.split(r"(\s)", str(next(self.messages))):
            await asyncio.sleep(self.delay_s)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


async def slow_node(state: MessagesState, config: RunnableConfig) -> Update:
    probe: Probe = config["configurable"]["probe"]
    probe.streaming.set()
    model = SlowChatModel(messages=iter([" ".join(f"w{i}" for i in range(100))]))
    try:
        reply = await model.ainvoke(state["messages"], config)
    except asyncio.CancelledError:
        probe.cancelled.set()
        raise
    return {"messages": [reply]}


slow = single_node_graph("slow", slow_node)


async def private_thoughts_node(state: MessagesState, config: RunnableConfig) -> Update:
    """A model tagged "nostream" (e.g. a router) thinks first; only the second one speaks."""
    await say("hidden routing thoughts").with_config(tags=["nostream"]).ainvoke(state["messages"])
    reply = await say("visible answer").ainvoke(state["messages"], config)
    return {"messages": [reply]}


private_thoughts = single_node_graph("think", private_thoughts_node)


# --- human in the loop: a draft, then a question (interrupt), then the continuation -----------

APPROVAL_QUESTION = {"question": "Send the report?", "choices": ["yes", "no"]}


async def draft_node(state: MessagesState, config: RunnableConfig) -> Update:
    reply = await say("Draft ready.").ainvoke(state["messages"], config)
    return {"messages": [reply]}


async def approve_node(state: MessagesState, config: RunnableConfig) -> Update:
    decision = interrupt(APPROVAL_QUESTION)  # the node runs again from here once answered
    reply = await say(f" Sent: {decision}.").ainvoke(state["messages"], config)
    return {"messages": [reply]}


def build_approval() -> CompiledStateGraph[Any]:
    """Compiled without a checkpointer: dari gives each answer one."""
    graph = StateGraph(MessagesState)
    graph.add_node("draft", draft_node)
    graph.add_node("approve", approve_node)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "approve")
    graph.add_edge("approve", END)
    return graph.compile()


approval = build_approval()
APPROVAL_DRAFT = "Draft ready."


# --- metered: models that reason, report usage and say why they stopped ----------------------


class MeteredChatModel(GenericFakeChatModel):
    """Streams like ChatOpenAI does: its reasoning first (``reasoning_content`` chunks, as
    OpenAI-compatible integrations give it), then the text word by word, then a last chunk
    with ``usage_metadata`` and ``response_metadata.finish_reason``."""

    reasoning: list[str] = Field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        pieces = [
            AIMessageChunk(content="", additional_kwargs={"reasoning_content": thought})
            for thought in self.reasoning
        ]
        pieces += [AIMessageChunk(content=t) for t in re.split(r"(\s)", str(next(self.messages)))]
        metadata = {"finish_reason": self.finish_reason} if self.finish_reason else {}
        pieces.append(
            AIMessageChunk(
                content="",
                usage_metadata=self.usage,  # type: ignore[arg-type]
                response_metadata=metadata,
                chunk_position="last",
            )
        )
        for message in pieces:
            chunk = ChatGenerationChunk(message=message)
            if run_manager is not None:
                await run_manager.on_llm_new_token(str(message.content), chunk=chunk)
            yield chunk


def tokens(prompt: int, completion: int, reasoning: int | None = None) -> dict[str, Any]:
    """LangChain's usage_metadata."""
    usage: dict[str, Any] = {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if reasoning is not None:
        usage["output_token_details"] = {"reasoning": reasoning}
    return usage


METERED_REASONING = ["Let me ", "count. "]
METERED_ANSWER = "The answer is 42."


async def cut_off_node(state: MessagesState, config: RunnableConfig) -> Update:
    """Reasons, answers, and hits its token limit."""
    model = MeteredChatModel(
        messages=iter([METERED_ANSWER]),
        reasoning=METERED_REASONING,
        usage=tokens(12, 7, reasoning=3),
        finish_reason="length",
    )
    return {"messages": [await model.ainvoke(state["messages"], config)]}


metered = single_node_graph("think", cut_off_node)


async def route_node(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
    """A hidden router: it costs tokens and hits its own limit, which says nothing about the
    answer."""
    router = MeteredChatModel(messages=iter(["reply"]), usage=tokens(5, 1), finish_reason="length")
    await router.with_config(tags=["nostream"]).ainvoke(state["messages"], config)
    return {}


async def reply_node(state: MessagesState, config: RunnableConfig) -> Update:
    model = MeteredChatModel(messages=iter(["Done."]), usage=tokens(20, 2), finish_reason="stop")
    return {"messages": [await model.ainvoke(state["messages"], config)]}


def build_metered_team() -> CompiledStateGraph[Any]:
    graph = StateGraph(MessagesState)
    graph.add_node("route", route_node)
    graph.add_node("reply", reply_node)
    graph.add_edge(START, "route")
    graph.add_edge("route", "reply")
    graph.add_edge("reply", END)
    return graph.compile()


metered_team = build_metered_team()
