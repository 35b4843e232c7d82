"""The Vercel AI SDK's UI Message Stream (v1), rendered from dari frames.

Pure: dari frames of one answer in, UI message chunks out (as dicts), so it is tested without
sockets. In: the body ``DefaultChatTransport`` posts (``id`` is the chat, ``messages`` the whole
conversation as the browser holds it; only the last user message is new input, the history is
dari's). Out, per answer::

    start (messageId) · start-step · [reasoning-start/delta/end] · [data-dari-step] ·
    text-start · text-delta… · text-end · [tool-…] · [data-dari-interrupt] · [data-dari-report] ·
    [error] · finish-step · finish (finishReason, messageMetadata) | abort

each as ``data: {json}\\n\\n`` and the stream closed by ``data: [DONE]``.

An agent's question (a dari ``interrupt``) is a ``data-dari-interrupt`` part (the SDK version
dari is tested with has no tool-approval parts), updated in place as it is answered; the
stream stays open while the answer waits. The answer is sent as a ``resume`` field in the body
of the next POST (:func:`parse_resume`), whose stream is the same answer from its start.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from dari.protocol.errors import ProtocolError
from dari.protocol.frames import Frame

Chunk = dict[str, Any]

HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "connection": "keep-alive",
    "x-accel-buffering": "no",  # proxies: pass each chunk on as it comes
    "x-vercel-ai-ui-message-stream": "v1",
}
DONE = "data: [DONE]\n\n"

# dari's finish reasons → the AI SDK's (``cancelled`` becomes an ``abort`` chunk instead).
_FINISH_REASONS = {
    "stop": "stop",
    "error": "error",
    "length": "length",
    "content_filter": "content-filter",
}
_USAGE_KEYS = {
    "prompt_tokens": "inputTokens",
    "completion_tokens": "outputTokens",
    "total_tokens": "totalTokens",
    "reasoning_tokens": "reasoningTokens",
}


# --- the request ---------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UIPart(_Model):
    type: str
    text: str | None = None
    url: str | None = None
    mediaType: str | None = None


class UIMessage(_Model):
    id: str
    role: Literal["system", "user", "assistant"]
    parts: list[UIPart] = []


class ChatRequest(_Model):
    id: str
    messages: list[UIMessage]
    trigger: str | None = None
    messageId: str | None = None


class ResumeBody(_Model):
    """The answer to an agent's question, sent in a POST body's ``resume`` field."""

    interrupt_id: str
    value: Any = None


class ResumeRequest(_Model):
    id: str
    resume: ResumeBody


def parse_resume(body: bytes) -> ResumeRequest | None:
    """``{"id": chat id, "resume": {"interrupt_id", "value"}, ...}``, or None when the body has
    no ``resume`` (a chat); :class:`ProtocolError` when it has one that is malformed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # parse_request says what is wrong
    if not isinstance(data, dict) or "resume" not in data:
        return None
    try:
        return ResumeRequest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise ProtocolError(f"{where}: {error['msg']}") from None


class UserInput(_Model):
    """The new input of one request: the last user message, as a ``chat`` would carry it."""

    message_id: str
    text: str
    images: list[str]
    regenerate: bool


def parse_request(body: bytes) -> tuple[ChatRequest, UserInput]:
    """The request and its new input; :class:`ProtocolError` (``bad_request``) otherwise."""
    try:
        request = ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise ProtocolError(f"{where}: {error['msg']}") from None
    if not request.messages or request.messages[-1].role != "user":
        raise ProtocolError("the last message must be the user's new message")
    last = request.messages[-1]
    texts: list[str] = []
    images: list[str] = []
    for part in last.parts:
        if part.type == "text" and part.text is not None:
            texts.append(part.text)
        elif part.type == "file":
            if not (part.mediaType or "").startswith("image/") or not part.url:
                raise ProtocolError("only image files can be sent")
            images.append(part.url)
    return request, UserInput(
        message_id=last.id,
        text="\n".join(texts),
        images=images,
        regenerate=request.trigger == "regenerate-message",
    )


# --- the response --------------------------------------------------------------------------


