"""The ``langgraph`` backend with real StateGraphs whose fake chat models stream token by token."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk

from dari.agents.base import AgentEvent, Finish, HistoryMessage, Reasoning, Step, Usage
from dari.agents.langgraph import LangGraphBackend, chunk_text, reasoning_text, usage_of
from dari.settings import AgentConfig, ProjectConfig, Settings
from tests.backends.context import RecordingContext, collect, make_request
from tests.backends.graphs import (
    METERED_ANSWER,
    METERED_REASONING,
    SUPERVISOR_ANSWER,
    Probe,
    tokens,
)

Factory = Callable[..., Awaitable[LangGraphBackend]]
RED_DOT = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture
async def make_backend() -> AsyncIterator[Factory]:
    started: list[LangGraphBackend] = []

    async def factory(graph: str, **options: Any) -> LangGraphBackend:
        options = {"entrypoint": f"tests.backends.graphs:{graph}", **options}
        config = AgentConfig(name="assistant", backend="langgraph", options=options)
        settings = Settings(projects=[ProjectConfig(id="p1", agents=[config])])
        backend = LangGraphBackend(settings.projects[0].agents[0], settings)
        await backend.start()
        started.append(backend)
        return backend

    yield factory
    for backend in started:
        await backend.aclose()


def text(events: list[AgentEvent]) -> str:
    return "".join(event for event in events if isinstance(event, str))


def steps(events: list[AgentEvent]) -> list[tuple[str, str, str]]:
    return [(e.name, e.content, e.state) for e in events if isinstance(e, Step)]


async def answer(
    backend: LangGraphBackend, message: str = "hello", **request: Any
) -> list[AgentEvent]:
    return await collect(backend.stream(make_request(message, **request), RecordingContext()))


# --- pieces, input, config ----------------------------------------------------------------


async def test_model_tokens_become_pieces_between_node_steps(make_backend: Factory) -> None:
    backend = await make_backend("chat")

    events = await answer(backend, "hello", thread_id="t1")

    # GenericFakeChatModel streams words and the whitespace between them as separate tokens.
    tokens = re.split(r"(\s)", "1 messages (human) in thread t1 with 0 images: hello")
    assert events == [Step("chat", "chat", "started"), *tokens, Step("chat", "chat", "finished")]
    assert len(tokens) == 19


async def test_history_and_images_reach_the_graph_as_messages(make_backend: Factory) -> None:
    backend = await make_backend("chat")
    history = [
        HistoryMessage("user", "a", [RED_DOT]),
        HistoryMessage("assistant", "b"),
        HistoryMessage("report", "c"),
    ]

    events = await answer(backend, "look", history=history, images=[RED_DOT, RED_DOT])

    assert text(events) == "4 messages (human ai ai human) in thread main with 2 images: look"


async def test_reports_can_go_as_system_messages(make_backend: Factory) -> None:
    backend = await make_backend("chat", report_role="system")
    events = await answer(backend, "x", history=[HistoryMessage("report", "done")])
    assert text(events).startswith("2 messages (system human)")


async def test_checkpointer_mode_sends_only_the_new_message(make_backend: Factory) -> None:
    backend = await make_backend("chat_with_memory", history="checkpointer")
    ignored = [HistoryMessage("user", "the gateway's copy"), HistoryMessage("assistant", "-")]

    first = await answer(backend, "one", thread_id="a", history=ignored)
    second = await answer(backend, "two", thread_id="a", history=ignored)
    other = await answer(backend, "three", thread_id="b")

    assert text(first) == "1 messages (human) in thread a with 0 images: one"
    # The graph's own checkpointer, keyed by thread_id, remembers the first exchange.
    assert text(second) == "3 messages (human ai human) in thread a with 0 images: two"
    assert text(other) == "1 messages (human) in thread b with 0 images: three"


async def test_thread_id_template(make_backend: Factory) -> None:
    backend = await make_backend("chat", thread_id_template="{project_id}/{agent_name}/{thread_id}")
    events = await answer(backend, "x", thread_id="t7")
    assert "in thread p1/assistant/t7 " in text(events)


async def test_async_factory_entrypoint(make_backend: Factory) -> None:
    backend = await make_backend("chat_async_factory")
    assert text(await answer(backend, "hi")).endswith(": hi")


# --- supervisor: node and tool steps -------------------------------------------------------


async def test_supervisor_routes_and_every_node_passed_is_a_step(make_backend: Factory) -> None:
    backend = await make_backend(
        "supervisor",
        step_labels={
            "analyst": "데이터 분석 중...",
            "writer": {"started": "보고서 작성 중...", "finished": "보고서 완료"},
            "lookup_sales": "매출 조회 중...",
        },
    )

    events = await answer(backend, "분기 보고서를 써줘")

    assert text(events) == SUPERVISOR_ANSWER
    assert steps(events) == [
        ("supervisor", "supervisor", "started"),
        ("supervisor", "supervisor", "finished"),
        ("analyst", "데이터 분석 중...", "started"),
        ("lookup_sales", "매출 조회 중...", "started"),
        ("lookup_sales", "매출 조회 중...", "finished"),
        ("analyst", "데이터 분석 중...", "finished"),
        ("supervisor", "supervisor", "started"),
        ("supervisor", "supervisor", "finished"),
        ("writer", "보고서 작성 중...", "started"),
        ("writer", "보고서 완료", "finished"),
        ("supervisor", "supervisor", "started"),
        ("supervisor", "supervisor", "finished"),
    ]
    # Each member's tokens stream inside its own step.
    analyst_end = events.index(Step("analyst", "데이터 분석 중...", "finished"))
    writer_start = events.index(Step("writer", "보고서 작성 중...", "started"))
    assert text(events[:analyst_end]) == "Sales Q3: +12%."
    assert text(events[writer_start:]) == "Report: sales are up."


async def test_stream_nodes_and_hide_steps(make_backend: Factory) -> None:
    backend = await make_backend(
        "supervisor", stream_nodes=["writer"], hide_steps=["supervisor", "lookup_sales"]
    )
    events = await answer(backend)
    assert text(events) == "Report: sales are up."
    assert [(name, state) for name, _, state in steps(events)] == [
        ("analyst", "started"),
        ("analyst", "finished"),
        ("writer", "started"),
        ("writer", "finished"),
    ]


async def test_only_the_outer_graphs_nodes_are_steps(make_backend: Factory) -> None:
    backend = await make_backend("nested", stream_nodes=["team"])
    events = await answer(backend, "hi")
    assert steps(events) == [("team", "team", "started"), ("team", "team", "finished")]
    assert text(events) == "1 messages (human) in thread main with 0 images: hi"


async def test_models_tagged_nostream_stay_out_of_the_answer(make_backend: Factory) -> None:
    backend = await make_backend("private_thoughts")
    assert text(await answer(backend)) == "visible answer"


async def test_graph_without_a_streaming_model_answers_with_its_last_message(
    make_backend: Factory,
) -> None:
    backend = await make_backend("silent")
    events = await answer(backend)
    assert events == [
        Step("canned", "canned", "started"),
        Step("canned", "canned", "finished"),
        "A canned answer, no model involved.",
    ]


# --- delegation, failure, cancellation ----------------------------------------------------


async def test_nodes_can_delegate_through_the_context(make_backend: Factory) -> None:
    backend = await make_backend("delegating")
    ctx = RecordingContext()
    events = await collect(backend.stream(make_request("find sources"), ctx))
    assert ctx.delegations == [("researcher", "find sources")]
    assert text(events) == "Handed over as t-1."


async def test_graph_errors_propagate(make_backend: Factory) -> None:
    backend = await make_backend("failing")
    seen: list[AgentEvent] = []
    with pytest.raises(RuntimeError, match="the graph broke"):
        await collect(backend.stream(make_request(), RecordingContext()), seen)
    assert seen == [Step("explode", "explode", "started")]


async def test_cancelling_the_answer_stops_the_graph(make_backend: Factory) -> None:
    probe = Probe()
    backend = await make_backend("slow", configurable={"probe": probe})
    first = asyncio.Event()
    seen: list[AgentEvent] = []

    async def run() -> None:
        async for event in backend.stream(make_request(), RecordingContext()):
            seen.append(event)
            if isinstance(event, str):
                first.set()

    task = asyncio.create_task(run())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(probe.cancelled.wait(), 5)
    assert len(text(seen)) < len(" ".join(f"w{i}" for i in range(100)))


async def test_closing_the_stream_between_pieces_stops_the_graph(make_backend: Factory) -> None:
    # What the runner does when it is cancelled while relaying a piece.
    probe = Probe()
    backend = await make_backend("slow", configurable={"probe": probe})
    events = backend.stream(make_request(), RecordingContext())
    while not isinstance(await anext(events), str):
        pass
    await events.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(probe.cancelled.wait(), 5)


# --- start-up and chunk text --------------------------------------------------------------


async def test_bad_options_fail_at_start(make_backend: Factory) -> None:
    with pytest.raises(ValueError, match="must be a compiled graph"):
        await make_backend("SUPERVISOR_ANSWER")
    with pytest.raises(ValueError, match="histroy"):
        await make_backend("chat", histroy="checkpointer")
    with pytest.raises(ValueError, match="history"):
        await make_backend("chat", history="server")
    with pytest.raises(ValueError, match="thread_id_template"):
        await make_backend("chat", thread_id_template="{user}/{thread_id}")


def test_chunk_text_joins_text_parts_only() -> None:
    chunk = AIMessageChunk(
        content=[
            {"type": "text", "text": "Hel", "index": 0},
            {"type": "tool_use", "partial_json": '{"q":', "index": 1},
            "lo",
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "!"},
        ]
    )
    assert chunk_text(chunk) == "Hello!"
    assert chunk_text(AIMessageChunk(content="plain")) == "plain"
    assert chunk_text(None) == ""


# --- reasoning, usage, how it ended ---------------------------------------------------------


async def test_reasoning_usage_and_finish_come_from_the_models_chunks(
    make_backend: Factory,
) -> None:
    backend = await make_backend("metered")

    events = await answer(backend)

    assert events == [
        Step("think", "think", "started"),
        *[Reasoning(thought) for thought in METERED_REASONING],
        *re.split(r"(\s)", METERED_ANSWER),
        Usage(prompt_tokens=12, completion_tokens=7, total_tokens=19, reasoning_tokens=3),
        Finish("length"),
        Step("think", "think", "finished"),
    ]


async def test_every_model_call_is_paid_for_but_only_an_answering_one_says_how_it_ended(
    make_backend: Factory,
) -> None:
    backend = await make_backend("metered_team")

    events = await answer(backend)

    assert text(events) == "Done."
    # The hidden router hit its limit too: that is not why the answer ended.
    assert [e for e in events if isinstance(e, (Usage, Finish))] == [
        Usage(prompt_tokens=5, completion_tokens=1, total_tokens=6),
        Usage(prompt_tokens=20, completion_tokens=2, total_tokens=22),
        Finish("stop"),
    ]


def test_reasoning_text_reads_reasoning_content_and_reasoning_parts() -> None:
    assert (
        reasoning_text(AIMessageChunk(content="x", additional_kwargs={"reasoning_content": "a"}))
        == "a"
    )
    parts: list[str | dict[str, Any]] = [
        {"type": "reasoning", "reasoning": "b"},
        {"type": "text", "text": "x"},
        {"type": "thinking", "thinking": "c"},
    ]
    assert reasoning_text(AIMessageChunk(content=parts)) == "bc"
    assert chunk_text(AIMessageChunk(content=parts)) == "x"


def test_usage_of_reads_langchains_usage_metadata_and_ignores_what_it_cannot() -> None:
    assert usage_of(tokens(3, 4)) == Usage(3, 4, 7)
    assert usage_of(tokens(3, 4, reasoning=2)) == Usage(3, 4, 7, reasoning_tokens=2)
    assert usage_of(None) is None
    assert usage_of({"input_tokens": "many"}) is None
