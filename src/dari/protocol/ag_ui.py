"""AG-UI (1.x) events, rendered from dari frames with the ``ag-ui-protocol`` package's models.

Pure: dari frames in, AG-UI events out, so it is tested without sockets. One dari answer is one
AG-UI run::

    RUN_STARTED · [STEP_STARTED/STEP_FINISHED] · [REASONING_*] · TEXT_MESSAGE_START ·
    TEXT_MESSAGE_CONTENT… · TEXT_MESSAGE_END · [TOOL_CALL_*] · [CUSTOM dari.auto_report] ·
    RUN_FINISHED (outcome, usage) | RUN_ERROR

An agent's question (a dari ``interrupt``, pending) ends the run with the interrupt outcome
(``RUN_FINISHED`` ``outcome: {type: "interrupt", interrupts: [...]}``) while the dari answer
waits; the client's next run carries ``resume`` entries, and its events are the rest of that
same answer (:class:`RunStream` with ``continuing``).

Every run is closed the way the protocol's verifier wants: steps, messages, reasoning and tool
calls still open when the answer ends are ended first. A step dari starts again while it runs
is finished and started anew; one finished that never started is started first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    CustomEvent,
    DataSource,
    ImagePart,
    Interrupt,
    Message,
    MessagesSnapshotEvent,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TextPart,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    UrlSource,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from pydantic import ValidationError

from dari.protocol.errors import ProtocolError
from dari.protocol.frames import Frame

CONTENT_TYPE = "text/event-stream"
REPORT_EVENT = "dari.auto_report"
NOTICE_EVENT = "dari.error"  # an error that is not about the running answer
_encoder = EventEncoder()
_USAGE_KEYS = {
    "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens",
    "total_tokens": "total_tokens",
    "reasoning_tokens": "reasoning_tokens",
}


def sse(event: BaseEvent) -> str:
    """The SSE binding's framing (``data: {json}\\n\\n``), by the package's own encoder."""
    return _encoder.encode(event)


def text(event: BaseEvent) -> str:
    """One event as JSON: the ``data`` of its SSE event, and one WebSocket text frame."""
    return event.model_dump_json(by_alias=True)


def answer_message_id(request_id: str) -> str:
    return f"{request_id}-answer"


# --- the input -----------------------------------------------------------------------------


def parse_input(body: bytes | str) -> RunAgentInput:
    try:
        return RunAgentInput.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise ProtocolError(f"RunAgentInput {where}: {error['msg']}") from None


def user_input(run: RunAgentInput) -> tuple[str, list[str]]:
    """The new input of a run: the last user message's text and images (data: or http(s)).

    The rest of ``messages`` is the client's copy of the history; dari keeps its own.
    """
    for message in reversed(run.messages):
        if isinstance(message, UserMessage):
            break
    else:
        raise ProtocolError("RunAgentInput has no user message")
    if isinstance(message.content, str):
        return message.content, []
    texts: list[str] = []
    images: list[str] = []
    for part in message.content:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            source = part.source
            if isinstance(source, DataSource):
                images.append(f"data:{source.mime_type};base64,{source.value}")
            elif isinstance(source, UrlSource):
                images.append(source.value)
            else:
                raise ProtocolError("images must be data or URL sources")
        else:
            raise ProtocolError("only text and image parts can be sent")
    return "\n".join(texts), images


# --- history -------------------------------------------------------------------------------


def messages_snapshot(history: Iterable[Frame], leave_out: set[str]) -> MessagesSnapshotEvent:
    """A thread's saved messages (``history`` wire records, oldest first) as AG-UI messages.

    Answers still streaming, and those in ``leave_out`` (their run is sent as events), are
    left out, so no text appears twice. An answer keeps the id its live run gave it.
    """
    messages: list[Message] = []
    for record in history:
        request_id = record.get("request_id")
        role = record.get("role")
        if role == "user":
            messages.append(UserMessage(id=f"user-{record['id']}", content=record["content"]))
        elif role == "assistant":
            if record.get("status") == "streaming" or request_id in leave_out:
                continue
            message_id = answer_message_id(request_id) if request_id else f"answer-{record['id']}"
            messages.append(AssistantMessage(id=message_id, content=record["content"]))
        elif role == "report":
            messages.append(
                AssistantMessage(
                    id=f"report-{record['id']}",
                    content=record["content"],
                    name=record.get("agent_name") or None,
                )
            )
    return MessagesSnapshotEvent(messages=messages)


# --- one run -------------------------------------------------------------------------------


def usage_of(frame: Frame) -> list[TokenUsage] | None:
    usage = frame.get("usage")
    if not isinstance(usage, dict):
        return None
    counts = {_USAGE_KEYS[k]: v for k, v in usage.items() if k in _USAGE_KEYS and type(v) is int}
    return [TokenUsage(**counts)] if counts else None


def report_event(frame: Frame) -> CustomEvent:
    keys = ("content", "task_id", "agent_name", "project_id", "thread_id", "message_id")
    return CustomEvent(name=REPORT_EVENT, value={k: frame.get(k) for k in keys})


class RunStream:
    """The events of one run: dari answer ``request_id`` in ``thread_id``, named ``run_id``.

    Fed its frames in log order; after ``end`` (or an error) it is :attr:`done`.
    """

    def __init__(
        self,
        thread_id: str,
        run_id: str,
        request_id: str,
        *,
        continuing: frozenset[str] | None = None,
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.request_id = request_id
        self.message_id = answer_message_id(request_id)
        # A run that goes on with an answer paused on the questions ``continuing`` answers:
        # its first snapshot is what the earlier run showed already (its text a message of its
        # own); those questions do not end this run again.
        self.continuing = continuing
        self._answered = set(continuing or ())
        if continuing is not None:
            self.message_id = f"{self.message_id}-{run_id}"
        self.begun = False
        self.done = False
        self.text = ""  # sent so far: a snapshot sends only the rest
        self.reasoning = ""
        self._text_open = False
        self._reasoning_id: str | None = None
        self._reasonings = 0
        self._steps: set[str] = set()
        self._tools: dict[str, str] = {}  # open tool calls: id -> arguments sent
        self._tool_ends: set[str] = set()

    def begin(self) -> list[BaseEvent]:
        if self.begun:
            return []
        self.begun = True
        return [RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id)]

    def feed(self, frame: Frame) -> list[BaseEvent]:
        if self.done:
            return []
        kind = frame.get("type")
        if kind == "auto_report":
            return [*self.begin(), report_event(frame)]
        if frame.get("request_id") != self.request_id:
            return []
        events = self.begin()
        if kind == "snapshot":
            events += self._snapshot(frame)
        elif kind == "response":
            events += self._text(frame["content"])
        elif kind == "reasoning":
            events += self._reasoning(frame["content"])
        elif kind == "step":
            events += self._step(frame)
        elif kind == "tool":
            events += self._tool(frame)
        elif kind == "interrupt":
            events += self._interrupt([frame])
        elif kind == "error":
            self.done = True
            events.append(RunErrorEvent(message=frame["message"], code=frame.get("code")))
        elif kind == "end":
            events += self._end(frame)
        return events

    def _text(self, delta: str) -> list[BaseEvent]:
        if not delta:
            return []
        events = self._close_reasoning()
        if not self._text_open:
            self._text_open = True
            events.append(TextMessageStartEvent(message_id=self.message_id, role="assistant"))
        events.append(TextMessageContentEvent(message_id=self.message_id, delta=delta))
        self.text += delta
        return events

    def _close_text(self) -> list[BaseEvent]:
        if not self._text_open:
            return []
        self._text_open = False
        return [TextMessageEndEvent(message_id=self.message_id)]

    def _reasoning(self, delta: str) -> list[BaseEvent]:
        if not delta:
            return []
        events: list[BaseEvent] = []
        if self._reasoning_id is None:
            self._reasonings += 1
            self._reasoning_id = f"{self.request_id}-reasoning-{self._reasonings}"
            events += [
                ReasoningStartEvent(message_id=self._reasoning_id),
                ReasoningMessageStartEvent(message_id=self._reasoning_id),
            ]
        events.append(ReasoningMessageContentEvent(message_id=self._reasoning_id, delta=delta))
        self.reasoning += delta
        return events

    def _close_reasoning(self) -> list[BaseEvent]:
        if self._reasoning_id is None:
            return []
        message_id, self._reasoning_id = self._reasoning_id, None
        return [
            ReasoningMessageEndEvent(message_id=message_id),
            ReasoningEndEvent(message_id=message_id),
        ]

    def _step(self, step: Frame) -> list[BaseEvent]:
        name = str(step.get("name") or "step")
        metadata = {"content": step.get("content")}
        events: list[BaseEvent] = []
        if name in self._steps:
            self._steps.discard(name)
            events.append(StepFinishedEvent(step_name=name, metadata=metadata))
            if step.get("state") == "finished":
                return events
        if step.get("state") == "finished":
            events.append(StepStartedEvent(step_name=name, metadata=metadata))
            events.append(StepFinishedEvent(step_name=name, metadata=metadata))
            return events
        self._steps.add(name)
        events.append(StepStartedEvent(step_name=name, metadata=metadata))
        return events

    def _snapshot(self, frame: Frame) -> list[BaseEvent]:
        """The answer so far (a reconnected stream's start): only what was not sent yet."""
        if self.continuing is not None and not self.text and not self.reasoning:
            return self._continue(frame)
        events: list[BaseEvent] = []
        for tool in frame.get("tools") or []:
            events += self._tool(tool)
        if not (self.text or self.reasoning):
            for step in frame.get("steps") or []:
                events += self._step(step)
        reasoning = frame.get("reasoning")
        if isinstance(reasoning, str) and reasoning.startswith(self.reasoning):
            events += self._reasoning(reasoning[len(self.reasoning) :])
        content = frame.get("content") or ""
        if content.startswith(self.text):
            events += self._text(content[len(self.text) :])
        return events + self._interrupt(frame.get("interrupts") or [])

    def _continue(self, frame: Frame) -> list[BaseEvent]:
        """The snapshot a continuing run starts from: the earlier run showed it, so only the
        tool calls still open are (re)started here; the text that follows is new (a message
        of this run's own, see ``message_id``)."""
        self.continuing = None
        events: list[BaseEvent] = []
        for tool in frame.get("tools") or []:
            if tool.get("state") in ("finished", "failed"):
                self._tool_ends.add(str(tool["tool_call_id"]))
            else:
                events += self._tool(tool)
        return events

    def _interrupt(self, questions: list[Frame]) -> list[BaseEvent]:
        """Pending questions end the run with the interrupt outcome; the answer waits."""
        answered = self._answered
        pending = [
            q
            for q in questions
            if q.get("state", "pending") == "pending" and q.get("interrupt_id") not in answered
        ]
        if not pending:
            return []
        self.done = True
        events = self.close_open()
        events.append(
            RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                result={"requestId": self.request_id, "finishReason": "interrupted"},
                outcome=RunFinishedInterruptOutcome(interrupts=[_interrupt_of(q) for q in pending]),
            )
        )
        return events

    def _tool(self, frame: Frame) -> list[BaseEvent]:
        call_id, state = str(frame["tool_call_id"]), frame.get("state")
        if call_id in self._tool_ends:
            return []
        events: list[BaseEvent] = []
        if call_id not in self._tools:
            self._tools[call_id] = ""
            events.append(
                ToolCallStartEvent(
                    tool_call_id=call_id,
                    tool_call_name=str(frame.get("name") or "tool"),
                    parent_message_id=self.message_id,
                )
            )
        arguments, sent = frame.get("arguments"), self._tools[call_id]
        if isinstance(arguments, str) and arguments.startswith(sent) and len(arguments) > len(sent):
            events.append(ToolCallArgsEvent(tool_call_id=call_id, delta=arguments[len(sent) :]))
            self._tools[call_id] = arguments
        if state in ("finished", "failed"):
            del self._tools[call_id]
            self._tool_ends.add(call_id)
            result = frame.get("result") if state == "finished" else frame.get("error")
            content = result if isinstance(result, str) else orjson.dumps(result).decode()
            events += [
                ToolCallEndEvent(tool_call_id=call_id),
                ToolCallResultEvent(
                    message_id=f"{call_id}-result",
                    tool_call_id=call_id,
                    content=content,
                    role="tool",
                ),
            ]
        return events

    def close_open(self) -> list[BaseEvent]:
        """End whatever is still open, as the verifier requires before the run ends."""
        events = [*self._close_text(), *self._close_reasoning()]
        for call_id in list(self._tools):
            del self._tools[call_id]
            self._tool_ends.add(call_id)
            events.append(ToolCallEndEvent(tool_call_id=call_id))
        for name in sorted(self._steps):
            events.append(StepFinishedEvent(step_name=name))
        self._steps.clear()
        return events

    def _end(self, frame: Frame) -> list[BaseEvent]:
        self.done = True
        reason = frame.get("finish_reason", "stop")
        if reason == "error":  # an error frame comes first as a rule; this one had none
            return [RunErrorEvent(message="the answer failed", code="agent_failed")]
        events = self.close_open()
        outcome = RunFinishedCancelledOutcome() if reason == "cancelled" else None
        events.append(
            RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                result={"requestId": self.request_id, "finishReason": reason},
                outcome=outcome or RunFinishedSuccessOutcome(),
                usage=usage_of(frame),
            )
        )
        return events


