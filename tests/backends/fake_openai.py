"""A local stand-in for an OpenAI-compatible chat-completions server, for tests.

It speaks real HTTP/1.1 over a loopback socket and streams the real server-sent-events format
(``data: {chunk}`` ... ``data: [DONE]``), so the official client parses it as it would parse
OpenAI, vLLM or Ollama. Each request body is recorded. Replies are scripted in order with
:meth:`FakeOpenAI.script`; when none is queued, the server answers with the last user text,
word by word. It notices when a client hangs up before a reply is over.

    async with FakeOpenAI() as upstream:
        upstream.script(Reply(pieces=["Hel", "lo"]), Reply(status=429))
        ... AsyncOpenAI(base_url=upstream.base_url, ...)
        assert upstream.requests[0]["messages"][-1] == {"role": "user", "content": "hi"}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any

from dari.agents.text import split_words

Json = dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A function call to stream, its JSON arguments cut into ``fragments`` deltas."""

    name: str
    arguments: Json
    id: str = "call_1"
    fragments: int = 3


@dataclass(frozen=True)
class Reply:
    """What the server does with one request."""

    # Deltas in order: a str is content; a dict is sent as the delta itself (e.g. reasoning).
    pieces: Sequence[str | Json] = field(default_factory=list)
    delay_s: float = 0.0  # before each piece
    status: int | None = None  # fail with this HTTP status instead of streaming
    break_after: int | None = None  # drop the connection after this many pieces
    stall_after: int | None = None  # go silent after this many pieces, until the client leaves
    stall_headers: bool = False  # go silent before even sending the response headers
    tool_calls: list[ToolCall] = field(default_factory=list)  # streamed after the pieces
    finish_reason: str | None = None  # default: "tool_calls" if tool_calls else "stop"
    error_event: str | None = None  # an in-stream {"error": ...} event after the pieces
    omit_finish: bool = False  # end the body cleanly without saying how the answer finished
    # End with a usage chunk whose choices list is empty, as OpenAI does when asked: True for
    # a made-up count, or the usage object to send.
    usage: bool | Json = False
    empty_first: bool = False  # start with a chunk whose choices list is empty (Azure's filter)
    raw: list[bytes] | None = None  # send these bytes as the body instead, one HTTP chunk each


def think(text: str, key: str = "reasoning_content") -> Json:
    """A reasoning delta, as vLLM and DeepSeek (``reasoning_content``) or Ollama and
    OpenRouter (``reasoning``) send it."""
    return {key: text}


def echo_reply(body: Json) -> Reply:
    """Answer with the text of the last user message, one word per piece."""
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content)
    return Reply(pieces=split_words(str(content)))


class FakeOpenAI:
    def __init__(self, default: Callable[[Json], Reply] = echo_reply) -> None:
        self.default = default
        self.requests: list[Json] = []  # each request's JSON body, in arrival order
        self.headers: list[dict[str, str]] = []  # each request's headers (lower-case names)
        # Each request's target as sent: a path, or a whole URL when it came as to a proxy.
        self.targets: list[str] = []
        self.hangups = 0  # clients that closed the connection before their reply was over
        self.hung_up = asyncio.Event()
        self._replies: deque[Reply] = deque()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        self._replies.extend(replies)

    async def wait_hangup(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            await self.hung_up.wait()

    # --- one connection ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request = await _read_request(reader)
            if request is None:
                return
            target, headers, body = request
            self.targets.append(target)
            self.headers.append(headers)
            self.requests.append(body)
            reply = self._replies.popleft() if self._replies else self.default(body)
            try:
                finished = await self._answer(reply, body, reader, writer)
            except ConnectionError:
                finished = False
            if not finished:
                self.hangups += 1
                self.hung_up.set()
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(
        self,
        reply: Reply,
        body: Json,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Send ``reply``; False if the client hung up before it was over."""
        # The client sends nothing more on this connection, so EOF means it hung up.
        gone = asyncio.ensure_future(_hangup(reader))
        try:
            if reply.stall_headers:
                await gone
                return False
            if reply.status is not None:
                writer.write(_error_response(reply.status))
                await writer.drain()
                return True
            return await _stream(reply, str(body.get("model", "")), writer, gone)
        finally:
            gone.cancel()


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, dict[str, str], Json] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, sep, value in (line.partition(":") for line in lines)
            if sep
        }
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    body: Json = json.loads(raw) if raw else {}
    target = request_line.split(" ")[1] if request_line.count(" ") >= 2 else ""
    return target, headers, body


async def _hangup(reader: asyncio.StreamReader) -> None:
    """Return when the client closes its end (it sends nothing after its request)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(1024):
            pass


def _error_response(status: int) -> bytes:
    phrase = HTTPStatus(status).phrase
    payload = json.dumps(
        {"error": {"message": f"fake upstream says {phrase}", "type": "fake", "code": status}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n"
)


async def _stream(
    reply: Reply, model: str, writer: asyncio.StreamWriter, gone: asyncio.Future[None]
) -> bool:
    writer.write(_STREAM_HEAD)
    if reply.raw is not None:
        for data in reply.raw:
            await _send_raw(writer, data)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
    if reply.empty_first:
        await _send(writer, {**_chunk(model, {}), "choices": []})
    await _send(writer, _chunk(model, {"role": "assistant", "content": ""}))
    for index, piece in enumerate(reply.pieces):
        if reply.stall_after == index:
            await gone
            return False
        if reply.break_after == index:
            writer.transport.abort()
            return True
        if reply.delay_s:
            await asyncio.wait({gone}, timeout=reply.delay_s)
        if gone.done():
            return False
        delta = {"content": piece} if isinstance(piece, str) else piece
        await _send(writer, _chunk(model, delta))
    if reply.stall_after == len(reply.pieces):
        await gone
        return False
    if reply.break_after == len(reply.pieces):
        writer.transport.abort()
        return True
    for position, call in enumerate(reply.tool_calls):
        for delta in _tool_call_deltas(position, call):
            await _send(writer, _chunk(model, {"tool_calls": [delta]}))
    if reply.error_event is not None:
        await _send(writer, {"error": {"message": reply.error_event, "type": "server_error"}})
    elif not reply.omit_finish:
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        await _send(writer, _chunk(model, {}, finish))
    if reply.usage:
        usage = reply.usage
        if usage is True:
            usage = {"prompt_tokens": 3, "completion_tokens": len(reply.pieces), "total_tokens": 9}
        await _send(writer, {**_chunk(model, {}), "choices": [], "usage": usage})
    await _send_raw(writer, b"data: [DONE]\n\n")
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


def _tool_call_deltas(position: int, call: ToolCall) -> list[Json]:
    text = json.dumps(call.arguments, ensure_ascii=False)
    size = max(1, -(-len(text) // call.fragments))
    parts = [text[i : i + size] for i in range(0, len(text), size)]
    first: Json = {
        "index": position,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": ""},
    }
    return [first] + [{"index": position, "function": {"arguments": part}} for part in parts]


def _chunk(model: str, delta: Json, finish_reason: str | None = None) -> Json:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


async def _send(writer: asyncio.StreamWriter, event: Json) -> None:
    await _send_raw(writer, f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())


async def _send_raw(writer: asyncio.StreamWriter, data: bytes) -> None:
    # One HTTP chunk per event, flushed at once, like a real streaming server.
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()
