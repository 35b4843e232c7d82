"""The AG-UI renderer: dari frames in, ag-ui-protocol events out, no sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from ag_ui.core import BaseEvent, Event, MessagesSnapshotEvent, RunAgentInput
from ag_ui_validate.pytest_plugin import assert_valid_agui
from pydantic import TypeAdapter

from dari.protocol import ag_ui
from dari.protocol.errors import ProtocolError
from dari.protocol.frames import ConversationKey, answer_frame

KEY = ConversationKey("p", "a", "t")
EVENTS: TypeAdapter[Any] = TypeAdapter(Event)


def f(kind: str, rid: str = "r1", **fields: Any) -> dict[str, Any]:
    return answer_frame(kind, KEY, rid, **fields)


def wire(events: list[BaseEvent]) -> list[dict[str, Any]]:
    """The events as sent, each parsed back by the package's own models."""
    out = []
    for event in events:
        data = orjson.loads(ag_ui.text(event))
        EVENTS.validate_python(data)
        assert ag_ui.sse(event) == f"data: {ag_ui.text(event)}\n\n"
        out.append(data)
    return out


def run(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stream = ag_ui.RunStream("t", "run-1", "r1")
    events = stream.begin()
    for frame in frames:
        events += stream.feed(frame)
    return wire(events)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_an_answer_is_one_run_with_one_text_message() -> None:
    events = run([f("start"), f("response", content="Hel"), f("response", content="lo"),
                  f("end", finish_reason="stop")])
    assert events == [
        {"type": "RUN_STARTED", "threadId": "t", "runId": "run-1"},
        {"type": "TEXT_MESSAGE_START", "messageId": "r1-answer", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "r1-answer", "delta": "Hel"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "r1-answer", "delta": "lo"},
        {"type": "TEXT_MESSAGE_END", "messageId": "r1-answer"},
        {
            "type": "RUN_FINISHED",
            "threadId": "t",
            "runId": "run-1",
            "result": {"requestId": "r1", "finishReason": "stop"},
            "outcome": {"type": "success"},
        },
    ]


def test_cancelled_is_a_cancelled_outcome_and_usage_is_reported() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8, "reasoning_tokens": 1}
    finished = run([f("response", content="a"), f("end", finish_reason="cancelled", usage=usage)])
    assert finished[-1]["outcome"] == {"type": "cancelled"}
    assert finished[-1]["usage"] == [
        {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8, "reasoningTokens": 1}
    ]


def test_an_error_ends_the_run_and_nothing_follows() -> None:
    error = {"type": "error", "code": "agent_failed", "message": "boom", "request_id": "r1"}
    events = run([f("response", content="a"), error, f("end", finish_reason="error")])
    assert types(events) == [
        "RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "RUN_ERROR"
    ]
    assert events[-1] == {"type": "RUN_ERROR", "message": "boom", "code": "agent_failed"}


def test_steps_are_balanced_the_way_the_verifier_wants() -> None:
    events = run([
        f("step", name="work", content="1", state="started"),
        f("step", name="work", content="2", state="started"),  # started again while running
        f("step", name="chart", content="done", state="finished"),  # never started
        f("step", name="open", content="...", state="started"),  # still open at the end
        f("end", finish_reason="stop"),
    ])
    steps = [(e["type"], e["stepName"]) for e in events if e["type"].startswith("STEP")]
    assert steps == [
        ("STEP_STARTED", "work"), ("STEP_FINISHED", "work"), ("STEP_STARTED", "work"),
        ("STEP_STARTED", "chart"), ("STEP_FINISHED", "chart"),
        ("STEP_STARTED", "open"),
        ("STEP_FINISHED", "open"), ("STEP_FINISHED", "work"),
    ]
    assert events[1]["metadata"] == {"content": "1"}


def test_reasoning_is_a_closed_span_before_text() -> None:
    events = run([f("reasoning", content="hmm"), f("response", content="A"),
                  f("end", finish_reason="stop")])
    assert types(events) == [
        "RUN_STARTED", "REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END", "REASONING_END", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END", "RUN_FINISHED",
    ]


def test_tool_calls() -> None:
    events = run([
        f("tool", tool_call_id="c1", name="search", state="started", arguments=""),
        f("tool", tool_call_id="c1", name="search", state="arguments", arguments='{"q":'),
        f("tool", tool_call_id="c1", name="search", state="finished", arguments='{"q":1}',
          result={"hits": 1}),
        f("tool", tool_call_id="c2", name="fetch", state="started"),
        f("end", finish_reason="stop"),
    ])
    tools = [e for e in events if e["type"].startswith("TOOL")]
    assert types(tools) == [
        "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS", "TOOL_CALL_END",
        "TOOL_CALL_RESULT", "TOOL_CALL_START", "TOOL_CALL_END",
    ]
    assert "".join(e["delta"] for e in tools if e["type"] == "TOOL_CALL_ARGS") == '{"q":1}'
    assert tools[4]["content"] == '{"hits":1}' and tools[0]["parentMessageId"] == "r1-answer"