def answer_message_id(request_id: str) -> str:
    """The assistant message's id: stable per answer, so a resumed stream names it the same."""
    return f"{request_id}-answer"


def sse(chunk: Chunk) -> str:
    return f"data: {orjson.dumps(chunk).decode()}\n\n"


def usage_of(frame: Frame) -> dict[str, int] | None:
    usage = frame.get("usage")
    if not isinstance(usage, dict):
        return None
    mapped = {_USAGE_KEYS[k]: v for k, v in usage.items() if k in _USAGE_KEYS and type(v) is int}
    return mapped or None


class AnswerStream:
    """The chunks of one answer (``request_id``), fed its frames in log order.

    Stateful: which text or reasoning part is open, what a tool's arguments were, how much of
    the text was sent (a ``snapshot`` carries the text so far; only what was not sent yet is
    sent). After ``end`` it is :attr:`done` and ignores everything.
    """

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.message_id = answer_message_id(request_id)
        self.started = False
        self.done = False
        self.text = ""  # sent so far, to tell a snapshot's new part from what was sent
        self.reasoning = ""
        self._parts = 0
        self._text_id: str | None = None
        self._reasoning_id: str | None = None
        self._tool_arguments: dict[str, str] = {}
        self._tool_ready: set[str] = set()

    def feed(self, frame: Frame) -> list[Chunk]:
        if self.done:
            return []
        kind = frame.get("type")
        if kind == "auto_report":
            return [*self._start(frame), _report(frame)]
        if frame.get("request_id") != self.request_id:
            return []
        if kind == "start":
            return self._start(frame)
        if kind == "snapshot":
            return self._snapshot(frame)
        if kind == "response":
            return [*self._start(frame), *self._text(frame["content"])]
        if kind == "reasoning":
            return [*self._start(frame), *self._reasoning(frame["content"])]
        if kind == "step":
            return [*self._start(frame), _step(frame)]
        if kind == "tool":
            return [*self._start(frame), *self._tool(frame)]
        if kind == "interrupt":
            return [*self._start(frame), _interrupt(frame)]
        if kind == "error":
            return [*self._start(frame), {"type": "error", "errorText": frame["message"]}]
        if kind == "end":
            return self._end(frame)
        return []

    # --- parts ---------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        self._parts += 1
        return f"{prefix}-{self._parts}"

    def _start(self, frame: Frame) -> list[Chunk]:
        if self.started:
            return []
        self.started = True
        metadata = {
            "requestId": self.request_id,
            "projectId": frame.get("project_id"),
            "agentName": frame.get("agent_name"),
            "threadId": frame.get("thread_id"),
        }
        return [
            {"type": "start", "messageId": self.message_id, "messageMetadata": metadata},
            {"type": "start-step"},
        ]

    def _close_text(self) -> list[Chunk]:
        if self._text_id is None:
            return []
        chunk = {"type": "text-end", "id": self._text_id}
        self._text_id = None
        return [chunk]

    def _close_reasoning(self) -> list[Chunk]:
        if self._reasoning_id is None:
            return []
        chunk = {"type": "reasoning-end", "id": self._reasoning_id}
        self._reasoning_id = None
        return [chunk]

    def _text(self, delta: str) -> list[Chunk]:
        if not delta:
            return []
        chunks = self._close_reasoning()
        if self._text_id is None:
            self._text_id = self._next_id("text")
            chunks.append({"type": "text-start", "id": self._text_id})
        chunks.append({"type": "text-delta", "id": self._text_id, "delta": delta})
        self.text += delta
        return chunks

    def _reasoning(self, delta: str) -> list[Chunk]:
        if not delta:
            return []
        chunks = self._close_text()
        if self._reasoning_id is None:
            self._reasoning_id = self._next_id("reasoning")
            chunks.append({"type": "reasoning-start", "id": self._reasoning_id})
        chunks.append({"type": "reasoning-delta", "id": self._reasoning_id, "delta": delta})
        self.reasoning += delta
        return chunks

    def _snapshot(self, frame: Frame) -> list[Chunk]:
        """The answer so far (a resumed stream's start): only what was not sent yet."""
        chunks = self._start(frame)
        for step in frame.get("steps") or []:
            chunks.append(_step(step))
        for tool in frame.get("tools") or []:
            chunks.extend(self._tool(tool))
        for question in frame.get("interrupts") or []:
            chunks.append(_interrupt(question))
        reasoning = frame.get("reasoning")
        if isinstance(reasoning, str) and reasoning.startswith(self.reasoning):
            chunks.extend(self._reasoning(reasoning[len(self.reasoning) :]))
        content = frame.get("content") or ""
        if content.startswith(self.text):
            chunks.extend(self._text(content[len(self.text) :]))
        return chunks

    def _tool(self, frame: Frame) -> list[Chunk]:
        """dari's ``tool`` frames (arguments carry the text so far) as dynamic tool parts."""
        call_id, name, state = frame["tool_call_id"], frame.get("name", ""), frame.get("state")
        if call_id in self._tool_ready:
            return []  # its output was sent (a snapshot held it already)
        chunks: list[Chunk] = []
        if call_id not in self._tool_arguments:
            self._tool_arguments[call_id] = ""
            chunks.append(
                {
                    "type": "tool-input-start",
                    "toolCallId": call_id,
                    "toolName": name,
                    "dynamic": True,
                }
            )
        arguments = frame.get("arguments")
        sent = self._tool_arguments[call_id]
        if isinstance(arguments, str) and arguments.startswith(sent) and len(arguments) > len(sent):
            chunks.append(
                {
                    "type": "tool-input-delta",
                    "toolCallId": call_id,
                    "inputTextDelta": arguments[len(sent) :],
                }
            )
            self._tool_arguments[call_id] = arguments
        if state in ("finished", "failed") and call_id not in self._tool_ready:
            self._tool_ready.add(call_id)
            chunks.append(
                {
                    "type": "tool-input-available",
                    "toolCallId": call_id,
                    "toolName": name,
                    "input": _json_or_text(self._tool_arguments[call_id]),
                    "dynamic": True,
                }
            )
        if state == "finished":
            chunks.append(
                {
                    "type": "tool-output-available",
                    "toolCallId": call_id,
                    "output": frame.get("result"),
                    "dynamic": True,
                }
            )
        elif state == "failed":
            chunks.append(
                {
                    "type": "tool-output-error",
                    "toolCallId": call_id,
                    "errorText": str(frame.get("error") or "the tool failed"),
                    "dynamic": True,
                }
            )
        return chunks

    def _end(self, frame: Frame) -> list[Chunk]:
        chunks = [*self._start(frame), *self._close_text(), *self._close_reasoning()]
        chunks.append({"type": "finish-step"})
        self.done = True
        reason = frame.get("finish_reason", "stop")
        if reason == "cancelled":
            chunks.append({"type": "abort"})
            return chunks
        finish_reason = _FINISH_REASONS.get(reason, "other")
        metadata: dict[str, Any] = {"requestId": self.request_id, "finishReason": finish_reason}
        usage = usage_of(frame)
        if usage is not None:
            metadata["usage"] = usage
        chunks.append(
            {"type": "finish", "finishReason": finish_reason, "messageMetadata": metadata}
        )
        return chunks


def _step(step: Frame) -> Chunk:
    """A dari step as a data part; one part per step name, updated in place by the SDK."""
    return {
        "type": "data-dari-step",
        "id": f"step-{step.get('name', '')}",
        "data": {k: step.get(k) for k in ("name", "content", "state")},
    }


def _interrupt(frame: Frame) -> Chunk:
    """An agent's question as a data part; one per question, updated in place by the SDK."""
    data = {k: frame.get(k) for k in ("interrupt_id", "payload", "expires_at", "state")}
    if frame.get("state") == "answered":
        data["value"] = frame.get("value")
    part_id = f"interrupt-{frame.get('interrupt_id')}"
    return {"type": "data-dari-interrupt", "id": part_id, "data": data}


def _report(frame: Frame) -> Chunk:
    return {
        "type": "data-dari-report",
        "id": f"report-{frame.get('task_id')}",
        "data": {
            k: frame.get(k)
            for k in ("content", "task_id", "agent_name", "project_id", "thread_id", "message_id")
        },
    }


def _json_or_text(text: str) -> Any:
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return text
