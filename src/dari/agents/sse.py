"""An OpenAI-compatible chat-completions stream, read from raw bytes.

The official client builds a pydantic model per streamed chunk (200-300 µs of CPU each); here
the body is cut into server-sent events on bytes and each event's ``data`` is parsed with
orjson, touching only what the gateway uses: content and reasoning deltas, tool-call deltas,
``finish_reason`` and ``usage``. Pure: no I/O and no ``openai`` import, so it can be tested on
recorded streams and compared with the official client's own parsing.

    decoder, turn = SSEDecoder(), Turn()
    for payload in decoder.feed(body_bytes):
        if payload == DONE:
            break
        reasoning, content = turn.add(orjson.loads(payload))
"""

from __future__ import annotations

from typing import Any

DONE = b"[DONE]"
_DATA = b"data:"


class UpstreamError(Exception):
    """The stream carried an ``{"error": {...}}`` event instead of a chunk."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedChunk(ValueError):
    """A chunk that is JSON but not shaped like a chat-completion chunk."""


class SSEDecoder:
    """Server-sent events (WHATWG HTML, "event stream interpretation") on bytes.

    :meth:`feed` takes the body as it arrives, in pieces cut anywhere (even inside a UTF-8
    character), and returns the ``data`` of each event it completed. Lines may end with LF,
    CRLF or CR; comments and the ``event``, ``id`` and ``retry`` fields are ignored (chat
    completions carry everything in ``data``).
    """

    __slots__ = ("_after_cr", "_data", "_partial")

    def __init__(self) -> None:
        self._partial = b""  # a line not ended yet
        self._data: list[bytes] = []  # data lines of the event being read
        self._after_cr = False  # the last piece ended with CR: an LF first is its CRLF's

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._after_cr:
            self._after_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buffer = self._partial + chunk if self._partial else chunk
        if b"\r" in buffer:
            self._after_cr = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._partial = lines.pop()
        return self._lines(lines)

    def finish(self) -> list[bytes]:
        """The body ended: an event whose lines were all ended counts even without its blank
        line. A line cut short (no line end) is dropped: the body was cut, not finished."""
        self._partial = b""
        return self._lines([b""])

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if line.startswith(_DATA):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif line == b"data":
                data.append(b"")
            elif not line and data:
                events.append(data[0] if len(data) == 1 else b"\n".join(data))
                data.clear()
            # anything else: a comment (":...") or a field dari does not use
        return events


class ToolCall:
    """One function call, assembled from its deltas (id and name come with the first only)."""

    __slots__ = ("arguments", "id", "index", "name")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = ""
        self.name = ""
        self.arguments = ""

    def __repr__(self) -> str:
        return f"ToolCall({self.index}, id={self.id!r}, name={self.name!r}, {self.arguments!r})"


class Turn:
    """What one streamed completion said: text, reasoning, tool calls, how it ended, its cost."""

    __slots__ = ("by_index", "finish_reason", "reasoning", "text", "tool_deltas", "usage")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.by_index: dict[int, ToolCall] = {}
        # (call, arguments text it gained, whether the call is new) per tool-call delta, for
        # the reader to report and clear: calls are shown as they are written.
        self.tool_deltas: list[tuple[ToolCall, str, bool]] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    @property
    def calls(self) -> list[ToolCall]:
        return [self.by_index[index] for index in sorted(self.by_index)]

    def add(self, chunk: Any) -> tuple[str, str]:
        """Take in one parsed chunk; return its ``(reasoning, content)`` text (either may be "").

        Raises :class:`UpstreamError` for an error event, :class:`MalformedChunk` for a chunk
        of the wrong shape."""
        try:
            return self._add(chunk)
        except (AttributeError, TypeError, ValueError) as exc:
            raise MalformedChunk(f"not a chat-completion chunk: {type(exc).__name__}") from None

    def _add(self, chunk: dict[str, Any]) -> tuple[str, str]:
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else None
            if not isinstance(message, str) or not message:
                message = "An error occurred during streaming"
            raise UpstreamError(message)
        usage = chunk.get("usage")
        if usage:  # a trailing chunk with empty choices, or (vLLM) on every chunk
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:  # usage-only, or e.g. Azure's prompt-filter chunk
            return "", ""
        choice = choices[0]
        finish = choice.get("finish_reason")
        if finish:
            self.finish_reason = finish
        delta = choice.get("delta")
        if not delta:
            return "", ""
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            self._add_tool_calls(tool_calls)
        # vLLM, DeepSeek and llama.cpp send reasoning_content; OpenRouter and Ollama reasoning.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        if reasoning:
            self.reasoning.append(_text(reasoning))
        content = delta.get("content") or ""
        if content:
            self.text.append(_text(content))
        return reasoning, content

    def _add_tool_calls(self, deltas: list[dict[str, Any]]) -> None:
        by_index = self.by_index
        for delta in deltas:
            index = delta.get("index")
            if index is None:  # some servers omit it for single calls
                index = len(by_index)
            call = by_index.get(index)
            new = call is None
            if call is None:
                call = by_index[index] = ToolCall(index)
            call.id = call.id or delta.get("id") or ""
            function = delta.get("function")
            added = ""
            if function:
                call.name = call.name or function.get("name") or ""
                added = _text(function.get("arguments") or "")
                call.arguments += added
            self.tool_deltas.append((call, added, new))


def _text(value: Any) -> str:
    if value.__class__ is not str:
        raise TypeError("text is not a string")
    return str(value)
