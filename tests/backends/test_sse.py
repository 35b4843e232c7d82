"""The lean stream reader reads what the official ``openai`` client reads.

The official client parses each recorded stream into ``ChatCompletionChunk`` models, served over
real HTTP by the local fake server; dari's reader (:mod:`dari.agents.sse`) parses the same
bytes. Text, reasoning, tool calls, finish reason and usage must come out the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionChunk

from dari.agents.sse import DONE, MalformedChunk, SSEDecoder, Turn, UpstreamError
from tests.backends.fake_openai import FakeOpenAI, Reply
from tests.backends.recorded import RECORDINGS


@dataclass
class Parsed:
    text: str
    reasoning: str
    calls: list[tuple[int, str, str, str]]  # index, id, name, arguments
    finish_reason: str | None
    usage: dict[str, Any] | None


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


async def official(upstream: FakeOpenAI, body: list[bytes]) -> Parsed:
    """What the official client makes of ``body``, accumulated from its chunk models."""
    upstream.script(Reply(raw=body))
    text, reasoning = [], []
    calls: dict[int, list[Any]] = {}
    finish, usage = None, None
    async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key="k") as client:
        stream = await client.chat.completions.create(
            model="rec-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            assert isinstance(chunk, ChatCompletionChunk)
            if chunk.usage is not None:
                usage = chunk.usage.model_dump(exclude_unset=True)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            delta = choice.delta
            extra = delta.model_extra or {}
            reasoning.append(extra.get("reasoning_content") or extra.get("reasoning") or "")
            text.append(delta.content or "")
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, [call.index, "", "", ""])
                entry[1] = entry[1] or call.id or ""
                if call.function is not None:
                    entry[2] = entry[2] or call.function.name or ""
                    entry[3] += call.function.arguments or ""
    return Parsed(
        "".join(text),
        "".join(reasoning),
        [tuple(calls[i]) for i in sorted(calls)],
        finish,
        usage,
    )


def lean(body: list[bytes]) -> Parsed:
    decoder, turn = SSEDecoder(), Turn()
    payloads = [p for piece in body for p in decoder.feed(piece)] + decoder.finish()
    assert payloads.count(DONE) == 1 and payloads[-1] == DONE
    for payload in payloads[:-1]:
        turn.add(orjson.loads(payload))
    return Parsed(
        "".join(turn.text),
        "".join(turn.reasoning),
        [(c.index, c.id, c.name, c.arguments) for c in turn.calls],
        turn.finish_reason,
        turn.usage,
    )


@pytest.mark.parametrize("name", sorted(RECORDINGS))
async def test_lean_parse_equals_the_official_clients(upstream: FakeOpenAI, name: str) -> None:
    body = RECORDINGS[name]
    assert await official(upstream, body) == lean(body)


async def test_the_recordings_cover_every_chunk_shape(upstream: FakeOpenAI) -> None:
    tools, reasoning = lean(RECORDINGS["tool_calls"]), lean(RECORDINGS["reasoning"])
    assert tools.text == "잠시만요, 알아볼게요." and tools.finish_reason == "tool_calls"
    assert tools.calls == [
        (0, "call_a", "delegate_task", '{"agent_name": "researcher", "task": "조사"}'),
        (1, "call_b", "delegate_task", '{"agent_name": "w", "task": "t"}'),
    ]
    assert tools.usage is not None and tools.usage["total_tokens"] == 58
    assert reasoning.reasoning == "사용자가 인사를 했다. 짧게 답하자. (존댓말)"
    assert reasoning.text == "안녕하세요! 무엇을 도와" and reasoning.finish_reason == "length"
    assert reasoning.usage == {
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "total_tokens": 42,
        "completion_tokens_details": {"reasoning_tokens": 21},
    }
    # The cuts are awkward: inside UTF-8 characters and between CR and LF.
    for body in RECORDINGS.values():
        assert any(not _is_utf8(piece) for piece in body)
    assert any(piece.endswith(b"\r") for piece in RECORDINGS["reasoning"])


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


# --- the decoder alone --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_any_cutting_gives_the_same_events(name: str) -> None:
    body = b"".join(RECORDINGS[name])
    whole = SSEDecoder()
    expected = whole.feed(body) + whole.finish()
    for size in (1, 2, 3, 50):
        decoder = SSEDecoder()
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        got = [p for piece in pieces for p in decoder.feed(piece)] + decoder.finish()
        assert got == expected, size


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_line_ends_fields_and_comments(end: bytes) -> None:
    lines = [b": comment", b"event: message", b"id: 7", b"data: one", b"data:two", b"data", b""]
    lines += [b"retry: 10", b"data: [DONE]", b""]
    decoder = SSEDecoder()
    assert decoder.feed(end.join(lines)) == [b"one\ntwo\n"]
    assert decoder.feed(end) == [DONE]


def test_an_event_without_its_blank_line_counts_at_the_end_a_cut_line_does_not() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: last\n") == []
    assert decoder.finish() == [b"last"]
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"cut') == []
    assert decoder.finish() == []


# --- chunks dari refuses ------------------------------------------------------------------


def test_an_error_event_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="overloaded"):
        Turn().add({"error": {"message": "overloaded", "type": "server_error"}})
    with pytest.raises(UpstreamError, match="An error occurred during streaming"):
        Turn().add({"error": "boom"})


@pytest.mark.parametrize(
    "chunk",
    [
        [],
        {"choices": "nope"},
        {"choices": [{"delta": {"content": 5}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]},
    ],
)
def test_a_chunk_of_the_wrong_shape_is_malformed(chunk: Any) -> None:
    with pytest.raises(MalformedChunk):
        Turn().add(chunk)
