"""The AI SDK UI Message Stream renderer: dari frames in, chunks out, no sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from dari.protocol import ai_sdk
from dari.protocol.errors import ProtocolError
from dari.protocol.frames import ConversationKey, answer_frame

KEY = ConversationKey("p", "a", "t")


def f(kind: str, rid: str = "r1", **fields: Any) -> dict[str, Any]:
    return answer_frame(kind, KEY, rid, **fields)


def render(frames: list[dict[str, Any]], rid: str = "r1") -> list[dict[str, Any]]:
    stream = ai_sdk.AnswerStream(rid)
    return [chunk for frame in frames for chunk in stream.feed(frame)]


def types(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["type"] for c in chunks]


def test_an_answer_is_one_step_with_one_text_part() -> None:
    chunks = render(
        [f("start"), f("response", content="Hel"), f("response", content="lo"),
         f("end", finish_reason="stop")]
    )
    assert chunks == [
        {
            "type": "start",
            "messageId": "r1-answer",
            "messageMetadata": {
                "requestId": "r1", "projectId": "p", "agentName": "a", "threadId": "t"
            },
        },
        {"type": "start-step"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Hel"},
        {"type": "text-delta", "id": "text-1", "delta": "lo"},
        {"type": "text-end", "id": "text-1"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "stop",
            "messageMetadata": {"requestId": "r1", "finishReason": "stop"},
        },
    ]


def test_other_answers_frames_are_ignored_and_end_closes_the_stream() -> None:
    stream = ai_sdk.AnswerStream("r1")
    assert stream.feed(f("start", "r0")) == []
    assert stream.feed(f("response", "r0", content="x")) == []
    assert stream.feed({"type": "ack", "request_id": "r1"}) == []
    stream.feed(f("start"))
    stream.feed(f("end", finish_reason="stop"))
    assert stream.done
    assert stream.feed(f("response", content="late")) == []


def test_cancelled_ends_with_abort_and_no_finish() -> None:
    chunks = render([f("start"), f("response", content="a"), f("end", finish_reason="cancelled")])
    assert types(chunks)[-3:] == ["text-end", "finish-step", "abort"]
    assert "finish" not in types(chunks)


def test_a_chat_dropped_before_it_started_still_has_a_start() -> None:
    assert types(render([f("end", finish_reason="cancelled")])) == [
        "start", "start-step", "finish-step", "abort"
    ]


def test_error_then_finish_with_reason_error() -> None:
    error = {"type": "error", "code": "agent_failed", "message": "boom", "request_id": "r1"}
    chunks = render([f("start"), error, f("end", finish_reason="error")])
    assert {"type": "error", "errorText": "boom"} in chunks
    assert chunks[-1]["finishReason"] == "error"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("length", "length"), ("content_filter", "content-filter"),
     ("something_new", "other")],
)
def test_finish_reasons_map_to_the_sdks(reason: str, expected: str) -> None:
    assert render([f("end", finish_reason=reason)])[-1]["finishReason"] == expected


def test_usage_goes_into_the_finish_metadata() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8, "reasoning_tokens": 2}
    finish = render([f("end", finish_reason="stop", usage=usage)])[-1]
    assert finish["messageMetadata"]["usage"] == {
        "inputTokens": 3, "outputTokens": 5, "totalTokens": 8, "reasoningTokens": 2
    }


def test_a_snapshot_sends_only_what_was_not_sent() -> None:
    # Pieces logged before the snapshot (they are part of its text) are not sent twice.
    chunks = render(
        [f("response", content="ab"), f("snapshot", content="abc", steps=[]),
         f("response", content="d"), f("end", finish_reason="stop")]
    )
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "abcd"
    fresh = render([f("snapshot", content="abc", steps=[{"name": "s", "content": "x",
                                                           "state": "started"}])])
    assert types(fresh) == ["start", "start-step", "data-dari-step", "text-start", "text-delta"]


def test_steps_are_data_parts_one_per_name() -> None:
    chunks = render(
        [f("step", name="think", content="생각 중...", state="started"),
         f("step", name="think", content="정리 완료", state="finished")]
    )
    steps = [c for c in chunks if c["type"] == "data-dari-step"]
    assert [s["id"] for s in steps] == ["step-think", "step-think"]
    assert steps[-1]["data"] == {"name": "think", "content": "정리 완료", "state": "finished"}


def test_reasoning_and_text_are_separate_parts() -> None:
    chunks = render(
        [f("start"), f("reasoning", content="hmm"), f("response", content="A"),
         f("reasoning", content="more"), f("response", content="B"),
         f("end", finish_reason="stop")]
    )
    assert types(chunks)[2:-2] == [
        "reasoning-start", "reasoning-delta", "reasoning-end",
        "text-start", "text-delta", "text-end",
        "reasoning-start", "reasoning-delta", "reasoning-end",
        "text-start", "text-delta", "text-end",
    ]
    ids = [c["id"] for c in chunks if c["type"].endswith("-start") and "id" in c]
    assert len(set(ids)) == len(ids)


def test_tool_frames_become_a_dynamic_tool_part() -> None:
    chunks = render(
        [f("tool", tool_call_id="c1", name="search", state="started", arguments=""),
         f("tool", tool_call_id="c1", name="search", state="arguments", arguments='{"q":'),
         f("tool", tool_call_id="c1", name="search", state="arguments", arguments='{"q": "x"}'),
         f("tool", tool_call_id="c1", name="search", state="finished", arguments='{"q": "x"}',
           result={"hits": 1}),
         f("tool", tool_call_id="c2", name="fetch", state="failed", error="timeout")]
    )
    tool = [c for c in chunks if c["type"].startswith("tool-")]
    assert [c["type"] for c in tool] == [
        "tool-input-start", "tool-input-delta", "tool-input-delta", "tool-input-available",
        "tool-output-available", "tool-input-start", "tool-input-available", "tool-output-error",
    ]
    assert "".join(c["inputTextDelta"] for c in tool if c["type"] == "tool-input-delta") == (
        '{"q": "x"}'
    )
    assert tool[3]["input"] == {"q": "x"} and tool[4]["output"] == {"hits": 1}
    assert tool[-1]["errorText"] == "timeout"


def test_reports_into_the_conversation_are_data_parts() -> None:
    report = {"type": "auto_report", "content": "done", "task_id": "t-1", "project_id": "p",
              "agent_name": "researcher", "thread_id": "t", "origin_agent": "a", "message_id": 7}
    chunk = render([f("start"), report])[-1]
    assert chunk == {
        "type": "data-dari-report",
        "id": "report-t-1",
        "data": {"content": "done", "task_id": "t-1", "agent_name": "researcher",
                 "project_id": "p", "thread_id": "t", "message_id": 7},
    }


def test_sse_framing() -> None:
    assert ai_sdk.sse({"type": "abort"}) == 'data: {"type":"abort"}\n\n'
    assert ai_sdk.DONE == "data: [DONE]\n\n"


def request(messages: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"id": "chat", "messages": messages, **extra})


def test_the_last_user_message_is_the_input() -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    _, user = ai_sdk.parse_request(
        request(
            [
                {"id": "u0", "role": "user", "parts": [{"type": "text", "text": "old"}]},
                {"id": "a0", "role": "assistant", "parts": [{"type": "text", "text": "reply"}]},
                {"id": "u1", "role": "user", "parts": [
                    {"type": "text", "text": "look"},
                    {"type": "file", "mediaType": "image/png", "url": png},
                    {"type": "text", "text": "here"},
                ]},
            ],
            trigger="submit-message",
        )
    )
    assert (user.message_id, user.text, user.images, user.regenerate) == (
        "u1", "look\nhere", [png], False
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        orjson.dumps({"messages": []}),
        request([]),
        request([{"id": "a", "role": "assistant", "parts": []}]),
        request([{"id": "u", "role": "user", "parts": [
            {"type": "file", "mediaType": "application/pdf", "url": "data:,x"}]}]),
    ],
)
def test_bad_requests(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        ai_sdk.parse_request(body)
