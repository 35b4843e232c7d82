"""The history-amplification attack: many clients ask for large `history` replies and leave
without reading them. Each reply is logged for its client (the log is the outbound queue), so
without byte bounds every reply stayed in memory for the replay window: 20 such clients grew a
server by 230 MB a round. The server here is a real ``dari serve`` process; its resident memory
(VmRSS in /proc/<pid>/status, sampled throughout) must grow by at most BUDGET_MIB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from tests.cluster.nodes import free_port, spawn
from tests.support.client import WsClient
from tests.support.waiting import eventually

# The stated budget (docs/security.md): with replay.max_total_bytes = 32 MiB, the server grows
# by at most 96 MiB under the attack below (the logs' 32 MiB, plus reads of history from the
# store, socket buffers and the allocator's slack). Without byte bounds it grows by ~550 MiB.
BUDGET_MIB = 96
REPLAY_TOTAL_MIB, REPLAY_CLIENT_MIB = 32, 4
MESSAGE_CHARS = 100_000  # each chat and its echo: a history of 40 messages, about 4 MB
CHATS = 20
ROUNDS, CLIENTS, ASKS = 3, 16, 3  # 144 replies of up to max_history_bytes (2 MiB) each


def config(port: int, data: Path) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
[store]
url = "sqlite+aiosqlite:///{data / "dari.db"}"
[replay]
max_client_bytes = {REPLAY_CLIENT_MIB * 1024 * 1024}
max_total_bytes = {REPLAY_TOTAL_MIB * 1024 * 1024}
[limits]
rate_per_s = 10000
rate_burst = 10000
[[projects]]
id = "p1"
[[projects.agents]]
name = "echo"
backend = "echo"
options = {{ delay_ms = 0 }}
"""


class Server:
    def __init__(self, port: int, process: asyncio.subprocess.Process) -> None:
        self.port = port
        self.process = process

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def status(self, field: str) -> int:
        """A memory figure of the server process, in bytes (VmRSS, VmHWM)."""
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        assert match is not None, field
        return int(match.group(1)) * 1024

    async def frames_in(self) -> int:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"http://127.0.0.1:{self.port}/metrics")).text
        match = re.search(r"^dari_frames_in_total (\S+)$", text, re.MULTILINE)
        return int(float(match.group(1))) if match else 0

    async def ready(self) -> bool:
        if self.process.returncode is not None:
            raise RuntimeError("dari serve exited")
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                response = await http.get(f"http://127.0.0.1:{self.port}/readyz")
                return response.status_code == 200
        except httpx.HTTPError:
            return False


@contextlib.asynccontextmanager
async def dari_serve(tmp_path: Path) -> AsyncIterator[Server]:
    port = free_port()
    path = tmp_path / "dari.toml"
    path.write_text(config(port, tmp_path))
    process = await spawn(path, tmp_path / "dari.log")
    server = Server(port, process)
    try:
        await eventually(server.ready, timeout=30)
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


HISTORY = {"type": "history", "project_id": "p1", "agent_name": "echo", "limit": 500}


async def fill_history(server: Server) -> None:
    client = await WsClient.open(server.ws("/ws/chat/writer"))
    await client.recv()
    for i in range(CHATS):
        await client.chat(str(i % 10) * MESSAGE_CHARS, project="p1", agent="echo", id=f"c{i}")
        await client.answer(f"c{i}", timeout=30)
    await client.close()


async def attack(server: Server, names: list[str]) -> None:
    """Each client asks for ASKS large history replies, then drops the connection unread."""
    before = await server.frames_in()
    sockets = []
    for name in names:
        ws = await connect(server.ws(f"/ws/chat/{name}"), compression=None, max_size=None)
        for _ in range(ASKS):
            await ws.send(json.dumps(HISTORY))
        sockets.append(ws)
    # Every request reached the server (each is answered even after the socket is gone).
    expected = before + len(names) * ASKS

    async def all_received() -> bool:
        return await server.frames_in() >= expected

    await eventually(all_received, timeout=30)
    for ws in sockets:
        ws.transport.abort()  # gone without reading a byte of the replies


async def answered(server: Server, name: str) -> bool:
    """Whether the server has logged all of a client's replies (its head, in a welcome)."""
    client = await WsClient.open(server.ws(f"/ws/chat/{name}"))
    welcome = await client.recv()
    await client.close()
    return bool(welcome["last_seq"] >= ASKS)


async def test_history_amplification_stays_within_the_memory_budget(tmp_path: Path) -> None:
    async with dari_serve(tmp_path) as server:
        await fill_history(server)
        baseline = server.status("VmRSS")
        peak = baseline
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, server.status("VmRSS"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.02)  # the sampling period

        sampler = asyncio.create_task(sample())
        names = [f"attacker-{r}-{i}" for r in range(ROUNDS) for i in range(CLIENTS)]
        try:
            for r in range(ROUNDS):
                await attack(server, names[r * CLIENTS : (r + 1) * CLIENTS])
            for name in names:
                await eventually(lambda name=name: answered(server, name), timeout=60)
        finally:
            stop.set()
            await sampler
        growth = max(peak, server.status("VmRSS")) - baseline
        assert growth <= BUDGET_MIB * 1024 * 1024, (
            f"the server grew by {growth / 2**20:.0f} MiB (budget {BUDGET_MIB} MiB)"
        )
        # The replies of the clients that left are gone past the budget: a resume says so.
        async with connect(server.ws(f"/ws/chat/{names[0]}?last_seq=0")) as ws:
            welcome = json.loads(await ws.recv())
        assert welcome["resumed"] is False and welcome["reason"] == "expired"
