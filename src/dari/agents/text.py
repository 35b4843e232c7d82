"""Text helpers shared by the offline backends."""

from __future__ import annotations

import re
from collections.abc import Iterator

_WORD = re.compile(r"\S+\s*")


def iter_words(text: str) -> Iterator[str]:
    """``text`` in pieces, a word each with its trailing whitespace (leading whitespace goes
    with the first); joined, they give ``text``. Each is cut when it is asked for: an answer's
    first word goes out without the whole text being cut first (about 0.1 ms for 500 words)."""
    matches = _WORD.finditer(text)
    first = next(matches, None)
    if first is None:
        if text:
            yield text
        return
    lead = len(text) - len(text.lstrip())
    yield text[:lead] + first.group() if lead else first.group()
    for match in matches:
        yield match.group()


def split_words(text: str) -> list[str]:
    """All of ``iter_words(text)`` at once."""
    return list(iter_words(text))
