"""History pages bounded by bytes: how big a message is on the wire, and how to cut one that
alone is larger than a page may be.

A ``history`` reply (frame or REST) holds the newest messages that fit in
``limits.max_history_bytes``; the rest are reached with ``before``. Sizes are the messages'
JSON, exactly as ``codec.encode`` writes them.
"""

from __future__ import annotations

from typing import Any

import orjson

# Room for the reply around its messages: type, seq, the conversation's names (up to 128
# characters each, 4 bytes per character at most), more, before and the JSON punctuation.
ENVELOPE_BYTES = 2048


def message_bytes(message: dict[str, Any]) -> int:
    """The message's encoded size in a reply, with the comma that separates it."""
    return len(orjson.dumps(message)) + 1


def shrink(message: dict[str, Any], budget: int) -> dict[str, Any]:
    """A copy of ``message`` that fits in ``budget`` bytes, marked ``truncated: true``: its
    images, steps and reasoning left out, its content cut to fit (at a character boundary)."""
    cut: dict[str, Any] = {
        **message,
        "content": "",
        "images": [],
        "steps": [],
        "truncated": True,
    }
    cut.pop("reasoning", None)
    room = budget - message_bytes(cut)
    content: str = message.get("content") or ""
    if room <= 0 or not content:
        return cut
    # Each character takes 1 to 6 bytes in JSON (escapes); start optimistic and narrow down.
    keep = min(len(content), room)
    while keep > 0:
        size = len(orjson.dumps(content[:keep])) - 2  # without the quotes already counted
        if size <= room:
            break
        keep = max(0, keep * room // size - 1)
    cut["content"] = content[:keep]
    return cut
