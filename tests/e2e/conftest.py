"""Fixtures for the browser tests: a real dari server in a subprocess, a TCP proxy in front of it
that can cut every connection on command, and a headless Chromium driven by Playwright.

Run with:  .venv/bin/pytest -m browser tests/e2e
Chromium is taken from DARI_E2E_CHROMIUM, /usr/bin/chromium, or Playwright's own download.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
JWT_SECRET = "e2e-secret-that-is-long-enough-for-hs256-0123456789"

# Agents for the tests: `slow` streams slowly enough to be stopped or cut mid-answer.
AGENTS_TOML = """
[[projects]]
id = "project_001"
name = "Demo project"

[[projects.agents]]
name = "집사"
backend = "offline"
description = "Friendly offline assistant"
options = { delay_ms = 30 }

[[projects.agents]]
name = "echo"
backend = "echo"
description = "Answers with your own words"
options = { delay_ms = 15 }

[[projects.agents]]
name = "slow"
backend = "echo"
description = "Echo, one word every 150 ms"
options = { delay_ms = 150 }

[[projects.agents]]
name = "researcher"
backend = "offline"
description = "Takes delegated tasks"
options = { persona = "researcher", delay_ms = 20 }

[[projects.agents]]
name = "archivist"
backend = "offline"
running = false
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DariServer:
    port: int
    config: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def saved_messages(
        self, agent: str, thread: str, project: str = "project_001"
    ) -> list[dict]:
        """What the server saved for a conversation (its history, oldest first)."""
        url = f"{self.http}/api/projects/{project}/agents/{agent}/threads/{thread}/messages"
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(url, params={"limit": 200})
        response.raise_for_status()
        return list(response.json()["messages"])

    async def post(self, path: str, body: dict | None = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.post(f"{self.http}{path}", json=body)


def start_dari(
    tmp: Path, extra_toml: str = "", extra_top_toml: str = "", extra_agents_toml: str = ""
) -> DariServer:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp / "dari.toml"
    config.write_text(
        "\n".join(
            [
                extra_top_toml,
                "[store]",
                f'url = "sqlite+aiosqlite:///{tmp / "dari.db"}"',
                "",
                "[limits]",
                "max_image_bytes = 65536",  # small, so the too-large message is easy to show
                extra_toml,
                AGENTS_TOML,
                extra_agents_toml,  # more [[projects.agents]] of project_001
            ]
        ),
        encoding="utf-8",
    )
    log = tmp / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "dari.cli", "serve", "--port", str(port), "--config", str(config)],
        cwd=tmp,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = DariServer(port, config, process, log)
    deadline = time.monotonic() + 30
    while True:  # wait until the server answers, or fail with its log
        if process.poll() is not None:
            raise RuntimeError(f"dari exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.http}/healthz", timeout=1).status_code == 200:
                return server
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"dari did not start:\n{log.read_text()}")
        time.sleep(0.05)


def stop_dari(server: DariServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def dari(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DariServer]:
    """One server (auth off) shared by a test module; tests use their own threads."""
    server = start_dari(tmp_path_factory.mktemp("dari"))
    yield server
    stop_dari(server)


@pytest.fixture(scope="module")
def dari_jwt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DariServer]:
    server = start_dari(
        tmp_path_factory.mktemp("dari-jwt"),
        extra_top_toml=f'[auth]\nmode = "jwt"\nsecret = "{JWT_SECRET}"\n',
    )
    yield server
    stop_dari(server)


@pytest.fixture(scope="module")
def dari_short_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DariServer]:
    """A server that keeps replayable frames for half a second: resume soon fails."""
    server = start_dari(
        tmp_path_factory.mktemp("dari-short-log"), extra_top_toml="[replay]\nmax_age_s = 0.5\n"
    )
    yield server
    stop_dari(server)


async def mint_token(server: DariServer, sub: str = "alice") -> str:
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "dari.cli",
            "token",
            "--config",
            str(server.config),
            "--sub",
            sub,
            "--projects",
            "*",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return str(result.stdout).strip()


class CuttableProxy:
    """Forwards loopback TCP to the server. cut() drops every connection at once (as a server
    or network failure would) and refuses new ones until restore()."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def cut(self, *, refuse: bool = True) -> None:
        self.refusing = refuse
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.refusing = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@pytest.fixture
async def proxy_to() -> AsyncIterator[Callable[[DariServer], Awaitable[CuttableProxy]]]:
    """Put a cuttable proxy in front of a server."""
    proxies: list[CuttableProxy] = []

    async def start(server: DariServer) -> CuttableProxy:
        proxy = CuttableProxy(server.port)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        await proxy.stop()


@pytest.fixture
async def proxy(
    dari: DariServer, proxy_to: Callable[[DariServer], Awaitable[CuttableProxy]]
) -> CuttableProxy:
    return await proxy_to(dari)


def chromium_path() -> str | None:
    for candidate in (
        os.environ.get("DARI_E2E_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None  # Playwright's bundled browser, if installed


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as playwright:
        try:
            instance = await playwright.chromium.launch(
                executable_path=chromium_path(), args=CHROMIUM_ARGS
            )
        except Exception as exc:  # no browser on this machine
            pytest.skip(f"Chromium is not available: {exc}")
        yield instance
        await instance.close()


@pytest.fixture
def thread() -> str:
    """A conversation of its own for each test."""
    return f"t-{uuid.uuid4().hex[:10]}"
