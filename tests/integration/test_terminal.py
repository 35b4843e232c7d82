"""``dari chat`` on a real terminal against a real server in its own process: the prompt, steps
on lines of their own, one reconnect status line that never writes over an answer, and an
answer cut by a server restart marked as cut off. Also driven through pipes, as scripts do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.proxy import ChaosProxy
from tests.support.terminal import PtySession, ScreenModel

AGENT_MODULE = '''
import asyncio

from dari.agents.base import Step


async def stepper(request, ctx):
    """Text, then a step in the middle of the answer's line, then the rest of the text."""
    yield "First half of the answer"
    await asyncio.sleep(0.3)
    await ctx.step("lookup", "looking it up...")
    await asyncio.sleep(0.3)
    yield Step("lookup", "found it", "finished")
    yield ", second half."
'''

CONFIG = """
[store]
url = "sqlite+aiosqlite:///{db}"
checkpoint_s = 0.2

[[projects]]
id = "project_001"

[[projects.agents]]
name = "echo"
backend = "echo"
options = {{ delay_ms = 10 }}

[[projects.agents]]
name = "slow"
backend = "echo"
options = {{ delay_ms = 150 }}

[[projects.agents]]
name = "stepper"
backend = "python"
options = {{ entrypoint = "terminal_agents:stepper" }}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """dari in a process of its own, which a test can kill as a crash would and start again
    on the same port and database."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.config = directory / "dari.toml"
        self.config.write_text(CONFIG.format(db=directory / "dari.db"), encoding="utf-8")
        (directory / "terminal_agents.py").write_text(AGENT_MODULE, encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = ["serve", "--port", str(self.port), "--config", str(self.config)]
        with (self.directory / "server.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "dari.cli", *command],
                cwd=self.directory,  # the agent module is imported from here
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        self.process = await asyncio.to_thread(self._spawn)
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError((self.directory / "server.log").read_text())
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.http}/healthz")).status_code == 200:
                        return
                assert time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """As a crash: no shutdown, nothing finished or saved on the way out."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    async def saved(self, agent: str, thread: str) -> list[dict[str, Any]]:
        url = f"{self.http}/api/projects/project_001/agents/{agent}/threads/{thread}/messages"
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(url, params={"limit": 50})
        response.raise_for_status()
        return list(response.json()["messages"])


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    running = ServerProcess(tmp_path)
    await running.start()
    yield running
    running.stop()


def chat_command(
    server: ServerProcess, agent: str, thread: str, *, url: str | None = None, client_id: str = ""
) -> list[str]:
    where = ["--project", "project_001", "--agent", agent, "--thread", thread]
    if client_id:
        where += ["--client-id", client_id]
    return [sys.executable, "-m", "dari.cli", "chat", "--url", url or server.ws, *where]


@pytest.fixture
async def terminal(server: ServerProcess) -> AsyncIterator[Any]:
    sessions: list[PtySession] = []

    def open_chat(agent: str, thread: str, **where: str) -> PtySession:
        session = PtySession(chat_command(server, agent, thread, **where), env=dict(os.environ))
        sessions.append(session)
        return session

    yield open_chat
    for session in sessions:
        await session.close()


def last_line(screen: ScreenModel) -> str:
    return screen.lines[-1] if screen.lines else ""


async def test_a_prompt_then_the_answer_then_the_prompt_again(terminal, thread_id):
    chat = terminal("echo", thread_id)
    await chat.wait_for(lambda s: last_line(s) == "you>", "the prompt")
    chat.type("hello there")
    await chat.wait_text("echo> hello there")
    await chat.wait_for(lambda s: s.lines[-2:] == ["echo> hello there", "you>"], "answer, prompt")
    assert chat.screen.lines == ["you> hello there", "echo> hello there", "you>"]
    assert await chat.close() == 0


async def test_a_step_gets_a_line_of_its_own_above_the_answer_line(terminal, thread_id):
    chat = terminal("stepper", thread_id)
    await chat.wait_for(lambda s: last_line(s) == "you>", "the prompt")
    chat.type("go")
    await chat.wait_text("second half.")
    await chat.wait_for(lambda s: last_line(s) == "you>", "the prompt again")
    # The step arrived while "First half of the answer" was on the answer's line: it went
    # above that line, and the answer's line is whole.
    assert chat.screen.lines == [
        "you> go",
        "  · looking it up...",
        "stepper> First half of the answer, second half.",
        "you>",
    ]


async def test_reconnecting_is_one_status_line_below_the_answer_and_a_cut_answer_is_marked(
    server, terminal, thread_id
):
    chat = terminal("slow", thread_id)
    await chat.wait_for(lambda s: last_line(s) == "you>", "the prompt")
    words = " ".join(f"w{n}" for n in range(60))
    chat.type(words)
    await chat.wait_text("slow> w0 w1 w2 w3")
    # Kill the server once part of the answer is checkpointed (so it was saved, as seen).
    await _until(lambda: server.saved("slow", thread_id), lambda m: len(m) == 2 and m[1]["content"])
    server.kill()
    printed_before = next(line for line in chat.screen.lines if line.startswith("slow> "))

    await chat.wait_for(lambda s: "attempt 3]" in last_line(s), "three reconnect attempts")
    lines = chat.screen.lines
    status = [line for line in lines if line.startswith("[reconnecting")]
    assert len(status) == 1, f"one status line, updated in place: {lines}"
    assert lines[-1] == status[0], "the status is below the answer, not over it"
    answer_line = next(line for line in lines if line.startswith("slow> "))
    assert answer_line.startswith(printed_before), "the half-printed answer is intact"
    assert "[reconnecting" not in answer_line

    await server.start()  # the same port and database: the answer in flight was lost
    await chat.wait_text("[cut off]")
    await chat.wait_for(lambda s: last_line(s) == "you>", "the prompt after the cut answer")
    lines = chat.screen.lines
    assert not [line for line in lines if "reconnecting" in line], "the status line is gone"
    cut = [line for line in lines if line.startswith("slow> ")]
    assert len(cut) == 1 and cut[0].endswith(" [cut off]"), lines
    saved = await server.saved("slow", thread_id)
    assert saved[1]["status"] == "failed"
    assert cut[0].removesuffix(" [cut off]").removeprefix("slow> ").startswith(saved[1]["content"])
    assert "w59" not in cut[0], "the answer was not finished"

    chat.type("still here")  # the client goes on with the restarted server
    await chat.wait_text("slow> still here")


async def test_a_dropped_connection_resumes_the_answer_on_its_line(server, terminal, thread_id):
    proxy = ChaosProxy(server.port)
    await proxy.start()
    try:
        chat = terminal("slow", thread_id, url=f"ws://127.0.0.1:{proxy.port}", client_id=thread_id)
        await chat.wait_for(lambda s: last_line(s) == "you>", "the prompt")
        words = " ".join(f"w{n}" for n in range(16))
        chat.type(words)
        await chat.wait_text("slow> w0 w1 w2")
        assert proxy.cut(thread_id, "rst_client") == 1
        await chat.wait_for(lambda s: last_line(s) == "you>", "the answer's end, then the prompt")
        answers = [line for line in chat.screen.lines if line.startswith("slow> ")]
        assert answers == [f"slow> {words}"], "resumed on the same line, nothing doubled or cut"
        assert not [line for line in chat.screen.lines if "reconnecting" in line]
    finally:
        await proxy.stop()


async def test_through_pipes_there_is_no_prompt_and_the_answers_are_awaited(server, thread_id):
    process = await asyncio.create_subprocess_exec(
        *chat_command(server, "stepper", thread_id),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(b"one\n"), 30)
    assert process.returncode == 0, err
    # Not a terminal: the step waits for the answer's line to end and goes to stderr.
    assert out.decode() == "stepper> First half of the answer, second half.\n"
    assert err.decode() == "  · looking it up...\n"


async def _until(probe: Any, check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"condition not met; last value: {value!r}"
        await asyncio.sleep(0.05)


@pytest.fixture
def thread_id() -> str:
    return f"term-{os.urandom(4).hex()}"
