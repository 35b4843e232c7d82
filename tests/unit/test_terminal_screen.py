"""The terminal client's Screen, read back through a model of a terminal: notes above the current
row, one status line below it, and what is printed when output is not a terminal."""

from __future__ import annotations

import io

from dari.client.screen import Screen, cells
from tests.support.terminal import ScreenModel


def terminal(columns: int = 40) -> tuple[Screen, io.StringIO]:
    out = io.StringIO()
    return Screen(out, out, terminal=True, columns=lambda: columns), out


def shown(out: io.StringIO, columns: int = 40) -> list[str]:
    model = ScreenModel(columns)
    model.feed(out.getvalue().replace("\n", "\r\n"))  # as a terminal's output translation does
    return model.lines


def test_wide_characters_take_two_columns() -> None:
    assert cells("집사> ") == 6 and cells("echo> ") == 6


def test_a_note_goes_above_the_half_printed_row() -> None:
    screen, out = terminal()
    screen.write("집사> 안녕하세요, 오늘")
    screen.note("  · 찾는 중...")
    screen.write(" 날씨는 맑습니다.")
    screen.end_row()
    assert shown(out) == ["  · 찾는 중...", "집사> 안녕하세요, 오늘 날씨는 맑습니다."]


def test_the_status_is_one_line_below_and_the_row_goes_on_where_it_stopped() -> None:
    screen, out = terminal()
    screen.write("echo> half of the")
    for attempt in (1, 2, 3):
        screen.set_status(f"[reconnecting… attempt {attempt}]")
    assert shown(out) == ["echo> half of the", "[reconnecting… attempt 3]"]
    screen.clear_status()
    screen.write(" answer.")
    screen.end_row()
    assert shown(out) == ["echo> half of the answer."]


def test_a_row_wider_than_the_terminal_goes_on_below_the_status_instead() -> None:
    screen, out = terminal(columns=20)
    screen.write("echo> " + "x" * 30)
    screen.set_status("[reconnecting…]")
    screen.clear_status()
    screen.write("tail")
    assert shown(out, 20) == ["echo> xxxxxxxxxxxxxx", "xxxxxxxxxxxxxxxx", "tail"]


def test_without_a_terminal_notes_wait_and_each_status_is_printed_once() -> None:
    out, err = io.StringIO(), io.StringIO()
    screen = Screen(out, err, terminal=False)
    screen.write("echo> first")
    screen.note("  · step")
    assert err.getvalue() == "", "held until the row ends"
    screen.write(" line\nsecond")
    assert err.getvalue() == "  · step\n"
    screen.set_status("[reconnecting…]")
    screen.set_status("[reconnecting…]")
    screen.clear_status("[connected]")
    screen.clear_status("[connected]")
    screen.end_row(" [cut off]")
    assert err.getvalue() == "  · step\n[reconnecting…]\n[connected]\n"
    assert out.getvalue() == "echo> first line\nsecond\n [cut off]\n"
