"""The streaming interface every backend implements.

A backend's ``stream()`` is an async iterator of events: ``str`` pieces of the answer, in order,
:class:`Step` markers for work in progress, :class:`Reasoning` pieces (the model's thinking,
shown apart from the answer), :class:`Usage` (what a model call cost; several are summed) and
:class:`Finish` (why the answer ended, when not simply ``stop``). The runner turns pieces into
``response`` frames as soon as they are yielded; nothing waits for the whole answer.
:class:`ToolUpdate` events report a tool call as it happens (``tool`` frames), and an agent that
needs a person's answer asks through ``ctx.interrupt`` (the answer pauses until it comes).
Cancellation arrives as ``asyncio.CancelledError`` at the backend's current ``await``: backends
close upstream requests in ``finally`` blocks (an ``async with`` does it for them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from dari.settings import AgentConfig, Settings

StepState = Literal["started", "finished"]
# A tool call: ``started`` (the call is known), ``arguments`` (more of its arguments were
# written), ``finished`` (it returned a result), ``failed`` (it raised, or was not run).
ToolState = Literal["started", "arguments", "finished", "failed"]
OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Step:
    """A step of the work, shown to people ("데이터 분석 중...") and saved with the answer."""

    name: str  # machine name: a graph node, a tool
    content: str  # text for people
    state: StepState = "started"

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "content": self.content, "state": self.state}


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's reasoning: streamed as a ``reasoning`` frame, saved apart from
    the answer, never part of its text."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one model call used, as the model's server reported them. A backend that calls
    the model several times for one answer yields one per call; the runner sums them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int | None = None  # part of completion_tokens, where the server says

    @classmethod
    def reported(cls, prompt: Any, completion: Any, total: Any, reasoning: Any) -> Usage:
        """From a server's figures: the total defaults to prompt + completion, reasoning stays
        unknown when not given. Raises TypeError or ValueError on figures that are not numbers."""
        prompt_tokens, completion_tokens = int(prompt), int(completion)
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=int(total or prompt_tokens + completion_tokens),
            reasoning_tokens=None if reasoning is None else int(reasoning),
        )

    def __add__(self, other: Usage) -> Usage:
        reasoning = (
            None
            if self.reasoning_tokens is None and other.reasoning_tokens is None
            else (self.reasoning_tokens or 0) + (other.reasoning_tokens or 0)
        )
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            reasoning,
        )

    def to_wire(self) -> dict[str, int]:
        wire = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.reasoning_tokens is not None:
            wire["reasoning_tokens"] = self.reasoning_tokens
        return wire


@dataclass(frozen=True, slots=True)
class ToolUpdate:
    """Where a tool call stands: streamed as a ``tool`` frame, saved with the answer.

    ``arguments`` is always the whole text of the arguments so far (JSON once complete), so
    the latest update of a call says everything about it; ``delta`` is what an ``arguments``
    update added. ``result`` (``finished``) is any JSON value; ``error`` (``failed``) a text.
    """

    call_id: str
    name: str
    state: ToolState
    arguments: str = ""
    delta: str = ""
    result: Any = None
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "tool_call_id": self.call_id,
            "name": self.name,
            "state": self.state,
            "arguments": self.arguments,
        }
        if self.state == "arguments":
            wire["arguments_delta"] = self.delta
        elif self.state == "finished":
            wire["result"] = self.result
        elif self.state == "failed":
            wire["error"] = self.error or "the tool failed"
        return wire


ModelFinish = Literal["stop", "length", "content_filter"]


@dataclass(frozen=True, slots=True)
class Finish:
    """Why the model stopped: ``length`` (it hit its token limit), ``content_filter`` (the
    provider withheld the rest) or ``stop``. The last one yielded is the answer's."""

    reason: ModelFinish


AgentEvent = str | Step | Reasoning | Usage | Finish | ToolUpdate


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    role: Literal["user", "assistant", "report"]
    content: str
    images: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AgentRequest:
    message: str
    images: list[str]
    history: list[HistoryMessage]  # oldest first, without the current message
    project_id: str
    agent_name: str
    thread_id: str
    request_id: str
    user_id: str
    # The conversation's scope: the user of a per-user thread (each user's "main"), else "".
    scope: str = ""


class AgentContext(Protocol):
    """What a running answer may ask of the gateway."""

    async def step(self, name: str, content: str, state: StepState = "started") -> None:
        """Emit a ``step`` frame now (same as yielding a :class:`Step`)."""

    async def delegate(self, agent_name: str, task: str) -> str:
        """Hand ``task`` to another agent of the same project, in the background.

        Returns the task id at once; an ``auto_report`` follows when the task finishes.
        Raises :class:`dari.protocol.errors.DariError` if the agent cannot take it.
        """

    async def interrupt(self, payload: dict[str, Any]) -> Any:
        """Ask the people in the conversation and wait for their answer (human in the loop).

        ``payload`` has a ``question`` (text) and optionally ``choices`` (a list of values to
        pick from) or ``schema`` (a JSON schema of the value). The answer pauses (an
        ``interrupt`` frame, status ``interrupted``) until a client sends ``resume``; returns
        its ``value``. Raises :class:`dari.protocol.errors.DariError` when the question
        expires (the agent's ``interrupt_timeout_s``); a ``cancel`` cancels the answer.
        """


class AgentBackend(ABC):
    """One configured agent's way of producing answers."""

    kind: ClassVar[str]
    takes_images: ClassVar[bool] = False
    # Backends that never look at history (echo) spare every answer a store read.
    uses_history: ClassVar[bool] = True

    def __init__(self, config: AgentConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings

    def parse_options(self, model: type[OptionsT]) -> OptionsT:
        """``config.options`` validated as ``model``; a clear start-up error otherwise."""
        try:
            return model.model_validate(self.config.options)
        except ValidationError as exc:
            raise ValueError(
                f"agent {self.config.name!r}: invalid options for backend {self.kind!r}: {exc}"
            ) from None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare clients or graphs; raise with a clear message if misconfigured."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients; called once at shutdown."""

    @abstractmethod
    def stream(self, request: AgentRequest, ctx: AgentContext) -> AsyncIterator[AgentEvent]:
        """Yield the answer's pieces (and steps) as they are produced."""
