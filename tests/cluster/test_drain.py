"""SIGTERM drains a node: real ``dari serve`` processes, real sockets, the database read back.

One node (memory engine, SQLite): readiness turns 503 at once, new chats are refused with
``shutting_down``, an answer that can finish within ``server.drain_s`` does, one that cannot is
cut with an ``error`` naming the shutdown and saved ``cancelled``, and sockets close with 1012.
Three nodes (Redis engine): chats sent to the draining node are run by the others, and the
client resumes on another node with nothing missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

import dari.client
from tests.cluster.clients import connect, contiguous, rows, text_of, unique, words
from tests.cluster.nodes import cluster, free_port, spawn
from tests.support.client import WsClient
from tests.support.waiting import eventually

DELAY_MS = 100  # the echo agent's pace: one word per 100 ms
DRAIN_S = 5.0
TIMEOUT_S = 30.0


@dataclass
class OneNode:
    """One ``dari serve`` on SQLite, everything else in memory."""

    port: int
    config: Path
    database: Path
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it (again: same port, same database) and wait until it is ready."""
        self.process = await spawn(self.config, self.log)
        await eventually(self.ready, timeout=30)

    async def stopped(self) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), TIMEOUT_S)

    def signal(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def readyz(self) -> httpx.Response:
        if self.process is None or self.process.returncode is not None:
            raise RuntimeError(f"the node exited:\n{self.log.read_text()[-4000:]}")
        async with httpx.AsyncClient(timeout=2) as http:
            return await http.get(f"http://127.0.0.1:{self.port}/readyz")

    async def draining(self) -> bool:
        response = await self.readyz()
        return response.status_code == 503 and response.json()["status"] == "draining"

    async def ready(self) -> bool:
        try:
            return (await self.readyz()).status_code == 200
        except httpx.HTTPError:
            return False

    def answer(self, request_id: str) -> tuple[str, str]:
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            (row,) = db.execute(
                "SELECT content, status FROM messages WHERE request_id = ? AND role = 'assistant'",
                (request_id,),
            ).fetchall()
        return row[0], row[1]

    def questions(self, request_id: str) -> int:
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM messages WHERE request_id = ? AND role = 'user'",
                (request_id,),
            ).fetchone()
        return int(count)


@contextlib.asynccontextmanager
async def one_node(tmp_path: Path) -> AsyncIterator[OneNode]:
    port, database = free_port(), tmp_path / "dari.db"
    config = tmp_path / "dari.toml"
    config.write_text(
        "\n".join(
            [
                "[server]",
                'host = "127.0.0.1"',
                f"port = {port}",
                f"drain_s = {DRAIN_S}",
                "[store]",
                f'url = "sqlite+aiosqlite:///{database}"',
                "[[projects]]",
                'id = "p1"',
                "[[projects.agents]]",
                'name = "slow"',
                'backend = "echo"',
                f"options = {{ delay_ms = {DELAY_MS} }}",
                "",
            ]
        )
    )
    node = OneNode(port, config, database, tmp_path / "node.log")
    try:
        await node.start()
        yield node
    finally:
        if node.process is not None and node.process.returncode is None:
            node.process.kill()
            await node.process.wait()


async def open_client(url: str) -> WsClient:
    client = await WsClient.open(url, max_queue=None)
    assert (await client.recv())["type"] == "welcome"
    return client


async def chat(client: WsClient, message: str, thread: str, id: str) -> None:
    await client.chat(message, agent="slow", project="p1", thread_id=thread, id=id)


async def words_received(client: WsClient, request_id: str, count: int) -> None:
    """Read until ``count`` words of the answer have arrived."""
    await client.until(
        lambda f: (
            f.get("request_id") == request_id and len(text_of(client, request_id).split()) >= count
        ),
        TIMEOUT_S,
    )