class ThreadStream:
    """Every answer of one thread as consecutive runs (the WebSocket binding).

    A run begins at its answer's ``start`` (or ``snapshot``, when joining mid-answer) and is
    named by the request id (the ``runId`` the client sent, when it sent one). Frames of an
    answer whose beginning this stream did not see are left out: the history covered it.
    Outside a run, a report is a run of its own, and so is an error (which fails it at once).

    ``opening`` (a joining socket's ``MESSAGES_SNAPSHOT``) goes right after the first run's
    ``RUN_STARTED``: events outside a run are not allowed, and that run is the one in progress.
    """

    def __init__(self, thread_id: str, opening: MessagesSnapshotEvent | None = None) -> None:
        self.thread_id = thread_id
        self.run: RunStream | None = None
        self.opening = opening

    def feed(self, frame: Frame) -> list[BaseEvent]:
        kind = frame.get("type")
        run = self.run
        if run is not None and not run.done:
            if kind == "error" and frame.get("request_id") != run.request_id:
                return [CustomEvent(name=NOTICE_EVENT, value=_error_value(frame))]
            return run.feed(frame)
        if (
            run is not None
            and kind == "interrupt"
            and frame.get("state") == "answered"
            and frame.get("request_id") == run.request_id
        ):
            # Its question was answered (here or anywhere): the rest of it is a run of its own.
            question = str(frame["interrupt_id"])
            self.run = RunStream(
                self.thread_id,
                f"{run.request_id}-{question}",
                run.request_id,
                continuing=frozenset({question}),
            )
            return self.run.begin()
        if kind in ("start", "snapshot"):
            request_id = str(frame["request_id"])
            self.run = RunStream(self.thread_id, request_id, request_id)
            events = self.run.feed(frame)
            if self.opening is not None:
                events.insert(1, self.opening)
                self.opening = None
            return events
        if kind == "auto_report":
            run_id = f"report-{frame.get('task_id')}"
            return [
                RunStartedEvent(thread_id=self.thread_id, run_id=run_id),
                report_event(frame),
                RunFinishedEvent(thread_id=self.thread_id, run_id=run_id),
            ]
        if kind == "error":
            return refused_run(
                self.thread_id, frame.get("request_id"), frame["message"], frame.get("code")
            )
        return []


