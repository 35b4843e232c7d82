"""decode_client_frame / encode: strict inbound validation with precise error codes."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dari.protocol import frames
from dari.protocol.codec import DEFAULT_MAX_MESSAGE_BYTES, decode_client_frame, encode
from dari.protocol.errors import ErrorCode, ProtocolError
from dari.protocol.frames import CancelIn, ChatIn, ConversationKey, HistoryIn, PingIn, SubscribeIn

MAX = 4096
CHAT: dict[str, Any] = {"type": "chat", "message": "hi", "agent_name": "echo", "project_id": "p1"}
HISTORY: dict[str, Any] = {"type": "history", "project_id": "p1", "agent_name": "echo"}


def decode(frame: Any, max_bytes: int = MAX) -> Any:
    return decode_client_frame(orjson.dumps(frame).decode(), max_bytes=max_bytes)


def refused(data: str | bytes | None, max_bytes: int = MAX) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode_client_frame(data, max_bytes=max_bytes)
    return caught.value


def refused_frame(frame: Any, max_bytes: int = MAX) -> ProtocolError:
    return refused(orjson.dumps(frame).decode(), max_bytes)


# --- valid frames --------------------------------------------------------------------------

VALID: list[tuple[str, dict[str, Any], type, dict[str, Any]]] = [
    (
        "chat minimal gets defaults",
        CHAT,
        ChatIn,
        {"message": "hi", "thread_id": "main", "images": [], "id": None},
    ),
    (
        "chat with every field",
        {
            **CHAT,
            "images": ["https://example.com/a.png"],
            "thread_id": "t-2",
            "id": "m-1",
        },
        ChatIn,
        {"images": ["https://example.com/a.png"], "thread_id": "t-2", "id": "m-1"},
    ),
    ("chat with empty message", {**CHAT, "message": ""}, ChatIn, {"message": ""}),
    (
        "chat with names in Korean",
        {**CHAT, "agent_name": "집사", "message": "안녕하세요 🙂"},
        ChatIn,
        {"agent_name": "집사", "message": "안녕하세요 🙂"},
    ),
    ("chat id of 128 characters", {**CHAT, "id": "x" * 128}, ChatIn, {"id": "x" * 128}),
    (
        "chat name of 128 characters",
        {**CHAT, "agent_name": "a" * 128},
        ChatIn,
        {"agent_name": "a" * 128},
    ),
    ("chat with explicit null id", {**CHAT, "id": None}, ChatIn, {"id": None}),
    ("unknown fields are ignored", {**CHAT, "future_field": {"x": 1}}, ChatIn, {"message": "hi"}),
    ("ping without ts", {"type": "ping"}, PingIn, {"ts": None}),
    ("ping with int ts", {"type": "ping", "ts": 123}, PingIn, {"ts": 123}),
    ("ping with float ts", {"type": "ping", "ts": 1.5}, PingIn, {"ts": 1.5}),
    ("ping with string ts", {"type": "ping", "ts": "t-1"}, PingIn, {"ts": "t-1"}),
    (
        "cancel by request_id",
        {"type": "cancel", "request_id": "r-1"},
        CancelIn,
        {"request_id": "r-1", "project_id": None, "agent_name": None},
    ),
    (
        "cancel by conversation",
        {"type": "cancel", "project_id": "p1", "agent_name": "echo"},
        CancelIn,
        {"request_id": None, "project_id": "p1", "agent_name": "echo", "thread_id": "main"},
    ),
    (
        "cancel by conversation with thread",
        {"type": "cancel", "project_id": "p1", "agent_name": "echo", "thread_id": "t"},
        CancelIn,
        {"thread_id": "t"},
    ),
    ("history defaults", HISTORY, HistoryIn, {"thread_id": "main", "limit": 50, "before": None}),
    (
        "history with limit and before",
        {**HISTORY, "thread_id": "t", "limit": 500, "before": 7},
        HistoryIn,
        {"thread_id": "t", "limit": 500, "before": 7},
    ),
    ("history limit 1", {**HISTORY, "limit": 1}, HistoryIn, {"limit": 1}),
    (
        "subscribe to a project",
        {"type": "subscribe", "project_id": "p1"},
        SubscribeIn,
        {"type": "subscribe", "agent_name": None},
    ),
    (
        "subscribe to a conversation",
        {"type": "subscribe", "project_id": "p1", "agent_name": "echo", "thread_id": "t"},
        SubscribeIn,
        {"agent_name": "echo", "thread_id": "t"},
    ),
    (
        "unsubscribe",
        {"type": "unsubscribe", "project_id": "p1"},
        SubscribeIn,
        {"type": "unsubscribe"},
    ),
]


@pytest.mark.parametrize(
    ("frame", "model", "expected"), [c[1:] for c in VALID], ids=[c[0] for c in VALID]
)
def test_valid_frame_is_decoded_to_its_model(
    frame: dict[str, Any], model: type, expected: dict[str, Any]
) -> None:
    decoded = decode(frame)
    assert type(decoded) is model
    for field, value in expected.items():
        assert getattr(decoded, field) == value


def test_decoded_frames_are_immutable() -> None:
    decoded = decode(CHAT)
    with pytest.raises(ValueError):
        decoded.message = "changed"


# --- refused frames: bad_request -----------------------------------------------------------

INVALID: list[tuple[str, Any]] = [
    # wrong types are refused, never coerced
    ("chat message is a number", {**CHAT, "message": 5}),
    ("chat message is null", {**CHAT, "message": None}),
    ("chat message is a list", {**CHAT, "message": ["hi"]}),
    ("chat agent_name is a number", {**CHAT, "agent_name": 1}),
    ("chat project_id is a bool", {**CHAT, "project_id": True}),
    ("chat images is a string", {**CHAT, "images": "https://example.com/a.png"}),
    ("chat image is not a string", {**CHAT, "images": [5]}),
    ("chat thread_id is a number", {**CHAT, "thread_id": 1}),
    ("chat thread_id is null", {**CHAT, "thread_id": None}),
    ("chat id is a number", {**CHAT, "id": 5}),
    # missing and out of bounds
    ("chat without message", {k: v for k, v in CHAT.items() if k != "message"}),
    ("chat without agent_name", {k: v for k, v in CHAT.items() if k != "agent_name"}),
    ("chat without project_id", {k: v for k, v in CHAT.items() if k != "project_id"}),
    ("chat empty agent_name", {**CHAT, "agent_name": ""}),
    ("chat agent_name of 129 characters", {**CHAT, "agent_name": "a" * 129}),
    ("chat project_id of 129 characters", {**CHAT, "project_id": "p" * 129}),
    ("chat thread_id of 129 characters", {**CHAT, "thread_id": "t" * 129}),
    ("chat id of 129 characters", {**CHAT, "id": "x" * 129}),
    ("chat empty id", {**CHAT, "id": ""}),
    # history
    ("history limit is a string", {**HISTORY, "limit": "5"}),
    ("history limit is true", {**HISTORY, "limit": True}),
    ("history limit is a float", {**HISTORY, "limit": 5.0}),
    ("history limit 0", {**HISTORY, "limit": 0}),
    ("history limit 501", {**HISTORY, "limit": 501}),
    ("history before 0", {**HISTORY, "before": 0}),
    ("history before is a string", {**HISTORY, "before": "3"}),
    ("history without project_id", {"type": "history", "agent_name": "echo"}),
    ("history without agent_name", {"type": "history", "project_id": "p1"}),
    # ping
    ("ping ts is true", {"type": "ping", "ts": True}),
    ("ping ts is a list", {"type": "ping", "ts": [1]}),
    ("ping ts is an object", {"type": "ping", "ts": {"t": 1}}),
    # cancel
    ("cancel with no target", {"type": "cancel"}),
    ("cancel with project only", {"type": "cancel", "project_id": "p1"}),
    ("cancel with agent only", {"type": "cancel", "agent_name": "echo"}),
    ("cancel with thread only", {"type": "cancel", "thread_id": "t"}),
    ("cancel request_id is a number", {"type": "cancel", "request_id": 5}),
    ("cancel request_id of 129 characters", {"type": "cancel", "request_id": "r" * 129}),
    # subscribe
    ("subscribe without project_id", {"type": "subscribe"}),
    ("unsubscribe without project_id", {"type": "unsubscribe", "agent_name": "echo"}),
    ("subscribe agent_name is a number", {"type": "subscribe", "project_id": "p", "agent_name": 3}),
    # type
    ("unknown type", {"type": "shout", "message": "hi"}),
    ("type missing", {"message": "hi"}),
    ("type is a number", {"type": 5}),
    ("type is null", {"type": None}),
    ("type in another case", {**CHAT, "type": "Chat"}),
    # not an object
    ("JSON array", [CHAT]),
    ("JSON string", "chat"),
    ("JSON number", 5),
    ("JSON null", None),
    ("JSON true", True),
]


@pytest.mark.parametrize("frame", [c[1] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_frame_is_refused_as_bad_request(frame: Any) -> None:
    error = refused_frame(frame)
    assert error.code == ErrorCode.BAD_REQUEST
    assert error.message


@pytest.mark.parametrize(
    "data",
    ["", "{", "not json", '{"type": "ping",}', "{'type': 'ping'}", '{"type": "ping"} extra', "NaN"],
    ids=["empty", "truncated", "text", "trailing comma", "single quotes", "trailing data", "NaN"],
)
def test_malformed_json_is_bad_request(data: str) -> None:
    assert refused(data).code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("data", [b'{"type": "ping"}', bytearray(b'{"type": "ping"}'), b""])
def test_binary_frame_is_bad_request_even_when_it_holds_valid_json(data: bytes) -> None:
    error = refused(bytes(data))
    assert error.code == ErrorCode.BAD_REQUEST
    assert "text" in error.message


def test_missing_frame_is_bad_request() -> None:
    assert refused(None).code == ErrorCode.BAD_REQUEST


# --- size limits ---------------------------------------------------------------------------


def chat_of_size(nbytes: int, filler: str) -> str:
    """A valid chat frame whose UTF-8 encoding is exactly ``nbytes`` long."""
    empty = encode({**CHAT, "message": ""})
    unit = len(filler.encode())
    room = nbytes - len(empty.encode())
    assert room >= 0 and room % unit == 0, "pick sizes the filler divides"
    text = encode({**CHAT, "message": filler * (room // unit)})
    assert len(text.encode()) == nbytes
    return text


@pytest.mark.parametrize(
    ("filler", "name"),
    [("a", "ascii"), ("é", "2-byte"), ("가", "3-byte"), ("🙂", "4-byte")],
)
def test_frame_of_exactly_max_bytes_is_accepted(filler: str, name: str) -> None:
    limit = len(encode({**CHAT, "message": ""})) + 12 * 100  # 12 is divisible by 1, 2, 3, 4
    decoded = decode_client_frame(chat_of_size(limit, filler), max_bytes=limit)
    assert isinstance(decoded, ChatIn)


@pytest.mark.parametrize(
    ("filler", "name"),
    [("a", "ascii"), ("é", "2-byte"), ("가", "3-byte"), ("🙂", "4-byte")],
)
def test_frame_one_character_over_max_bytes_is_too_large(filler: str, name: str) -> None:
    base = len(encode({**CHAT, "message": ""})) + 12 * 100
    text = chat_of_size(base + len(filler.encode()), filler)
    assert refused(text, max_bytes=base).code == ErrorCode.TOO_LARGE


def test_multibyte_frame_under_the_limit_in_characters_but_over_it_in_bytes_is_too_large() -> None:
    limit = 3000
    text = encode({**CHAT, "message": "가" * 1200})  # ~1,270 characters, ~3,670 bytes
    assert len(text) < limit < len(text.encode())
    error = refused(text, max_bytes=limit)
    assert error.code == ErrorCode.TOO_LARGE


def test_oversize_by_characters_is_too_large_even_when_not_json() -> None:
    assert refused("x" * (MAX + 1)).code == ErrorCode.TOO_LARGE


def test_size_is_checked_on_the_raw_text_including_whitespace() -> None:
    compact = encode(CHAT)
    padded = compact[:-1] + " " * (MAX - len(compact) + 1) + "}"
    assert len(padded) == MAX + 1
    assert refused(padded).code == ErrorCode.TOO_LARGE


def test_default_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 1024 * 1024


def test_text_that_cannot_be_utf8_encoded_is_refused_with_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_client_frame('{"type": "ping", "ts": "' + "\ud800" * 300 + '"}', max_bytes=1024)


# --- error details -------------------------------------------------------------------------

SECRET = "zq-SECRET-zq"

NOT_ECHOED: list[tuple[str, Any]] = [
    ("message of the wrong type", {**CHAT, "message": [SECRET]}),
    ("limit as a string", {**HISTORY, "limit": SECRET}),
    ("name too long", {**CHAT, "agent_name": SECRET * 20}),
    ("id too long", {**CHAT, "id": SECRET * 20}),
    ("image of the wrong type", {**CHAT, "images": [{"url": SECRET}]}),
    ("ts of the wrong type", {"type": "ping", "ts": {"k": SECRET}}),
    ("cancel without target", {"type": "cancel", "thread_id": SECRET}),
    ("unknown field names stay silent", {"type": "history", SECRET: 1}),
    ("non-object JSON", [SECRET]),
]


@pytest.mark.parametrize("frame", [c[1] for c in NOT_ECHOED], ids=[c[0] for c in NOT_ECHOED])
def test_error_message_does_not_echo_the_input(frame: Any) -> None:
    error = refused_frame(frame)
    assert SECRET not in error.message
    assert SECRET not in str(error)


def test_unknown_type_value_is_not_echoed_in_the_error_message() -> None:
    error = refused_frame({"type": "<img src=x onerror=alert(1)>" + SECRET * 100})
    assert error.code == ErrorCode.BAD_REQUEST
    assert SECRET not in error.message


def test_error_message_names_the_offending_field() -> None:
    assert "limit" in refused_frame({**HISTORY, "limit": "5"}).message
    assert "message" in refused_frame({**CHAT, "message": 5}).message


def test_error_message_is_short_even_when_many_fields_are_wrong() -> None:
    frame = {
        "type": "chat",
        "message": 1,
        "agent_name": 2,
        "project_id": 3,
        "thread_id": 4,
        "images": 5,
    }
    assert len(refused_frame(frame).message) < 400


REQUEST_IDS: list[tuple[str, Any, str | None]] = [
    ("invalid chat with an id", {**CHAT, "message": 5, "id": "m-1"}, "m-1"),
    ("unknown type with an id", {"type": "shout", "id": "m-2"}, "m-2"),
    ("type missing with an id", {"id": "m-3"}, "m-3"),
    ("id of 128 characters", {**CHAT, "message": 5, "id": "x" * 128}, "x" * 128),
    ("invalid chat without id", {**CHAT, "message": 5}, None),
    ("id too long", {**CHAT, "message": 5, "id": "x" * 129}, None),
    ("id empty", {**CHAT, "message": 5, "id": ""}, None),
    ("id not a string", {**CHAT, "id": 7}, None),
    ("id is null", {**CHAT, "message": 5, "id": None}, None),
    ("not an object", ["m-1"], None),
]


@pytest.mark.parametrize(
    ("frame", "request_id"), [c[1:] for c in REQUEST_IDS], ids=[c[0] for c in REQUEST_IDS]
)
def test_error_carries_request_id_only_when_the_frame_had_a_usable_id(
    frame: Any, request_id: str | None
) -> None:
    assert refused_frame(frame).request_id == request_id


def test_malformed_json_error_has_no_request_id() -> None:
    assert refused('{"id": "m-1", "type": ').request_id is None


def test_too_large_is_decided_before_parsing_so_carries_no_request_id() -> None:
    assert refused(encode({**CHAT, "id": "m-1", "message": "x" * MAX})).request_id is None


def test_error_frame_built_from_a_protocol_error() -> None:
    error = refused_frame({**CHAT, "message": 5, "id": "m-1"})
    frame = frames.error(error.code, error.message, error.request_id)
    assert frame == {
        "type": "error",
        "code": "bad_request",
        "message": error.message,
        "request_id": "m-1",
    }
    assert "request_id" not in frames.error(ErrorCode.TOO_LARGE, "too big")


# --- encode --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "response", "seq": 3, "content": "안녕하세요, 집사입니다 🙂", "request_id": "r-1"},
        {"type": "pong", "ts": None, "seq": 1},
        {"type": "history", "seq": 2, "messages": [{"id": 1, "content": 'ümlaut \n\t "quoted"'}]},
        {"type": "response", "seq": 4, "content": "\u0000 \u2028 \u2029 </script>"},
    ],
    ids=["korean and emoji", "null", "nested", "control characters"],
)
def test_encode_round_trips_through_json(frame: dict[str, Any]) -> None:
    text = encode(frame)
    assert isinstance(text, str)
    assert orjson.loads(text) == frame


def test_encode_writes_non_ascii_as_utf8_not_escapes() -> None:
    text = encode({"type": "response", "content": "집사 🙂"})
    assert "집사 🙂" in text
    assert "\\u" not in text


def test_encoded_chat_decodes_to_the_same_values() -> None:
    chat = {**CHAT, "message": "다리 🌉 bridge", "agent_name": "집사", "id": "m-ü", "images": []}
    decoded = decode_client_frame(encode(chat), max_bytes=MAX)
    assert isinstance(decoded, ChatIn)
    assert decoded.model_dump() == {**chat, "thread_id": "main"}


def test_outbound_builders_produce_encodable_frames() -> None:
    key = ConversationKey("p1", "집사", "t")
    built = [
        frames.welcome(
            client_id="c1",
            position=5,
            resumed=True,
            last_seq=7,
            epoch="e",
            heartbeat_s=20,
            server_version="0.1.0",
        ),
        frames.ack(id="m-1", request_id="m-1", queued=0, duplicate=False, key=key),
        frames.answer_frame("response", key, "m-1", content="안녕"),
        frames.pong(12),
    ]
    for frame in built:
        assert orjson.loads(encode(frame)) == frame
    assert built[0]["seq"] == 5 and "reason" not in built[0]
    assert built[2] == {
        "type": "response",
        "request_id": "m-1",
        "project_id": "p1",
        "agent_name": "집사",
        "thread_id": "t",
        "content": "안녕",
    }


# --- anything in, a model or a ProtocolError out ---------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "message",
        "agent_name",
        "project_id",
        "thread_id",
        "images",
        "id",
        "ts",
        "request_id",
        "limit",
        "before",
    ]
)
frames_of_known_types = st.fixed_dictionaries(
    {"type": st.sampled_from(["chat", "ping", "cancel", "history", "subscribe", "unsubscribe"])},
    optional={"extra": json_values},
).flatmap(
    lambda base: st.dictionaries(field_names, json_values | st.text(min_size=1, max_size=10)).map(
        lambda fields: {**fields, **base}
    )
)


@given(st.one_of(json_values, frames_of_known_types))
def test_any_json_decodes_to_a_model_or_a_protocol_error(value: Any) -> None:
    try:
        decoded = decode(value)
    except ProtocolError as error:
        assert error.code in (ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE)
    else:
        assert decoded.type == value["type"]


@given(st.text(max_size=300))
def test_any_text_decodes_to_a_model_or_a_protocol_error(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode_client_frame(text, max_bytes=256)


@pytest.mark.parametrize(
    "data",
    [
        '{"type": "history", "project_id": "p", "agent_name": "a", "limit": 99999999999999999999999}',
        '{"type": "ping", "ts": 1e400}',
    ],
    ids=["limit beyond 64 bits", "infinite float"],
)
def test_out_of_range_numbers_are_bad_request(data: str) -> None:
    assert refused(data).code == ErrorCode.BAD_REQUEST
