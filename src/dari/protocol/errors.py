"""Error codes, close codes and the one exception tree of dari.

DariError                 an error with a stable wire code
 ├── ProtocolError        a frame the client sent is unusable (bad_request, too_large)
 ├── AccessError          unauthorized / forbidden
 ├── LookupFailed         project_not_found, agent_not_found, not_found
 ├── Unavailable          agent_not_running, queue_full, rate_limited
 └── AgentFailed          the model or graph raised or timed out
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    PROJECT_NOT_FOUND = "project_not_found"
    AGENT_NOT_FOUND = "agent_not_found"
    AGENT_NOT_RUNNING = "agent_not_running"
    NOT_FOUND = "not_found"
    QUEUE_FULL = "queue_full"
    BUSY = "busy"
    RATE_LIMITED = "rate_limited"
    AGENT_FAILED = "agent_failed"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    """WebSocket close codes used by dari (RFC 6455 section 7.4 plus the 4xxx private range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    REPLACED = 4409


# A client must not reconnect after these: retrying cannot succeed, or another socket won.
FINAL_CLOSE_CODES = frozenset({CloseCode.NORMAL, CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN})


def should_reconnect(code: int | None) -> bool:
    """Whether a client should reconnect after its socket closed with ``code``."""
    if code is None:
        return True
    return code not in FINAL_CLOSE_CODES and code != CloseCode.REPLACED


class DariError(Exception):
    """An error that reaches the client as an ``error`` frame with a stable ``code``."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self, message: str, *, code: ErrorCode | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.request_id = request_id


class ProtocolError(DariError):
    code = ErrorCode.BAD_REQUEST


class AccessError(DariError):
    code = ErrorCode.FORBIDDEN


class LookupFailed(DariError):
    code = ErrorCode.NOT_FOUND


class Unavailable(DariError):
    code = ErrorCode.AGENT_NOT_RUNNING


class AgentFailed(DariError):
    code = ErrorCode.AGENT_FAILED