async def frame(client: WsClient, kind: str, **fields: Any) -> dict[str, Any]:
    """The first frame of ``kind`` with ``fields``, received already or from now on."""
    for seen in client.frames:
        if seen.get("type") == kind and all(seen.get(k) == v for k, v in fields.items()):
            return seen
    return await client.until_type(kind, TIMEOUT_S, **fields)


def ending(client: WsClient, request_id: str) -> list[tuple[str, Any]]:
    return [
        (f["type"], f.get("code") or f.get("finish_reason"))
        for f in client.frames
        if f["type"] in ("error", "end") and f.get("request_id") == request_id
    ]


async def test_an_answer_that_fits_in_the_drain_finishes_then_the_socket_closes_1012(
    tmp_path: Path,
) -> None:
    async with one_node(tmp_path) as node:
        client = await open_client(node.ws("/ws/chat/finisher"))
        message = words("w", 40)  # 4 s in all
        await chat(client, message, "t", "short")
        await words_received(client, "short", 20)  # about 2 s to go
        node.signal()

        end = await frame(client, "end", request_id="short")
        assert end["finish_reason"] == "stop"
        assert text_of(client, "short") == message
        assert await client.closed_with(TIMEOUT_S) == 1012
        await node.stopped()
        assert node.answer("short") == (message, "complete")


async def test_an_answer_longer_than_the_drain_is_cut_with_an_error_and_saved_cancelled(
    tmp_path: Path,
) -> None:
    async with one_node(tmp_path) as node:
        client = await open_client(node.ws("/ws/chat/long"))
        other = await open_client(node.ws("/ws/chat/other"))
        message = words("w", 300)  # 30 s: far longer than the drain
        await chat(client, message, "t", "long")
        await chat(client, "waiting behind it", "t", "queued")
        assert (await frame(client, "ack", id="queued"))["queued"] == 1
        await words_received(client, "long", 3)
        signalled = time.monotonic()
        node.signal()

        # Not ready at once, though it still serves.
        await eventually(node.draining, timeout=DRAIN_S / 2)
        # A chat it cannot run is refused, retryably, and nothing of it is stored.
        await chat(other, "too late", "elsewhere", "late")
        refused = await frame(other, "error", request_id="late")
        assert refused["code"] == "shutting_down"
        # The chat waiting behind the running answer will not get its turn: it ends now.
        await frame(client, "end", request_id="queued")
        assert ending(client, "queued") == [("error", "shutting_down"), ("end", "cancelled")]

        # The running answer gets the drain, then is cut, saying why.
        error = await frame(client, "error", request_id="long")
        assert time.monotonic() - signalled >= DRAIN_S - 0.5
        assert error["code"] == "shutting_down" and "shutting down" in error["message"]
        await frame(client, "end", request_id="long")
        assert ending(client, "long") == [("error", "shutting_down"), ("end", "cancelled")]
        received = text_of(client, "long")
        assert received and message.startswith(received) and received != message

        assert await client.closed_with(TIMEOUT_S) == 1012
        assert await other.closed_with(TIMEOUT_S) == 1012
        await node.stopped()
        assert node.answer("long") == (received, "cancelled")
        assert node.answer("queued") == ("", "cancelled")
        assert node.questions("late") == 0


async def test_the_python_client_sends_a_refused_chat_again_once_the_node_is_back(
    tmp_path: Path,
) -> None:
    async with (
        one_node(tmp_path) as node,
        dari.client.connect(node.ws(""), client_id="py", backoff_max=0.5) as client,
    ):
        await client.chat(words("w", 300), agent_name="slow", project_id="p1", id="long")
        frames = client.frames()
        async for seen in frames:
            if seen["type"] == "response":
                break
        node.signal()
        await eventually(node.draining, timeout=DRAIN_S / 2)
        await client.chat(
            "once more", agent_name="slow", project_id="p1", thread_id="u", id="again"
        )
        async for seen in frames:
            if seen["type"] == "error" and seen.get("request_id") == "again":
                assert seen["code"] == "shutting_down"
                break
        await node.stopped()
        assert node.questions("again") == 0

        await node.start()  # a restart: the client reconnects and sends the chat again
        answer = await client.answer("again", timeout=TIMEOUT_S)
        assert answer.text == "once more" and answer.finish_reason == "stop"
        assert node.answer("again") == ("once more", "complete")
        await frames.aclose()


