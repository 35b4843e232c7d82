"""Text helpers shared by the offline backends."""

from __future__ import annotations

import re
from collections.abc import Iterator

_WORD = re.compile(r"\S+\s*")


def split_words(text: str) -> list[str]:
    """``text`` in pieces, a word each with its trailing whitespace; joined, they give ``text``."""
    pieces = _WORD.findall(text)
    if not pieces:
        return [text] if text else []
    lead = len(text) - len(text.lstrip())
    if lead:
        pieces[0] = text[:lead] + pieces[0]
    return pieces


def iter_words(text: str) -> Iterator[str]:
    """The pieces of ``split_words``, each cut when it is asked for: an answer's first word
    goes out without the whole text being cut first (about 0.1 ms for 500 words)."""
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