def test_a_snapshot_sends_only_what_was_not_sent() -> None:
    events = run([f("response", content="ab"),
                  f("snapshot", content="abc", steps=[]), f("response", content="d")])
    assert "".join(e.get("delta", "") for e in events) == "abcd"


def test_reports_are_custom_events() -> None:
    report = {"type": "auto_report", "content": "done", "task_id": "t-1", "project_id": "p",
              "agent_name": "researcher", "thread_id": "t", "message_id": 3}
    event = run([report])[-1]
    assert event == {"type": "CUSTOM", "name": "dari.auto_report", "value": {
        "content": "done", "task_id": "t-1", "agent_name": "researcher", "project_id": "p",
        "thread_id": "t", "message_id": 3}}


def test_a_thread_is_consecutive_runs_and_opens_with_the_saved_messages() -> None:
    opening = MessagesSnapshotEvent(messages=[])
    thread = ag_ui.ThreadStream("t", opening)
    events: list[BaseEvent] = []
    for frame in [
        f("response", "r0", content="missed"),  # its start was not seen: history has it
        f("snapshot", "r1", content="so far", steps=[]),
        {"type": "error", "code": "rate_limited", "message": "slow down"},  # not the answer's
        f("response", "r1", content=" and more"),
        f("end", "r1", finish_reason="stop"),
        {"type": "auto_report", "task_id": "t-9", "content": "x", "project_id": "p"},
        f("start", "r2"),
        f("end", "r2", finish_reason="stop"),
        {"type": "error", "code": "queue_full", "message": "busy"},
    ]:
        events += thread.feed(frame)
    sent = wire(events)
    assert types(sent) == [
        "RUN_STARTED", "MESSAGES_SNAPSHOT", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
        "CUSTOM", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED",
        "RUN_STARTED", "CUSTOM", "RUN_FINISHED",
        "RUN_STARTED", "RUN_FINISHED",
        "RUN_STARTED", "RUN_ERROR",  # an error between runs fails a run of its own
    ]
    runs = [e["runId"] for e in sent if e["type"] == "RUN_STARTED"]
    assert runs[:3] == ["r1", "report-t-9", "r2"] and runs[3].startswith("refused-")
    assert_valid_agui(sent, max_warnings=0)


def test_messages_snapshot_leaves_out_answers_sent_as_events() -> None:
    history = [
        {"id": 1, "role": "user", "content": "q1", "request_id": "r1", "status": "complete"},
        {"id": 2, "role": "assistant", "content": "a1", "request_id": "r1",
         "status": "complete"},
        {"id": 3, "role": "report", "content": "rep", "request_id": "t-1", "status": "complete",
         "agent_name": "researcher"},
        {"id": 4, "role": "user", "content": "q2", "request_id": "r2", "status": "complete"},
        {"id": 5, "role": "assistant", "content": "partial", "request_id": "r2",
         "status": "streaming"},
        {"id": 6, "role": "user", "content": "q3", "request_id": "r3", "status": "complete"},
        {"id": 7, "role": "assistant", "content": "a3", "request_id": "r3",
         "status": "complete"},
    ]
    snapshot = wire([ag_ui.messages_snapshot(history, {"r3"})])[0]
    assert [(m["id"], m["role"], m["content"]) for m in snapshot["messages"]] == [
        ("user-1", "user", "q1"), ("r1-answer", "assistant", "a1"),
        ("report-3", "assistant", "rep"), ("user-4", "user", "q2"), ("user-6", "user", "q3"),
    ]


def run_input(messages: list[dict[str, Any]]) -> RunAgentInput:
    return ag_ui.parse_input(orjson.dumps({"threadId": "t", "runId": "r", "messages": messages}))


def test_the_last_user_message_is_the_input() -> None:
    text, images = ag_ui.user_input(run_input([
        {"id": "1", "role": "user", "content": "old"},
        {"id": "2", "role": "assistant", "content": "reply"},
        {"id": "3", "role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "data", "value": "iVBORw0KGgo=",
                                         "mimeType": "image/png"}},
            {"type": "image", "source": {"type": "url", "value": "https://example.com/a.png"}},
        ]},
    ]))
    assert text == "look"
    assert images == ["data:image/png;base64,iVBORw0KGgo=", "https://example.com/a.png"]


@pytest.mark.parametrize(
    "body",
    [b"{}", b"[]", b"nope", orjson.dumps({"threadId": "t", "runId": "r", "messages": [
        {"id": "1", "role": "assistant", "content": "no user"}]})],
)
def test_bad_inputs(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        ag_ui.user_input(ag_ui.parse_input(body))