def refused_run(
    thread_id: str, run_id: str | None, message: str, code: str | None
) -> list[BaseEvent]:
    """An error outside any run (an input refused before its answer began): a run of its own
    that fails at once, as the protocol has no event for an error between runs."""
    run_id = run_id or f"refused-{uuid.uuid4().hex[:12]}"
    return [
        RunStartedEvent(thread_id=thread_id, run_id=run_id),
        RunErrorEvent(message=message, code=code),
    ]


def history_run(thread_id: str, run_id: str, snapshot: MessagesSnapshotEvent) -> list[BaseEvent]:
    """A joining socket's saved messages when no answer is in progress: a run of their own."""
    return [
        RunStartedEvent(thread_id=thread_id, run_id=run_id),
        snapshot,
        RunFinishedEvent(thread_id=thread_id, run_id=run_id),
    ]


def _interrupt_of(question: Frame) -> Interrupt:
    payload = question.get("payload") or {}
    schema = payload.get("schema")
    choices = payload.get("choices")
    if not isinstance(schema, dict) and isinstance(choices, list):
        schema = {"enum": choices}
    return Interrupt(
        id=str(question["interrupt_id"]),
        reason="input_required",
        message=str(payload.get("question") or "") or None,
        response_schema=schema if isinstance(schema, dict) else None,
        expires_at=question.get("expires_at"),
        metadata={"payload": payload, "requestId": question.get("request_id")},
    )


def _error_value(frame: Frame) -> dict[str, Any]:
    return {k: frame.get(k) for k in ("code", "message", "request_id")}
