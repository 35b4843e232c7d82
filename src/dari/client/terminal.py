"""``dari chat``: a terminal client that streams answers as they arrive.

Type a message at the ``you>`` prompt and press Enter. Lines starting with ``/`` go to the agent
(for example ``/delegate researcher 시장 조사``) except ``/quit``. Steps of the work are shown on
lines of their own, a lost connection on one status line that is updated while reconnecting,
and an answer that a server restart cut short ends with ``[cut off]``. With input from a pipe
there is no prompt, and the client waits for the answers before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import threading
from dataclasses import dataclass
from typing import TextIO

from dari.client.client import ClientClosed, DariClient, Frame
from dari.client.screen import Screen

PROMPT = "you> "
CUT_OFF = " [cut off]"
# How an answer's end reads after its text; a normal stop adds nothing.
ENDINGS = {
    "cancelled": " [cancelled]",
    "error": " [failed]",
    "length": " [cut at the length limit]",
    "content_filter": " [withheld by the content filter]",
}
FINISHED = {"complete": "", "cancelled": " [cancelled]", "failed": CUT_OFF}


@dataclass
class _Open:
    """An answer that started and has not ended, and what of it is on the screen."""

    printed: str = ""
    seen_live: bool = False  # a snapshot or piece arrived since the last reconnect


class TerminalChat:
    """Turns frames of one conversation into output on a :class:`Screen`. No I/O of its own
    besides the screen, so it can be driven by any source of frames."""

    def __init__(
        self, screen: Screen, *, project_id: str, agent_name: str, thread_id: str, prompt: bool
    ) -> None:
        self.screen = screen
        self.conversation = {
            "project_id": project_id,
            "agent_name": agent_name,
            "thread_id": thread_id,
        }
        self.agent_name = agent_name
        self.prompt = prompt
        self.open: dict[str, _Open] = {}
        self.waiting: set[str] = set()  # chats sent whose answer has not ended
        self.on_row: str | None = None  # the answer whose text is on the current row
        self.idle = asyncio.Event()
        self.idle.set()
        self.attempts = 0
        self._prompting = False

    # --- what the user does ------------------------------------------------------------------

    def sent(self, request_id: str) -> None:
        self.waiting.add(request_id)
        self.idle.clear()

    def entered(self) -> None:
        """A line was read (sent or empty): the cursor is on a new row."""
        if self._prompting:
            self.screen.entered()
            self._prompting = False

    def show_prompt(self) -> None:
        if self.prompt and not self._prompting and not self.waiting and not self.open:
            self.screen.end_row()
            self.screen.write(PROMPT)
            self._prompting = True

    # --- the connection --------------------------------------------------------------------

    def on_state(self, state: str, code: int | None) -> None:
        if state == "reconnecting":
            self.attempts += 1
            self.screen.set_status(f"[reconnecting… attempt {self.attempts}]")
        elif state == "connected":
            self.attempts = 0
            self.screen.clear_status("[connected]")

    def follow_up(self, welcome: Frame) -> list[Frame]:
        """Frames to send after a ``welcome``. After a reconnect the server may have forgotten
        this client: subscribing again brings a ``snapshot`` of an answer still running, and
        history tells how the answers this client saw start have ended meanwhile."""
        if welcome.get("resumed"):
            return []  # the frames missed meanwhile are replayed
        frames: list[Frame] = [{"type": "subscribe", **self.conversation}]
        for answer in self.open.values():
            answer.seen_live = False
        if self.open:
            frames.append({"type": "history", **self.conversation, "limit": 50})
        return frames

    # --- frames ------------------------------------------------------------------------------

    def show(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind in ("auto_report", "broadcast"):
            self.screen.note(f"[{kind.replace('_', ' ')}] {frame.get('content', '')}")
            return
        if kind == "history":
            self._settle(frame)
            return
        if not self._mine(frame):
            return
        request_id = str(frame.get("request_id", ""))
        if kind == "start":
            self._answer(request_id)
        elif kind == "snapshot":
            answer = self._answer(request_id)
            answer.seen_live = True
            self._text(request_id, str(frame.get("content", ""))[len(answer.printed) :])
        elif kind == "response":
            self._answer(request_id).seen_live = True
            self._text(request_id, str(frame.get("content", "")))
        elif kind == "step" and frame.get("state", "started") == "started":
            self.screen.note(f"  · {frame.get('content') or frame.get('name')}")
        elif kind == "end":
            self._finish(request_id, ENDINGS.get(str(frame.get("finish_reason")), ""))
        elif kind == "error":
            self.screen.note(f"[error {frame.get('code')}] {frame.get('message')}")
            if request_id and request_id not in self.open:
                self._done(request_id)  # refused: no answer follows

    def _mine(self, frame: Frame) -> bool:
        if "project_id" not in frame:  # an ack or error naming only the chat
            return True
        return all(frame.get(k, "main") == v for k, v in self.conversation.items())

    def _answer(self, request_id: str) -> _Open:
        answer = self.open.get(request_id)
        if answer is None:
            answer = self.open[request_id] = _Open()
            self.idle.clear()
        if self.on_row != request_id:
            if self._prompting:
                self.screen.clear_row()  # the answer takes the prompt's row; it comes back
                self._prompting = False
            self.screen.end_row()
            self.screen.write(f"{self.agent_name}> ")
            self.on_row = request_id
        return answer

    def _text(self, request_id: str, text: str) -> None:
        if not text:
            return
        self._answer(request_id).printed += text
        self.screen.write(text)

    def _finish(self, request_id: str, suffix: str) -> None:
        if request_id in self.open:
            if self.on_row != request_id:
                self._answer(request_id)
            self.screen.end_row(suffix)
            self.on_row = None
            del self.open[request_id]
        self._done(request_id)

    def _done(self, request_id: str) -> None:
        self.waiting.discard(request_id)
        if not self.waiting and not self.open:
            self.idle.set()
            self.show_prompt()

    def _settle(self, frame: Frame) -> None:
        """History after a reconnect that could not resume: answers that ended meanwhile
        get their saved rest and their ending; one that failed was cut off."""
        if any(frame.get(k, "main") != v for k, v in self.conversation.items()):
            return
        messages = frame.get("messages", [])
        saved = {m.get("request_id"): m for m in messages if m.get("role") == "assistant"}
        for request_id, answer in list(self.open.items()):
            if answer.seen_live:
                continue  # still running: a snapshot brought it back
            message = saved.get(request_id)
            status = message.get("status") if message else "failed"
            if status == "streaming":
                continue  # running elsewhere; its frames or a later reconnect will tell
            content = str(message.get("content", "")) if message else ""
            if content.startswith(answer.printed):
                self._text(request_id, content[len(answer.printed) :])
            self._finish(request_id, FINISHED.get(str(status), CUT_OFF))


def _read_in_background(stdin: TextIO, lines: asyncio.Queue[str]) -> None:
    """Read input lines in a daemon thread: a blocked read must not keep the process alive
    after the connection ended for good ("" is the end of input)."""
    loop = asyncio.get_running_loop()

    def read() -> None:
        while True:
            line = stdin.readline()
            loop.call_soon_threadsafe(lines.put_nowait, line)
            if not line:
                return

    threading.Thread(target=read, name="dari-chat-input", daemon=True).start()


def _columns() -> int:
    return shutil.get_terminal_size().columns


async def run_terminal(
    url: str,
    client_id: str,
    project_id: str,
    agent_name: str,
    thread_id: str,
    token: str | None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    screen = Screen(stdout, stderr, terminal=stdout.isatty(), columns=_columns)
    chat = TerminalChat(
        screen,
        project_id=project_id,
        agent_name=agent_name,
        thread_id=thread_id,
        prompt=stdin.isatty() and stdout.isatty(),
    )
    client = DariClient(url, client_id, token=token, on_state=chat.on_state)

    lines: asyncio.Queue[str] = asyncio.Queue()
    _read_in_background(stdin, lines)

    async def show_frames() -> None:
        async for frame in client.frames():
            if frame.get("type") == "welcome":
                for follow in chat.follow_up(frame):
                    await client.send(follow)
                chat.show_prompt()
            chat.show(frame)

    try:
        async with client:
            printer = asyncio.create_task(show_frames())
            try:
                while True:
                    reading = asyncio.ensure_future(lines.get())
                    await asyncio.wait({reading, printer}, return_when=asyncio.FIRST_COMPLETED)
                    if printer.done():
                        reading.cancel()
                        printer.result()  # the client stopped for good: raises ClientClosed
                        return 0
                    line = reading.result()
                    if not line or line.strip() == "/quit":
                        break
                    chat.entered()
                    if not line.strip():
                        chat.show_prompt()
                        continue
                    request_id = await client.chat(
                        line.rstrip("\n"),
                        agent_name=agent_name,
                        project_id=project_id,
                        thread_id=thread_id,
                    )
                    chat.sent(request_id)
                if not line:  # end of input (a pipe): let the answers finish first
                    idle = asyncio.ensure_future(chat.idle.wait())
                    await asyncio.wait({idle, printer}, return_when=asyncio.FIRST_COMPLETED)
                    idle.cancel()
                    if printer.done():
                        printer.result()
            finally:
                printer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await printer
    except ClientClosed as closed:
        screen.end_row()
        print(f"dari: {closed}", file=stderr)
        return 1
    except TimeoutError:
        print(f"dari: could not connect to {url}", file=stderr)
        return 1
    screen.end_row()
    return 0
