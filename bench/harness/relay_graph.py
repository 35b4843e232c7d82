"""The LangGraph relay of scenario R: a graph of one node calling LangChain's ``ChatOpenAI`` on
the scenario's upstream (``BENCH_UPSTREAM_URL``), as a LangGraph user would write it. dari
serves it with its ``langgraph`` backend (entrypoint ``harness.relay_graph:build``)."""

from __future__ import annotations

import os
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph


def build() -> CompiledStateGraph[Any]:
    model = ChatOpenAI(
        base_url=os.environ["BENCH_UPSTREAM_URL"],
        api_key="bench",  # type: ignore[arg-type]
        model="bench",
        streaming=True,
        stream_usage=True,  # as dari's openai backend and the FastAPI baseline ask
        timeout=60,
        max_retries=0,
    )

    async def call_model(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"], config)]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    return graph.compile()
