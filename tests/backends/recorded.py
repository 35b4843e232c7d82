"""Recorded chat-completion streams covering every chunk shape dari reads, as raw bytes.

Each recording is one SSE body cut into the pieces a transport might deliver: cuts fall inside
lines, inside UTF-8 characters and between CR and LF, so a parser that assumes whole lines or
whole characters per piece shows it.
"""

from __future__ import annotations

import json
from typing import Any

Json = dict[str, Any]


def _chunk(delta: Json | None, finish: str | None = None, **extra: Any) -> Json:
    chunk: Json = {
        "id": "chatcmpl-rec",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "rec-model",
        "system_fingerprint": "fp_rec",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    chunk.update(extra)
    return chunk


def _data(event: Json | str) -> str:
    return "data: " + (event if isinstance(event, str) else json.dumps(event, ensure_ascii=False))


def _cut(body: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    """``body`` in pieces of the given sizes, cycled."""
    pieces, at, turn = [], 0, 0
    while at < len(body):
        size = sizes[turn % len(sizes)]
        pieces.append(body[at : at + size])
        at, turn = at + size, turn + 1
    return pieces


# Tool calls, as OpenAI streams them: an empty-choices prompt-filter chunk first (Azure), a
# keep-alive comment, role, text, two calls in fragments, the finish chunk, then (asked with
# stream_options.include_usage) a usage-only chunk whose choices list is empty, and [DONE].
_TOOL_EVENTS: list[str] = [
    ": keep-alive",
    "",
    _data(_chunk(None, prompt_filter_results=[{"prompt_index": 0, "content_filter_results": {}}])),
    "",
    _data(_chunk({"role": "assistant", "content": ""}, usage=None)),
    "",
    _data(_chunk({"content": "잠시만요, "}, usage=None)),
    "",
    _data(_chunk({"content": "알아볼게요."}, usage=None)),
    "",
    _data(
        _chunk(
            {
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "delegate_task", "arguments": ""},
                    }
                ],
            },
            usage=None,
        )
    ),
    "",
    _data(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"agent_name": "re'}}]})),
    "",
    _data(
        _chunk(
            {"tool_calls": [{"index": 0, "function": {"arguments": 'searcher", "task": "조사"}'}}]}
        )
    ),
    "",
    _data(
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "delegate_task", "arguments": '{"agent_name"'},
                    }
                ]
            }
        )
    ),
    "",
    _data(_chunk({"tool_calls": [{"index": 1, "function": {"arguments": ': "w", "task": "t"}'}}]})),
    "",
    _data(_chunk({}, "tool_calls", usage=None)),
    "",
    _data(
        _chunk(
            None,
            usage={
                "prompt_tokens": 41,
                "completion_tokens": 17,
                "total_tokens": 58,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        )
    ),
    "",
    _data("[DONE]"),
    "",
    "",
]

# A reasoning model cut off by max_tokens, over CRLF line ends: reasoning first (vLLM's
# reasoning_content, then Ollama's reasoning), text, a chunk carrying both, one event whose
# JSON spans two data lines, finish "length", usage with reasoning tokens.
_REASONING_EVENTS: list[str] = [
    _data(_chunk({"role": "assistant", "content": None, "reasoning_content": ""})),
    "",
    _data(_chunk({"reasoning_content": "사용자가 "})),
    "",
    _data(_chunk({"reasoning_content": "인사를 했다."})),
    "",
    _data(_chunk({"reasoning": " 짧게 답하자."})),
    "",
    _data(_chunk({"content": "안녕하세요"})),
    "",
    _data(_chunk({"reasoning_content": " (존댓말)", "content": "! 무엇을"})),
    "",
    'data: {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 1700000000,',
    'data:"model": "rec-model", "choices": [{"index": 0, "delta": {"content": " 도와"},'
    ' "finish_reason": null}]}',
    "",
    _data(_chunk({}, "length")),
    "",
    _data(
        _chunk(
            None,
            usage={
                "prompt_tokens": 12,
                "completion_tokens": 30,
                "total_tokens": 42,
                "completion_tokens_details": {"reasoning_tokens": 21},
            },
        )
    ),
    "",
    _data("[DONE]"),
    "",
    "",
]

TOOL_CALLS: list[bytes] = _cut("\n".join(_TOOL_EVENTS).encode(), (7, 13, 1, 64, 5))
REASONING: list[bytes] = _cut("\r\n".join(_REASONING_EVENTS).encode(), (9, 1, 31, 2, 17))
RECORDINGS = {"tool_calls": TOOL_CALLS, "reasoning": REASONING}
