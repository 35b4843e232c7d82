"""Frame shapes: what clients may send (validated models) and what the server sends (builders).

Inbound frames are strict: a wrong type is an error, never coerced (``"message": 5`` is refused,
not turned into ``"5"``). Unknown fields are ignored so that newer clients keep working.
Outbound frames are plain dicts; the hub adds ``seq`` when it appends them to a client's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from dari.protocol.errors import ErrorCode

Frame = dict[str, Any]


def _no_nul(value: str) -> str:
    # U+0000 cannot be stored in PostgreSQL text; refuse it at the edge, for every engine.
    if "\x00" in value:
        raise ValueError("text must not contain U+0000")
    return value


NoNul = AfterValidator(_no_nul)
# Names are free text (agents are often named in the user's language, e.g. "집사"), bounded.
Name = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
Text = Annotated[str, NoNul]
DEFAULT_THREAD = "main"


class _Inbound(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ChatIn(_Inbound):
    type: Literal["chat"]
    message: Text
    agent_name: Name
    project_id: Name
    images: list[str] = Field(default_factory=list)
    thread_id: Name = DEFAULT_THREAD
    id: MessageId | None = None


class PingIn(_Inbound):
    type: Literal["ping"]
    ts: int | float | str | None = None


class CancelIn(_Inbound):
    type: Literal["cancel"]
    request_id: MessageId | None = None
    project_id: Name | None = None
    agent_name: Name | None = None
    thread_id: Name = DEFAULT_THREAD

    @model_validator(mode="after")
    def _target_named(self) -> CancelIn:
        if self.request_id is None and (self.project_id is None or self.agent_name is None):
            raise ValueError("cancel needs request_id, or project_id and agent_name")
        return self


class HistoryIn(_Inbound):
    type: Literal["history"]
    project_id: Name
    agent_name: Name
    thread_id: Name = DEFAULT_THREAD
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    before: Annotated[int, Field(ge=1)] | None = None


class SubscribeIn(_Inbound):
    type: Literal["subscribe", "unsubscribe"]
    project_id: Name
    agent_name: Name | None = None
    thread_id: Name = DEFAULT_THREAD


class ThreadsIn(_Inbound):
    """List the caller's conversations (and those shared with them), newest activity first."""

    type: Literal["threads"]
    project_id: Name | None = None
    agent_name: Name | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    before: Annotated[int, Field(ge=1)] | None = None  # the ``next`` of the previous page


ThreadAction = Literal["rename", "delete", "share", "unshare"]


class ThreadIn(_Inbound):
    """Manage one conversation: rename (``title``, null to go back to the automatic one),
    delete its history, share it with the project or make it private again."""

    type: Literal["thread"]
    action: ThreadAction
    project_id: Name
    agent_name: Name
    thread_id: Name = DEFAULT_THREAD
    title: Annotated[str, StringConstraints(min_length=1, max_length=200), NoNul] | None = None


class ResumeIn(_Inbound):
    """The answer to an agent's question (an ``interrupt``): its ``interrupt_id`` and the
    ``value`` (any JSON) the paused answer goes on with."""

    type: Literal["resume"]
    interrupt_id: MessageId
    value: Any = None


ClientFrame = (
    ChatIn | PingIn | CancelIn | HistoryIn | SubscribeIn | ThreadsIn | ThreadIn | ResumeIn
)

INBOUND_MODELS: dict[str, type[_Inbound]] = {
    "chat": ChatIn,
    "ping": PingIn,
    "cancel": CancelIn,
    "history": HistoryIn,
    "subscribe": SubscribeIn,
    "unsubscribe": SubscribeIn,
    "threads": ThreadsIn,
    "thread": ThreadIn,
    "resume": ResumeIn,
}


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """A conversation: answers within one run one at a time, in arrival order.

    ``scope`` is never on the wire. It is the user id when one thread name stands for one
    conversation per user (the default thread, private to each user: see
    ``dari.conversations.policy``), and ``""`` when the thread name alone names the
    conversation. So two users' ``main`` are two keys: their subscriptions, queues, leases and
    progress records never meet, while both read ``thread_id: "main"``.
    """

    project_id: str
    agent_name: str
    thread_id: str = DEFAULT_THREAD
    scope: str = ""

    def fields(self) -> Frame:
        """The conversation's wire fields (``scope`` stays inside the server)."""
        return {
            "project_id": self.project_id,
            "agent_name": self.agent_name,
            "thread_id": self.thread_id,
        }

    def parts(self) -> list[str]:
        """The key as a list, for names shared between nodes; ``ConversationKey(*parts)``
        reads it back. An unscoped key keeps the three-part form it always had."""
        names = [self.project_id, self.agent_name, self.thread_id]
        return [*names, self.scope] if self.scope else names

    def __str__(self) -> str:
        name = f"{self.project_id}/{self.agent_name}/{self.thread_id}"
        return f"{name} (of {self.scope})" if self.scope else name


# --- outbound builders -------------------------------------------------------------------


def welcome(
    *,
    client_id: str,
    position: int,
    resumed: bool,
    last_seq: int,
    epoch: str,
    heartbeat_s: float,
    server_version: str,
    reason: str | None = None,
) -> Frame:
    # welcome does not advance seq: its seq is the position the connection continues from.
    frame: Frame = {
        "type": "welcome",
        "seq": position,
        "client_id": client_id,
        "resumed": resumed,
        "last_seq": last_seq,
        "epoch": epoch,
        "heartbeat_s": heartbeat_s,
        "server_version": server_version,
    }
    if reason is not None:
        frame["reason"] = reason
    return frame


def ack(
    *, id: str | None, request_id: str, queued: int, duplicate: bool, key: ConversationKey
) -> Frame:
    return {
        "type": "ack",
        "id": id,
        "request_id": request_id,
        "queued": queued,
        "duplicate": duplicate,
        **key.fields(),
    }


def answer_frame(kind: str, key: ConversationKey, request_id: str, **fields: Any) -> Frame:
    """A frame that belongs to an answer: start, response, reasoning, step, end, snapshot."""
    return {"type": kind, "request_id": request_id, **key.fields(), **fields}


def end(
    key: ConversationKey, request_id: str, finish_reason: str, usage: dict[str, int] | None = None
) -> Frame:
    """``end``: how the answer ended (``stop``, ``length``, ``content_filter``, ``cancelled``,
    ``error``) and, when the backend reported it, what it cost in tokens."""
    frame = answer_frame("end", key, request_id, finish_reason=finish_reason)
    if usage is not None:
        frame["usage"] = usage
    return frame


def error(
    code: ErrorCode,
    message: str,
    request_id: str | None = None,
    *,
    retry_after: float | None = None,
) -> Frame:
    """``error``; ``retry_after`` (seconds, on ``rate_limited``): when a frame would be taken."""
    frame: Frame = {"type": "error", "code": str(code), "message": message}
    if request_id is not None:
        frame["request_id"] = request_id
    if retry_after is not None:
        frame["retry_after"] = round(max(retry_after, 0.001), 3)
    return frame


def pong(ts: object) -> Frame:
    return {"type": "pong", "ts": ts}
