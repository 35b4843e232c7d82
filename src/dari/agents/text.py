"""Text helpers shared by the offline backends."""

from __future__ import annotations

import re

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
