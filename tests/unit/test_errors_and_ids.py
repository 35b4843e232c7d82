"""Stable error codes, close codes, the reconnect rule and client_id validation."""

from __future__ import annotations

import pytest

from dari.protocol.errors import (
    AccessError,
    AgentFailed,
    CloseCode,
    DariError,
    ErrorCode,
    LookupFailed,
    ProtocolError,
    ShuttingDown,
    Unavailable,
    should_reconnect,
)
from dari.protocol.ids import is_valid_client_id

# docs/PROTOCOL.md section 10 (the shared contract's "Error codes at least").
PROTOCOL_ERROR_CODES = [
    "bad_request",
    "too_large",
    "unauthorized",
    "forbidden",
    "project_not_found",
    "agent_not_found",
    "agent_not_running",
    "queue_full",
    "rate_limited",
    "agent_failed",
    "internal",
    "shutting_down",  # version 1.1: the node is draining
]


@pytest.mark.parametrize("code", PROTOCOL_ERROR_CODES)
def test_every_error_code_of_the_protocol_exists_with_its_wire_spelling(code: str) -> None:
    assert str(ErrorCode(code)) == code


def test_error_codes_are_snake_case() -> None:
    for code in ErrorCode:
        assert code.value.isascii() and code.value == code.value.lower()
        assert " " not in code.value and "-" not in code.value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NORMAL", 1000),
        ("POLICY_VIOLATION", 1008),
        ("MESSAGE_TOO_BIG", 1009),
        ("TRY_AGAIN_LATER", 1013),
        ("UNAUTHORIZED", 4401),
        ("FORBIDDEN", 4403),
        ("REPLACED", 4409),
    ],
)
def test_close_codes_have_the_protocol_values(name: str, value: int) -> None:
    assert CloseCode[name] == value


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (None, True),  # the connection dropped without a close frame
        (1000, False),
        (1001, True),
        (1006, True),
        (1008, True),
        (1009, True),
        (1011, True),
        (1012, True),
        (1013, True),
        (4401, False),
        (4403, False),
        (4409, False),  # another socket of the same client_id won
        (4000, True),
        (CloseCode.UNAUTHORIZED, False),
    ],
)
def test_should_reconnect(code: int | None, reconnect: bool) -> None:
    assert should_reconnect(code) is reconnect


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ProtocolError("x"), ErrorCode.BAD_REQUEST),
        (ProtocolError("x", code=ErrorCode.TOO_LARGE), ErrorCode.TOO_LARGE),
        (AccessError("x"), ErrorCode.FORBIDDEN),
        (AccessError("x", code=ErrorCode.UNAUTHORIZED), ErrorCode.UNAUTHORIZED),
        (LookupFailed("x"), ErrorCode.NOT_FOUND),
        (Unavailable("x"), ErrorCode.AGENT_NOT_RUNNING),
        (Unavailable("x", code=ErrorCode.QUEUE_FULL), ErrorCode.QUEUE_FULL),
        (AgentFailed("x"), ErrorCode.AGENT_FAILED),
        (ShuttingDown("x"), ErrorCode.SHUTTING_DOWN),
        (DariError("x"), ErrorCode.INTERNAL),
    ],
)
def test_each_error_class_has_its_default_code(error: DariError, code: ErrorCode) -> None:
    assert error.code == code
    assert error.message == "x"


def test_overriding_the_code_does_not_change_the_class_default() -> None:
    ProtocolError("big", code=ErrorCode.TOO_LARGE)
    assert ProtocolError("plain").code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("client_id", "valid"),
    [
        ("a", True),
        ("tab-1", True),
        ("A.b_c:d-e9", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("../etc", False),
        ("a\n", False),
        ("\na", False),
        ("집사", False),
        ("a%20b", False),
        ("a?b", False),
        ("٣", False),
    ],
)
def test_client_id_rule(client_id: str, valid: bool) -> None:
    assert is_valid_client_id(client_id) is valid
