"""The second seed's dialect: chat_frame (in) and render (out)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from dari.protocol.codec import decode_client_frame, encode
from dari.protocol.errors import ErrorCode, ProtocolError
from dari.protocol.frames import ChatIn, ConversationKey, answer_frame, error
from dari.protocol.thread_dialect import chat_frame, render

KEY = ConversationKey("p1", "집사", "t-1")
DEFAULTS = {"thread_id": "t-1", "project_id": "project_001", "agent_name": "집사"}


def rendered(frame: dict[str, Any]) -> Any:
    text = render(frame)
    assert text is not None
    return orjson.loads(text)


RENDER = [
    (
        "response becomes token",
        answer_frame("response", KEY, "r-1", content="안녕 ", seq=4),
        {"event_type": "token", "data": {"token": "안녕 "}},
    ),
    (
        "step keeps content, name and state",
        answer_frame(
            "step", KEY, "r-1", content="데이터 분석 중...", name="analyze", state="started"
        ),
        {
            "event_type": "step",
            "data": {"content": "데이터 분석 중...", "name": "analyze", "state": "started"},
        },
    ),
    (
        "end becomes done",
        answer_frame("end", KEY, "r-1", finish_reason="cancelled", usage={"tokens": 3}),
        {"event_type": "done", "data": {"request_id": "r-1", "finish_reason": "cancelled"}},
    ),
    (
        "a model cut off by its token limit: done says length",
        answer_frame("end", KEY, "r-1", finish_reason="length"),
        {"event_type": "done", "data": {"request_id": "r-1", "finish_reason": "length"}},
    ),
    (
        "error keeps code and message",
        error(ErrorCode.AGENT_NOT_RUNNING, "agent is stopped", request_id="r-1"),
        {
            "event_type": "error",
            "data": {"code": "agent_not_running", "message": "agent is stopped"},
        },
    ),
    (
        "auto_report",
        {
            "type": "auto_report",
            "content": "done",
            "task_id": "t-9",
            "agent_name": "researcher",
            "project_id": "p1",
            "seq": 8,
        },
        {
            "event_type": "auto_report",
            "data": {
                "content": "done",
                "task_id": "t-9",
                "agent_name": "researcher",
                "project_id": "p1",
            },
        },
    ),
]


@pytest.mark.parametrize(("frame", "event"), [c[1:] for c in RENDER], ids=[c[0] for c in RENDER])
def test_render_maps_primary_frames_to_dialect_events(frame: dict[str, Any], event: Any) -> None:
    assert rendered(frame) == event


@pytest.mark.parametrize(
    "kind",
    [
        "welcome",
        "ack",
        "start",
        "snapshot",
        "pong",
        "history",
        "subscribed",
        "broadcast",
        "reasoning",  # the model's reasoning has no event here: tokens stay the answer's text
        "mystery",
    ],
)
def test_render_skips_frames_the_dialect_has_no_event_for(kind: str) -> None:
    assert render({"type": kind, "seq": 1, "content": "x", "request_id": "r"}) is None


def test_render_writes_utf8_text() -> None:
    text = render(answer_frame("response", KEY, "r-1", content="집사 🙂"))
    assert text is not None and "집사 🙂" in text


def test_chat_frame_fills_defaults_from_config() -> None:
    frame = chat_frame({"message": "hi"}, **DEFAULTS)
    assert frame == {
        "type": "chat",
        "message": "hi",
        "project_id": "project_001",
        "agent_name": "집사",
        "thread_id": "t-1",
        "images": [],
    }


def test_chat_frame_uses_the_clients_project_agent_images_and_id() -> None:
    raw = {
        "message": "hi",
        "project_id": "p2",
        "agent_name": "echo",
        "images": ["https://example.com/a.png"],
        "id": "m-1",
    }
    frame = chat_frame(raw, **DEFAULTS)
    assert frame["project_id"] == "p2"
    assert frame["agent_name"] == "echo"
    assert frame["images"] == ["https://example.com/a.png"]
    assert frame["id"] == "m-1"


def test_chat_frame_thread_comes_from_the_path_not_the_body() -> None:
    frame = chat_frame({"message": "hi", "thread_id": "elsewhere", "type": "cancel"}, **DEFAULTS)
    assert frame["thread_id"] == "t-1"
    assert frame["type"] == "chat"


def test_chat_frame_omits_id_when_absent() -> None:
    assert "id" not in chat_frame({"message": "hi"}, **DEFAULTS)


def test_chat_frame_output_is_a_valid_primary_chat() -> None:
    frame = chat_frame({"message": "다리", "id": "m-2"}, **DEFAULTS)
    decoded = decode_client_frame(encode(frame), max_bytes=4096)
    assert isinstance(decoded, ChatIn)
    assert (decoded.message, decoded.thread_id, decoded.id) == ("다리", "t-1", "m-2")


@pytest.mark.parametrize(
    "raw",
    [{}, {"message": 5}, {"message": "hi", "images": "x"}, {"message": "hi", "agent_name": ""}],
    ids=["no message", "message not a string", "images not a list", "empty agent"],
)
def test_invalid_dialect_message_is_refused_by_the_codec(raw: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_client_frame(encode(chat_frame(raw, **DEFAULTS)), max_bytes=4096)
    assert caught.value.code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("raw", [[], "hi", 5, None])
def test_chat_frame_refuses_non_objects(raw: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        chat_frame(raw, **DEFAULTS)
    assert caught.value.code == ErrorCode.BAD_REQUEST
