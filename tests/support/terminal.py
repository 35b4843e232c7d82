"""A program on a real pseudo-terminal, and a small screen that reads what it drew.

``PtySession`` starts a command with a pty as its stdin, stdout and stderr (so it sees a
terminal, as under a person's shell), types lines into it and keeps every byte it printed.
``ScreenModel`` replays those bytes as a terminal would, for the few controls a line-based
program uses (carriage return, newline, erase to end of row, cursor up, cursor to column),
counting East Asian wide characters as two columns.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Sequence

from dari.client.screen import cells

CONTROL = re.compile(r"\x1b\[(\d*)([A-Za-z])|\r|\n|[^\x1b\r\n]")


class ScreenModel:
    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.rows: list[list[str]] = [[]]
        self.y = 0
        self.x = 0

    def feed(self, text: str) -> None:
        for match in CONTROL.finditer(text):
            token = match.group(0)
            if token == "\r":
                self.x = 0
            elif token == "\n":
                self.y += 1
                if self.y == len(self.rows):
                    self.rows.append([])
            elif match.group(2):
                n = int(match.group(1) or 1)
                kind = match.group(2)
                if kind == "K":
                    del self.rows[self.y][self.x :]
                elif kind == "A":
                    self.y = max(0, self.y - n)
                elif kind == "G":
                    self.x = n - 1
            else:
                self._put(token)

    def _put(self, char: str) -> None:
        width = cells(char)
        if self.x + width > self.columns:  # wrap
            self.y += 1
            self.x = 0
            if self.y == len(self.rows):
                self.rows.append([])
        row = self.rows[self.y]
        while len(row) < self.x:
            row.append(" ")
        cell = [char] + [""] * (width - 1)  # a wide character's second column is empty
        row[self.x : self.x + width] = cell
        self.x += width

    @property
    def lines(self) -> list[str]:
        out = ["".join(row).rstrip() for row in self.rows]
        while out and not out[-1]:
            out.pop()
        return out

    def text(self) -> str:
        return "\n".join(self.lines)


class PtySession:
    def __init__(self, argv: Sequence[str], *, columns: int = 100, env: dict[str, str]) -> None:
        self.columns = columns
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self.master = master
        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "COLUMNS": str(columns), "TERM": "xterm"},
            start_new_session=True,
        )
        os.close(slave)
        self.raw = ""
        self.screen = ScreenModel(columns)
        self._changed = asyncio.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        os.set_blocking(master, False)
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the program exited and the pty closed
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        text = self._decoder.decode(data)
        self.raw += text
        self.screen.feed(text)
        self._changed.set()

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def end_input(self) -> None:
        os.write(self.master, b"\x04")  # Ctrl-D at the start of a line: end of input

    async def wait_for(
        self, check: Callable[[ScreenModel], bool], what: str, timeout: float = 20
    ) -> None:
        """Wait until ``check(screen)`` holds, woken by every byte the program prints."""
        deadline = time.monotonic() + timeout
        while not check(self.screen):
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never saw {what}; the screen:\n{self.screen.text()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def wait_text(self, text: str, timeout: float = 20) -> None:
        await self.wait_for(lambda s: text in s.text(), repr(text), timeout)

    async def close(self) -> int:
        with contextlib.suppress(OSError):
            self.end_input()
        try:
            code = await asyncio.wait_for(asyncio.to_thread(self.process.wait), 10)
        except TimeoutError:
            self.process.kill()
            code = await asyncio.to_thread(self.process.wait)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.master)
        with contextlib.suppress(OSError):
            os.close(self.master)
        return code
