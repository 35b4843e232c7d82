"""What the terminal client prints, through one object that knows what is on the current row.

Three kinds of output share one terminal and must not spoil each other:

- the *current row*: the prompt, or the answer being streamed, printed piece by piece;
- *notes*, each a line of its own (a step, an error, a report): they never split the current
  row. On a terminal a note is put above it (the row is cleared, the note printed, the row
  printed again); otherwise the note waits until the row is finished;
- one *status* line (reconnecting…): on a terminal it goes below the current row (after a
  newline, never over half-printed text), is updated in place, and is removed when the
  connection is back, the cursor returning to the end of the row it interrupted. Without a
  terminal each status is printed once, on its own line.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import TextIO

CLEAR_ROW = "\r\x1b[K"  # to the row's start, erase to its end
UP = "\x1b[A"


def cells(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide characters (한글) take two."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


class Screen:
    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        terminal: bool,
        columns: Callable[[], int] = lambda: 80,
    ) -> None:
        self.out = out
        self.err = err
        self.terminal = terminal  # out is a terminal: the cursor can be moved
        self.columns = columns
        self.row = ""  # what is printed on the current row since its last newline
        self.status: str | None = None  # the status line shown (terminal only)
        self._status_below_row = False  # the status took a row of its own below ``row``
        self._last_plain_status: str | None = None
        self._held: list[str] = []  # notes waiting for the current row to end

    # --- the current row -------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Part of the current row (answer text, a prompt); may contain newlines."""
        if not text:
            return
        self._hide_status()
        head, newline, tail = text.rpartition("\n")
        if newline:
            self.out.write(head + newline)
            self.row = ""
            self._release_held()
        self.out.write(tail)
        self.row += tail
        self.out.flush()

    def end_row(self, suffix: str = "") -> None:
        """Finish the current row (with ``suffix``, e.g. `` [cut off]``), if anything is on it."""
        if not self.row and not suffix:
            return
        self.write(suffix + "\n")

    def clear_row(self) -> None:
        """Take back the current row (a prompt nobody answered yet), on a terminal."""
        if self.terminal and self.row:
            self._hide_status()
            self.out.write(CLEAR_ROW)
            self.out.flush()
            self.row = ""

    def entered(self) -> None:
        """The user pressed Enter: the terminal's echo moved the cursor to a new row."""
        self.row = ""
        self._release_held()

    # --- notes -----------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A line of its own that must not split the current row."""
        self._hide_status()
        if not self.row:
            self._print_note(text)
        elif self.terminal and cells(self.row) < self.columns():
            self.out.write(f"{CLEAR_ROW}{text}\n{self.row}")
            self.out.flush()
        else:
            self._held.append(text)

    def _print_note(self, text: str) -> None:
        stream = self.out if self.terminal else self.err
        stream.write(text + "\n")
        stream.flush()

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for text in held:
            self._print_note(text)

    # --- the status line -------------------------------------------------------------------

    def set_status(self, text: str) -> None:
        if not self.terminal:
            if text != self._last_plain_status:
                self._last_plain_status = text
                if self.row:  # never write past half-printed text
                    self.out.write("\n")
                    self.out.flush()
                    self.row = ""
                self.err.write(text + "\n")
                self.err.flush()
            return
        if self.status is None:
            self._status_below_row = bool(self.row)
            self.out.write(("\n" if self.row else "") + text)
        else:
            self.out.write(CLEAR_ROW + text)
        self.status = text
        self.out.flush()

    def clear_status(self, plain_text: str | None = None) -> None:
        """The condition is over: remove the status line (or, without a terminal, print
        ``plain_text`` once if a status was printed)."""
        if not self.terminal:
            if self._last_plain_status is not None and plain_text:
                self.err.write(plain_text + "\n")
                self.err.flush()
            self._last_plain_status = None
            return
        self._hide_status()
        self.out.flush()

    def _hide_status(self) -> None:
        if self.status is None:
            return
        self.out.write(CLEAR_ROW)
        if self._status_below_row:
            width = cells(self.row)
            if width < self.columns():
                # Back to the end of the row the status interrupted, which goes on there.
                self.out.write(f"{UP}\x1b[{width + 1}G")
            else:
                self.row = ""  # a wrapped row: go on from the emptied status row
        self.status = None