async def test_a_draining_node_hands_its_chats_to_the_others_and_its_clients_resume_there(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, 3, delay_ms=DELAY_MS, drain_s=4.0) as nodes:
        a, b, _ = nodes
        client_id = unique("drained")
        first = await connect(a, client_id)
        short, long_ = words("s", 40), words("l", 300)
        short_thread, long_thread, new_thread = unique("short"), unique("long"), unique("new")
        await chat(first, short, short_thread, "short")
        await chat(first, long_, long_thread, "long")
        await words_received(first, "short", 20)  # it runs on a, about 2 s to go
        a.process.send_signal(signal.SIGTERM)

        async def a_draining() -> bool:
            async with httpx.AsyncClient(base_url=a.http, timeout=2) as http:
                response = await http.get("/readyz")
            return response.status_code == 503 and response.json()["status"] == "draining"

        await eventually(a_draining, timeout=2)
        assert await b.ready()
        # Chats still reach a draining node's socket: queued for the other nodes to run, one
        # behind a's running answer, one in a conversation nobody holds.
        await chat(first, words("after", 5), long_thread, "after")
        await chat(first, words("fresh", 5), new_thread, "fresh")
        assert (await frame(first, "ack", id="after"))["queued"] == 1
        fresh_end = await frame(first, "end", request_id="fresh")
        assert fresh_end["finish_reason"] == "stop"
        assert not ending(first, "long")  # answered elsewhere while a still drains

        assert (await frame(first, "end", request_id="short"))["finish_reason"] == "stop"
        await frame(first, "end", request_id="long")
        assert ending(first, "long") == [("error", "shutting_down"), ("end", "cancelled")]
        assert await first.closed_with(TIMEOUT_S) == 1012

        # The client resumes on b and gets the rest: the chat queued behind the cut answer.
        position = max(f["seq"] for f in first.frames)
        epoch = first.frames[0]["epoch"]
        second = await WsClient.open(
            b.ws(f"/ws/chat/{client_id}?last_seq={position}&epoch={epoch}"), max_queue=None
        )
        welcome = await second.recv()
        assert welcome["resumed"] is True
        await frame(second, "end", request_id="after")
        # One client over two connections: seq goes on by one, every text is whole.
        second.frames[:0] = first.frames
        del second.frames[len(first.frames)]  # the second welcome
        assert contiguous(second)
        assert text_of(second, "short") == short
        assert text_of(second, "after") == words("after", 5)
        assert text_of(second, "fresh") == words("fresh", 5)
        await second.close()

        answers = {
            row["request_id"]: (row["content"], row["status"], row["node_id"])
            for row in await rows(
                b,
                "SELECT request_id, content, status, node_id FROM messages "
                "WHERE role = 'assistant' AND request_id = ANY($1::text[])",
                ["short", "long", "after", "fresh"],
            )
        }
        assert answers["short"] == (short, "complete", "node-a")
        assert answers["long"] == (text_of(second, "long"), "cancelled", "node-a")
        assert answers["after"][1] == answers["fresh"][1] == "complete"
        assert answers["after"][2] != "node-a" and answers["fresh"][2] != "node-a"

        # a let go of its leases on the way out: nothing in Redis is still held by it.
        await asyncio.wait_for(a.process.wait(), TIMEOUT_S)
        redis = aioredis.Redis.from_url(a.redis_url)
        try:
            holders = [await redis.get(key) async for key in redis.scan_iter("dari:lease:*")]
        finally:
            await redis.aclose()
        assert b"node-a" not in holders
