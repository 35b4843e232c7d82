"""iter_words (through split_words): the offline backends' streaming pieces add up to exactly
the text."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dari.agents.text import split_words

WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000"
text_with_lots_of_whitespace = st.text(
    alphabet=st.one_of(st.sampled_from(WHITESPACE), st.characters()), max_size=200
)


def non_whitespace_runs(piece: str) -> int:
    return len(re.findall(r"\S+", piece))


@given(st.one_of(st.text(), text_with_lots_of_whitespace))
@example("")
@example("   ")
@example("  leading and trailing  ")
@example("a\u00a0b")  # no-break space is whitespace
@example("다리\u3000bridge")
def test_split_words_pieces_join_back_to_the_text(text: str) -> None:
    pieces = split_words(text)
    assert "".join(pieces) == text
    assert all(pieces), "no empty pieces"
    assert all(non_whitespace_runs(piece) <= 1 for piece in pieces)


@given(text_with_lots_of_whitespace)
def test_split_words_gives_one_piece_per_word(text: str) -> None:
    words = text.split()
    pieces = split_words(text)
    assert [piece.strip() for piece in pieces if piece.strip()] == words
    assert len(pieces) == max(len(words), 1 if text else 0)


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("", []),
        ("hello", ["hello"]),
        ("hello world", ["hello ", "world"]),
        ("hello  world\n", ["hello  ", "world\n"]),
        ("  lead", ["  lead"]),
        ("   ", ["   "]),
        ("a\n\nb", ["a\n\n", "b"]),
        ("안녕하세요 집사입니다 🙂", ["안녕하세요 ", "집사입니다 ", "🙂"]),
    ],
)
def test_split_words_examples(text: str, pieces: list[str]) -> None:
    assert split_words(text) == pieces
