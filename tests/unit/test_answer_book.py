"""The Python client's answer assembly keeps reasoning and usage apart from the text."""

from __future__ import annotations

from dari.client.answers import AnswerBook


def test_reasoning_and_usage_are_kept_apart_from_the_text() -> None:
    book = AnswerBook()
    frames = [
        {"type": "start", "request_id": "r"},
        {"type": "reasoning", "request_id": "r", "content": "think "},
        {"type": "response", "request_id": "r", "content": "Hi"},
        {"type": "reasoning", "request_id": "r", "content": "more"},
        {"type": "response", "request_id": "r", "content": "!"},
        {
            "type": "end",
            "request_id": "r",
            "finish_reason": "length",
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        },
    ]
    for frame in frames:
        book.apply(frame)
    answer = book.get("r")
    assert (answer.text, answer.reasoning, answer.finish_reason) == ("Hi!", "think more", "length")
    assert answer.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_a_snapshot_replaces_text_and_reasoning() -> None:
    book = AnswerBook()
    book.apply({"type": "reasoning", "request_id": "r", "content": "stale"})
    book.apply({"type": "snapshot", "request_id": "r", "content": "Hel", "reasoning": "so far"})
    book.apply({"type": "reasoning", "request_id": "r", "content": ", then"})
    book.apply({"type": "response", "request_id": "r", "content": "lo"})
    answer = book.get("r")
    assert (answer.text, answer.reasoning) == ("Hello", "so far, then")
