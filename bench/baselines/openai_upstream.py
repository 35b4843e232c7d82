"""A paced OpenAI-compatible chat-completions server: the model the relay scenario relays.

``POST /v1/chat/completions`` with ``stream: true`` answers with the last user message, one
``chat.completion.chunk`` per word (``\\s*\\S+\\s*``, so the pieces join back to the exact text),
the first due one interval after the request arrived and each next one interval later, on an
absolute schedule (a late write does not slow the source, as with a real model). Chunks have
OpenAI's shape (id, object, created, model, system_fingerprint, choices with delta, logprobs
and finish_reason, and ``usage: null`` when usage was asked for); then the finish chunk, the
usage chunk with empty ``choices`` when ``stream_options.include_usage`` is set, and
``[DONE]``. HTTP/1.1 with keep-alive and chunked bodies, on a bare asyncio protocol (uvloop):
it shares the load generator's core, so it must cost little per chunk.

Run: ``python openai_upstream.py --port 8900 --interval-ms 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import re

import orjson
import uvloop

PIECE = re.compile(rb"\s*\S+\s*")
_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"connection: keep-alive\r\n\r\n"
)
_PREFIX = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench","system_fingerprint":"fp_bench","choices":[{"index":0,"delta":'
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n"


def _frame(data: bytes) -> bytes:
    """One HTTP chunk holding one server-sent event."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _content_length(head: bytes) -> int:
    at = head.find(b"content-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at)
    return int(head[at + 15 : end if end >= 0 else len(head)])


def _chunk(delta: bytes, finish: bytes, usage: bytes) -> bytes:
    return _frame(
        _PREFIX + delta + b',"logprobs":null,"finish_reason":' + finish + b"}]" + usage + b"}\n\n"
    )


class Upstream(asyncio.Protocol):
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.pieces: list[bytes] = []
        self.sent = 0
        self.t0 = 0.0
        self.usage = b""
        self.handle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handle is not None:
            self.handle.cancel()  # the client hung up mid-answer: stop generating
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.handle is None:
            self._next_request()

    def _next_request(self) -> None:
        """Start answering the next complete request in the buffer, if there is one."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.transport is None:
            return
        head = self.buffer[:end].lower()
        length = _content_length(head)
        if len(self.buffer) < end + 4 + length:
            return
        body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
        if not head.startswith(b"post ") or b"/chat/completions" not in head.split(b"\r\n", 1)[0]:
            self.transport.write(_NOT_FOUND)
            self._next_request()
            return
        request = orjson.loads(body)
        content = request["messages"][-1]["content"]
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        text = content.encode()
        self.pieces = PIECE.findall(text) or [text]
        wants_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        self.usage = b',"usage":null' if wants_usage else b""
        self.sent = 0
        self.t0 = self.loop.time()
        self.transport.write(
            _HEAD + _chunk(b'{"role":"assistant","content":""}', b"null", self.usage)
        )
        self.handle = self.loop.call_at(self.t0 + self.interval, self._tick)

    def _tick(self) -> None:
        transport = self.transport
        if transport is None:
            return
        piece = self.pieces[self.sent]
        self.sent += 1
        transport.write(
            _chunk(b'{"content":' + orjson.dumps(piece.decode()) + b"}", b"null", self.usage)
        )
        if self.sent < len(self.pieces):
            self.handle = self.loop.call_at(self.t0 + (self.sent + 1) * self.interval, self._tick)
            return
        tail = _chunk(b"{}", b'"stop"', self.usage)
        if self.usage:
            words = len(self.pieces)
            usage = b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (
                words + 8,
                words,
                2 * words + 8,
            )
            tail += _frame(
                b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":'
                b'1700000000,"model":"bench","system_fingerprint":"fp_bench","choices":[],'
                b'"usage":' + usage + b"}\n\n"
            )
        transport.write(tail + _frame(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self.handle = None
        self._next_request()  # keep-alive: a pipelined or next request on this connection


async def serve(host: str, port: int, interval: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(interval), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.interval_ms / 1000))
