"""Error codes, close codes and the one exception tree of dari.

One class per wire code; the classes a caller catches group them::

    DariError                   an error with a stable wire code
     ├── ProtocolError          bad_request: a frame the client sent is unusable
     │    └── TooLarge          too_large
     ├── AccessError            forbidden
     │    └── Unauthorized      unauthorized
     ├── LookupFailed           not_found
     │    ├── AlreadyAnswered   already_answered: a question (interrupt) was answered before
     │    ├── ProjectNotFound   project_not_found
     │    └── AgentNotFound     agent_not_found
     ├── Unavailable            agent_not_running: try again later
     │    ├── QueueFull         queue_full
     │    ├── Busy              busy
     │    ├── RateLimited       rate_limited
     │    └── ShuttingDown      shutting_down: this node is draining; reconnect, resend
     ├── AgentFailed            agent_failed: the model or graph raised or timed out
     │    └── QuestionExpired   interrupt_expired: nobody answered the agent's question in time
     └── InternalError          internal: dari's own machinery
          ├── ConfigError       settings that cannot work (refused at start)
          ├── BusError          a message between nodes could not be sent
          ├── StoreUnavailable  replay log / shared state unreachable (hub/replay_redis.py)
          └── MigrationError    the database schema cannot be brought up to date

A ``DariError`` may still be raised with an explicit ``code=``; ``error_class(code)`` names the
class of each code.
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
    SHUTTING_DOWN = "shutting_down"
    AGENT_FAILED = "agent_failed"
    ALREADY_ANSWERED = "already_answered"
    INTERRUPT_EXPIRED = "interrupt_expired"
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


class AlreadyAnswered(LookupFailed):
    """A ``resume`` for a question that someone answered already (another tab, another user
    of a shared thread): it is answered once."""

    code = ErrorCode.ALREADY_ANSWERED


class QuestionExpired(AgentFailed):
    """The agent's question (``interrupt``) was not answered within its agent's
    ``interrupt_timeout_s``: the answer ends with this error."""

    code = ErrorCode.INTERRUPT_EXPIRED


class TooLarge(ProtocolError):
    code = ErrorCode.TOO_LARGE


class Unauthorized(AccessError):
    code = ErrorCode.UNAUTHORIZED


class ProjectNotFound(LookupFailed):
    code = ErrorCode.PROJECT_NOT_FOUND


class AgentNotFound(LookupFailed):
    code = ErrorCode.AGENT_NOT_FOUND


class QueueFull(Unavailable):
    code = ErrorCode.QUEUE_FULL


class Busy(Unavailable):
    code = ErrorCode.BUSY


class RateLimited(Unavailable):
    """Too many frames for the user's rate limit; ``retry_after``: seconds until the next one
    would be taken (None when no time can be told, e.g. a cap on connections)."""

    code = ErrorCode.RATE_LIMITED

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: ErrorCode | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, request_id=request_id)
        self.retry_after = retry_after


class ShuttingDown(Unavailable):
    """This node is draining (SIGTERM): a chat it cannot hand to another node is refused, and
    an answer still running when the drain ends is cut with this code."""

    code = ErrorCode.SHUTTING_DOWN


class InternalError(DariError):
    code = ErrorCode.INTERNAL


class ConfigError(InternalError):
    """Settings that cannot work; the message says how to fix them."""


class BusError(InternalError):
    """A message could not be published (the bus is unreachable)."""


class StoreUnavailable(InternalError):
    """Shared state (a replay log, queues in Redis) cannot be reached."""


class MigrationError(InternalError):
    """The database's schema cannot be brought to the version this dari needs."""


_BY_CODE: dict[ErrorCode, type[DariError]] = {
    ErrorCode.BAD_REQUEST: ProtocolError,
    ErrorCode.TOO_LARGE: TooLarge,
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.FORBIDDEN: AccessError,
    ErrorCode.PROJECT_NOT_FOUND: ProjectNotFound,
    ErrorCode.AGENT_NOT_FOUND: AgentNotFound,
    ErrorCode.AGENT_NOT_RUNNING: Unavailable,
    ErrorCode.NOT_FOUND: LookupFailed,
    ErrorCode.QUEUE_FULL: QueueFull,
    ErrorCode.BUSY: Busy,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.SHUTTING_DOWN: ShuttingDown,
    ErrorCode.AGENT_FAILED: AgentFailed,
    ErrorCode.ALREADY_ANSWERED: AlreadyAnswered,
    ErrorCode.INTERRUPT_EXPIRED: QuestionExpired,
    ErrorCode.INTERNAL: InternalError,
}


def error_class(code: ErrorCode) -> type[DariError]:
    """The exception class of a wire code (every code has exactly one)."""
    return _BY_CODE[code]
