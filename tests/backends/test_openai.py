"""The ``openai`` backend against a local chat-completions server that speaks the real format."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from dari.agents.base import (
    AgentEvent,
    Finish,
    HistoryMessage,
    Reasoning,
    Step,
    ToolUpdate,
    Usage,
)
from dari.agents.openai import MAX_TOOL_ROUNDS, OpenAIBackend
from dari.protocol.errors import AgentFailed, DariError, ErrorCode
from dari.settings import AgentConfig, ProjectConfig, Settings
from tests.backends.context import (
    RecordingContext,
    collect,
    make_request,
    tool_updates,
    without_tools,
)
from tests.backends.fake_openai import FakeOpenAI, Reply, ToolCall, think
from tests.backends.recorded import TOOL_CALLS

Factory = Callable[..., Awaitable[OpenAIBackend]]
RED_DOT = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
RESEARCHER = AgentConfig(name="researcher", description="Finds facts")


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture(params=["aiohttp", "httpx"])
async def make_backend(
    upstream: FakeOpenAI, request: pytest.FixtureRequest
) -> AsyncIterator[Factory]:
    """Start an ``openai`` agent named "assistant" in project p1, beside ``others``; every test
    runs on both HTTP libraries the backend can read with (``http_client``)."""
    started: list[OpenAIBackend] = []

    async def factory(
        *, can_delegate: bool = False, others: tuple[AgentConfig, ...] = (), **options: Any
    ) -> OpenAIBackend:
        options = {
            "base_url": upstream.base_url,
            "model": "fake-model",
            "http_client": request.param,
            **options,
        }
        config = AgentConfig(
            name="assistant", backend="openai", can_delegate=can_delegate, options=options
        )
        settings = Settings(projects=[ProjectConfig(id="p1", agents=[config, *others])])
        backend = OpenAIBackend(settings.projects[0].agents[0], settings)
        await backend.start()
        started.append(backend)
        return backend

    yield factory
    for backend in started:
        await backend.aclose()


async def fail(backend: OpenAIBackend, **request: Any) -> tuple[list[AgentEvent], AgentFailed]:
    """Run a chat that must fail; return what streamed before, and the failure."""
    seen: list[AgentEvent] = []
    with pytest.raises(AgentFailed) as failure:
        await collect(backend.stream(make_request(**request), RecordingContext()), seen)
    assert failure.value.code == ErrorCode.AGENT_FAILED
    return seen, failure.value


# --- streaming and the request ------------------------------------------------------------


async def test_pieces_stream_in_order_as_sent(make_backend: Factory, upstream: FakeOpenAI) -> None:
    upstream.script(Reply(pieces=["안녕", "하세요", ", ", "world", "!"]))
    backend = await make_backend(system_prompt="Be brief.")

    events = await collect(backend.stream(make_request("hi"), RecordingContext()))

    assert events == ["안녕", "하세요", ", ", "world", "!"]
    body = upstream.requests[0]
    assert body["model"] == "fake-model" and body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    # Unset options are not sent at all: some local servers refuse unknown or null fields.
    assert "tools" not in body and "temperature" not in body and "max_tokens" not in body


async def test_pieces_arrive_while_upstream_is_still_streaming(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=["first ", "second"], stall_after=1))
    backend = await make_backend(timeout_s=5)
    events = backend.stream(make_request(), RecordingContext())
    try:
        # The second piece never comes, so the first must not wait for it.
        assert await asyncio.wait_for(anext(events), 5) == "first "
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    await upstream.wait_hangup()


async def test_sampling_options_are_sent(make_backend: Factory, upstream: FakeOpenAI) -> None:
    backend = await make_backend(temperature=0.2, max_tokens=64)
    await collect(backend.stream(make_request("one two"), RecordingContext()))
    body = upstream.requests[0]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 64


async def test_history_and_images_become_messages(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    backend = await make_backend()
    history = [
        HistoryMessage("user", "look at this", [RED_DOT]),
        HistoryMessage("assistant", "a red dot"),
        HistoryMessage("report", "researcher found 3 sources"),
    ]
    images = [RED_DOT, "https://example.com/cat.jpg"]

    events = await collect(
        backend.stream(
            make_request("and these?", images=images, history=history), RecordingContext()
        )
    )

    assert "".join(e for e in events if isinstance(e, str)) == "and these?"
    assert upstream.requests[0]["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look at this"},
                {"type": "image_url", "image_url": {"url": RED_DOT}},
            ],
        },
        {"role": "assistant", "content": "a red dot"},
        {
            "role": "assistant",
            "content": "[Report from a delegated task]\nresearcher found 3 sources",
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and these?"},
                {"type": "image_url", "image_url": {"url": RED_DOT}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        },
    ]


async def test_reports_can_go_as_system_messages(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    backend = await make_backend(report_role="system")
    history = [HistoryMessage("report", "done")]
    await collect(backend.stream(make_request(history=history), RecordingContext()))
    assert upstream.requests[0]["messages"][0] == {
        "role": "system",
        "content": "[Report from a delegated task]\ndone",
    }


@pytest.mark.parametrize(("limit", "kept"), [(0, []), (1, ["b"]), (5, ["a", "b"])])
async def test_history_limit_keeps_the_newest(
    make_backend: Factory, upstream: FakeOpenAI, limit: int, kept: list[str]
) -> None:
    backend = await make_backend(history_limit=limit)
    history = [HistoryMessage("user", "a"), HistoryMessage("assistant", "b")]
    await collect(backend.stream(make_request("c", history=history), RecordingContext()))
    sent = [m["content"] for m in upstream.requests[0]["messages"]]
    assert sent == [*kept, "c"]


async def test_a_trailing_usage_chunk_without_choices_is_fine(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    # Servers asked for usage end with a chunk whose choices list is empty.
    upstream.script(Reply(pieces=["ok"], finish_reason="length", usage=True))
    backend = await make_backend()
    assert await collect(backend.stream(make_request(), RecordingContext())) == [
        "ok",
        Usage(prompt_tokens=3, completion_tokens=1, total_tokens=9),
        Finish("length"),
    ]


async def test_reasoning_usage_and_finish_are_events_in_upstream_order(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 9,
        "total_tokens": 14,
        "completion_tokens_details": {"reasoning_tokens": 6},
    }
    upstream.script(
        Reply(
            pieces=[think("Hmm, "), think("a greeting.", key="reasoning"), "Hi", think("!"), "!"],
            finish_reason="content_filter",
            usage=usage,
            empty_first=True,
        )
    )
    backend = await make_backend()

    events = await collect(backend.stream(make_request(), RecordingContext()))

    assert upstream.requests[0]["stream_options"] == {"include_usage": True}
    assert events == [
        Reasoning("Hmm, "),
        Reasoning("a greeting."),
        "Hi",
        Reasoning("!"),
        "!",
        Usage(prompt_tokens=5, completion_tokens=9, total_tokens=14, reasoning_tokens=6),
        Finish("content_filter"),
    ]


async def test_a_plain_stop_yields_no_finish_event(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=["done"]))
    backend = await make_backend()
    assert await collect(backend.stream(make_request(), RecordingContext())) == ["done"]


async def test_include_usage_can_be_turned_off(make_backend: Factory, upstream: FakeOpenAI) -> None:
    backend = await make_backend(include_usage=False)
    await collect(backend.stream(make_request(), RecordingContext()))
    assert "stream_options" not in upstream.requests[0]


async def test_tool_calls_cut_off_by_the_token_limit_are_not_run(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(
        Reply(
            pieces=["Let me "],
            tool_calls=[ToolCall("delegate_task", {"agent_name": "researcher", "task": "x"})],
            finish_reason="length",
        )
    )
    backend = await make_backend(can_delegate=True, others=(RESEARCHER,))
    ctx = RecordingContext()
    events = await collect(backend.stream(make_request(), ctx))
    calls = [event for event in events if isinstance(event, ToolUpdate)]
    assert [event for event in events if not isinstance(event, ToolUpdate)] == [
        "Let me ",
        Finish("length"),
    ]
    # The call is shown as the model wrote it, then as not run.
    assert [call.state for call in calls] == ["started", *["arguments"] * 3, "failed"]
    assert calls[-1].error == "not run: the model was cut off (length)"
    assert ctx.delegations == [] and len(upstream.requests) == 1


# --- keys and options ---------------------------------------------------------------------


async def test_key_comes_from_the_named_env_var(
    make_backend: Factory, upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DARI_TEST_KEY", "sk-test-123")
    backend = await make_backend(api_key_env="DARI_TEST_KEY")
    await collect(backend.stream(make_request(), RecordingContext()))
    assert upstream.headers[0]["authorization"] == "Bearer sk-test-123"


async def test_without_api_key_env_a_placeholder_key_is_sent(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    backend = await make_backend()
    await collect(backend.stream(make_request(), RecordingContext()))
    assert upstream.headers[0]["authorization"] == "Bearer not-needed"


async def test_missing_key_env_var_fails_at_start(
    make_backend: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DARI_TEST_MISSING_KEY", raising=False)
    with pytest.raises(ValueError, match=r"DARI_TEST_MISSING_KEY.*is not set"):
        await make_backend(api_key_env="DARI_TEST_MISSING_KEY")


async def test_unknown_or_missing_options_fail_at_start(make_backend: Factory) -> None:
    with pytest.raises(ValueError, match="base_ur1"):
        await make_backend(base_ur1="http://typo")
    with pytest.raises(ValueError, match="model"):
        await make_backend(model="")


# --- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "upstream returned 401 Unauthorized"),
        (429, "upstream returned 429 Too Many Requests"),
        (500, "upstream returned 500 Internal Server Error"),
        (503, "upstream returned 503 Service Unavailable"),
        (404, "upstream returned 404 Not Found: fake upstream says Not Found"),
    ],
)
async def test_error_status_fails_once_without_retry(
    make_backend: Factory,
    upstream: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    message: str,
) -> None:
    monkeypatch.setenv("DARI_TEST_KEY", "sk-secret-456")
    upstream.script(Reply(status=status))
    backend = await make_backend(api_key_env="DARI_TEST_KEY")

    seen, failure = await fail(backend)

    assert seen == [] and failure.message == message
    assert "sk-secret" not in failure.message and "127.0.0.1" not in failure.message
    assert len(upstream.requests) == 1  # max_retries defaults to 0


async def test_max_retries_retries_before_streaming(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(status=503), Reply(pieces=["ok"]))
    backend = await make_backend(max_retries=1)
    assert await collect(backend.stream(make_request(), RecordingContext())) == ["ok"]
    assert len(upstream.requests) == 2


async def test_connection_dropped_mid_stream_fails_after_the_pieces_sent(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=["one ", "two ", "three"], break_after=2))
    backend = await make_backend()
    seen, failure = await fail(backend)
    assert seen == ["one ", "two "]
    assert failure.message == "upstream connection broke off mid-answer"


async def test_silent_upstream_mid_stream_is_a_read_timeout(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=["one ", "two"], stall_after=1))
    backend = await make_backend(timeout_s=0.3)
    seen, failure = await fail(backend)
    assert seen == ["one "]
    assert failure.message == "upstream timed out (no data for 0.3s)"
    await upstream.wait_hangup()  # and the stalled response was closed


async def test_silent_upstream_before_headers_is_a_timeout(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(stall_headers=True))
    backend = await make_backend(timeout_s=0.3)
    seen, failure = await fail(backend)
    assert seen == [] and failure.message == "upstream timed out (no data for 0.3s)"


async def test_unreachable_upstream(make_backend: Factory) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = await make_backend(base_url=f"http://127.0.0.1:{port}/v1")
    seen, failure = await fail(backend)
    assert seen == [] and failure.message == "could not connect to upstream"


async def test_the_proxy_of_the_environment_is_used(
    make_backend: Factory, upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake server answers whatever URL it is asked for, so it stands in for the proxy too:
    # a request that reaches it for a host that does not resolve went through the proxy.
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{upstream.port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{upstream.port}")
    backend = await make_backend(base_url="http://model.invalid/v1")
    seen = await collect(backend.stream(make_request(message="via the proxy"), RecordingContext()))
    assert "".join(str(piece) for piece in seen) == "via the proxy"
    assert upstream.targets == ["http://model.invalid/v1/chat/completions"]


async def test_error_event_inside_the_stream(make_backend: Factory, upstream: FakeOpenAI) -> None:
    upstream.script(Reply(pieces=["par", "tial"], error_event="model overloaded"))
    backend = await make_backend()
    seen, failure = await fail(backend)
    assert seen == ["par", "tial"] and failure.message == "upstream error: model overloaded"


async def test_body_ending_without_a_finish_reason_is_a_failure(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=["cut"], omit_finish=True))
    backend = await make_backend()
    seen, failure = await fail(backend)
    assert seen == ["cut"]
    assert failure.message == "upstream stream ended before the answer was complete"


@pytest.mark.parametrize(
    "body",
    [
        [
            b'data: {"choices": [{"delta": {"content": "ok"}, "finish_reason": null}]}\n\n',
            b"data: {oops\n\n",
        ],
        [
            b'data: {"choices": [{"delta": {"content": "ok"}, "finish_reason": null}]}\n\n',
            b'data: {"choices": 7}\n\n',
        ],
    ],
)
async def test_malformed_data_fails_after_the_pieces_sent(
    make_backend: Factory, upstream: FakeOpenAI, body: list[bytes]
) -> None:
    upstream.script(Reply(raw=body))
    backend = await make_backend()
    seen, failure = await fail(backend)
    assert seen == ["ok"] and failure.message == "upstream sent malformed data"


async def test_backend_works_again_after_a_failure(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=["a", "b"], break_after=1), Reply(pieces=["fine"]))
    backend = await make_backend()
    await fail(backend)
    assert await collect(backend.stream(make_request(), RecordingContext())) == ["fine"]


# --- cancellation -------------------------------------------------------------------------


async def test_cancelling_the_answer_closes_the_upstream_connection(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=[f"w{i} " for i in range(50)], delay_s=0.05))
    backend = await make_backend()
    first = asyncio.Event()
    seen: list[AgentEvent] = []

    async def answer() -> None:  # what the runner does with a backend's stream
        async for event in backend.stream(make_request(), RecordingContext()):
            seen.append(event)
            first.set()

    task = asyncio.create_task(answer())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await upstream.wait_hangup()
    assert upstream.hangups == 1 and 1 <= len(seen) < 50


async def test_cancelling_between_pieces_closes_the_upstream_connection(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    # The runner may be cancelled while it relays a piece; it then closes the backend's stream.
    upstream.script(Reply(pieces=[f"w{i} " for i in range(50)], delay_s=0.05))
    backend = await make_backend()
    first = asyncio.Event()

    async def answer() -> None:
        events = backend.stream(make_request(), RecordingContext())
        try:
            async for _ in events:
                first.set()
                await asyncio.Event().wait()  # a relay that never finishes
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    task = asyncio.create_task(answer())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await upstream.wait_hangup()


# --- delegation ---------------------------------------------------------------------------


async def test_a_recorded_stream_with_two_tool_calls_runs_both(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    # Text, then two calls in fragments, the finish, a usage-only chunk: as OpenAI streams it.
    upstream.script(Reply(raw=TOOL_CALLS), Reply(pieces=["Both are on it."]))
    writer = AgentConfig(name="w")
    backend = await make_backend(can_delegate=True, others=(RESEARCHER, writer))
    ctx = RecordingContext()

    events = await collect(backend.stream(make_request(), ctx))

    assert ctx.delegations == [("researcher", "조사"), ("w", "t")]
    assert [e for e in events if isinstance(e, str)] == [
        "잠시만요, ",
        "알아볼게요.",
        "Both are on it.",
    ]
    replayed = upstream.requests[1]["messages"][-3]
    assert replayed["content"] == "잠시만요, 알아볼게요."
    assert [call["id"] for call in replayed["tool_calls"]] == ["call_a", "call_b"]


def delegate_call(agent_name: str, task: str, call_id: str = "call_1") -> ToolCall:
    return ToolCall("delegate_task", {"agent_name": agent_name, "task": task}, id=call_id)


async def test_delegation_runs_the_tool_and_the_model_continues(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(
        Reply(pieces=["Let me ask. "], tool_calls=[delegate_call("researcher", "find 3 sources")]),
        Reply(pieces=["The researcher ", "is on it."]),
    )
    backend = await make_backend(can_delegate=True, others=(RESEARCHER,))
    ctx = RecordingContext()

    events = without_tools(await collect(backend.stream(make_request("research X"), ctx)))

    assert ctx.delegations == [("researcher", "find 3 sources")]
    assert events == [
        "Let me ask. ",
        Step("delegate_task", "Delegating to researcher: find 3 sources", "started"),
        Step("delegate_task", "Delegated to researcher (task t-1)", "finished"),
        "The researcher ",
        "is on it.",
    ]
    first, second = upstream.requests
    tool = first["tools"][0]
    assert tool["type"] == "function" and tool["function"]["name"] == "delegate_task"
    parameters = tool["function"]["parameters"]
    assert parameters["required"] == ["agent_name", "task"]
    assert parameters["properties"]["agent_name"]["enum"] == ["researcher"]
    assert "- researcher: Finds facts" in tool["function"]["description"]
    assert "tool_choice" not in first
    assert second["messages"][-2:] == [
        {
            "role": "assistant",
            "content": "Let me ask. ",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "delegate_task",
                        "arguments": json.dumps(
                            {"agent_name": "researcher", "task": "find 3 sources"}
                        ),
                    },
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": json.dumps(
                {"status": "delegated", "task_id": "t-1", "agent_name": "researcher"}
            ),
        },
    ]


async def test_refused_delegation_is_told_to_the_model(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(
        Reply(tool_calls=[delegate_call("researcher", "dig")]),
        Reply(pieces=["Sorry, it is stopped."]),
    )
    backend = await make_backend(can_delegate=True, others=(RESEARCHER,))
    ctx = RecordingContext(refuse=DariError("agent 'researcher' is stopped"))

    everything = await collect(backend.stream(make_request(), ctx))
    events = without_tools(everything)

    # The call is shown failed, with the refusal the model is told.
    assert [(u.state, u.error) for u in tool_updates(everything)][-1] == (
        "failed",
        "agent 'researcher' is stopped",
    )
    assert ctx.delegations == [("researcher", "dig")]
    assert events[1:] == [
        Step(
            "delegate_task",
            "Could not delegate to researcher: agent 'researcher' is stopped",
            "finished",
        ),
        "Sorry, it is stopped.",
    ]
    tool_message = upstream.requests[1]["messages"][-1]
    assert json.loads(tool_message["content"]) == {"error": "agent 'researcher' is stopped"}
    # No text came before the call, so the assistant message carries only the call.
    assert upstream.requests[1]["messages"][-2]["content"] is None


async def test_malformed_tool_arguments_are_answered_without_delegating(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(
        Reply(tool_calls=[ToolCall("delegate_task", {"agent": "researcher"})]),
        Reply(tool_calls=[ToolCall("search_web", {"q": "x"}, id="call_2")]),
        Reply(pieces=["ok"]),
    )
    backend = await make_backend(can_delegate=True, others=(RESEARCHER,))
    ctx = RecordingContext()

    events = without_tools(await collect(backend.stream(make_request(), ctx)))

    assert events == ["ok"] and ctx.delegations == []
    errors = [
        json.loads(body["messages"][-1]["content"])["error"] for body in upstream.requests[1:]
    ]
    assert errors == [
        'expected arguments {"agent_name": string, "task": non-empty string}',
        "unknown tool 'search_web'",
    ]


async def test_tool_rounds_are_bounded(make_backend: Factory, upstream: FakeOpenAI) -> None:
    # A model that never stops calling the tool: after the last round it must answer in words.
    upstream.script(
        *(
            Reply(tool_calls=[delegate_call("researcher", f"task {i}")])
            for i in range(MAX_TOOL_ROUNDS)
        ),
        Reply(pieces=["Enough."], tool_calls=[delegate_call("researcher", "again")]),
    )
    backend = await make_backend(can_delegate=True, others=(RESEARCHER,))
    ctx = RecordingContext()

    events = without_tools(await collect(backend.stream(make_request(), ctx)))

    assert len(ctx.delegations) == MAX_TOOL_ROUNDS
    assert events[-1] == "Enough."
    assert len(upstream.requests) == MAX_TOOL_ROUNDS + 1
    assert [body.get("tool_choice") for body in upstream.requests] == [None] * MAX_TOOL_ROUNDS + [
        "none"
    ]


async def test_two_calls_in_one_turn_run_in_order(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    upstream.script(
        Reply(
            tool_calls=[delegate_call("researcher", "a", "c1"), delegate_call("writer", "b", "c2")]
        ),
        Reply(pieces=["Both started."]),
    )
    writer = AgentConfig(name="writer")
    backend = await make_backend(can_delegate=True, others=(RESEARCHER, writer))
    ctx = RecordingContext()

    await collect(backend.stream(make_request(), ctx))

    assert ctx.delegations == [("researcher", "a"), ("writer", "b")]
    tool_messages = upstream.requests[1]["messages"][-2:]
    assert [(m["role"], m["tool_call_id"]) for m in tool_messages] == [
        ("tool", "c1"),
        ("tool", "c2"),
    ]


async def test_delegates_option_picks_the_agents_offered(
    make_backend: Factory, upstream: FakeOpenAI
) -> None:
    writer = AgentConfig(name="writer")
    backend = await make_backend(
        can_delegate=True, others=(RESEARCHER, writer), delegates=["writer"]
    )
    await collect(backend.stream(make_request(), RecordingContext()))
    function = upstream.requests[0]["tools"][0]["function"]
    assert function["parameters"]["properties"]["agent_name"]["enum"] == ["writer"]
    assert "researcher" not in function["description"]


@pytest.mark.parametrize(
    "setup",
    [
        {"can_delegate": False, "others": (RESEARCHER,)},  # not allowed
        {"can_delegate": True},  # alone in its project
        {"can_delegate": True, "others": (RESEARCHER,), "delegates": []},  # turned off
    ],
)
async def test_no_tool_is_offered_without_someone_to_delegate_to(
    make_backend: Factory, upstream: FakeOpenAI, setup: dict[str, Any]
) -> None:
    backend = await make_backend(**setup)
    await collect(backend.stream(make_request(), RecordingContext()))
    assert "tools" not in upstream.requests[0]


async def test_agent_outside_the_settings_gets_a_generic_tool(upstream: FakeOpenAI) -> None:
    config = AgentConfig(
        name="loose", backend="openai", options={"base_url": upstream.base_url, "model": "m"}
    )
    backend = OpenAIBackend(config, Settings(projects=[]))
    await backend.start()
    try:
        await collect(backend.stream(make_request(), RecordingContext()))
    finally:
        await backend.aclose()
    agent_name = upstream.requests[0]["tools"][0]["function"]["parameters"]["properties"][
        "agent_name"
    ]
    assert agent_name == {"type": "string", "description": "The agent to hand it to."}


async def test_auto_reads_with_aiohttp_when_it_is_installed(upstream: FakeOpenAI) -> None:
    import aiohttp  # installed with the openai extra

    config = AgentConfig(
        name="assistant", backend="openai", options={"base_url": upstream.base_url, "model": "m"}
    )
    backend = OpenAIBackend(config, Settings(projects=[ProjectConfig(id="p1", agents=[config])]))
    await backend.start()
    try:
        assert backend.options.http_client == "auto"
        upstream.script(Reply(pieces=["Hello", " there"]))
        seen = await collect(backend.stream(make_request(), RecordingContext()))
        assert seen == ["Hello", " there"]
        client = backend._client._client  # type: ignore[union-attr]
        session = client._transport.client
        assert isinstance(session, aiohttp.ClientSession)  # the request went through aiohttp
    finally:
        await backend.aclose()
    assert session.closed
