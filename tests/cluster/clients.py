"""What the cluster tests do as clients: connect to a node, chat, read the shared database."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from tests.cluster.nodes import Node
from tests.cluster.services import pg_url
from tests.support.client import WsClient

TIMEOUT_S = 30.0


def words(label: str, count: int) -> str:
    return " ".join(f"{label}{i}" for i in range(count))


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def connect(
    node: Node, client_id: str, query: str = "", token: str | None = None
) -> WsClient:
    # No receive limit: a test reads only the frames it needs, and a paused reader would keep
    # the closing handshake waiting for its timeout.
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = await WsClient.open(
        node.ws(f"/ws/chat/{client_id}{query}"), max_queue=None, additional_headers=headers
    )
    welcome = await client.recv()
    assert welcome["type"] == "welcome"
    return client


async def subscribe(client: WsClient, thread: str | None, agent: str = "slow") -> None:
    """To a conversation of ``agent`` in p1, or with ``thread`` None to the whole project."""
    frame: dict[str, Any] = {"type": "subscribe", "project_id": "p1"}
    if thread is not None:
        frame |= {"agent_name": agent, "thread_id": thread}
    await client.send(frame)
    await client.until_type("subscribed")


async def chat(
    client: WsClient, message: str, thread: str, id: str, agent: str = "slow"
) -> dict[str, Any]:
    await client.chat(message, agent=agent, project="p1", thread_id=thread, id=id)
    return await client.until_type("ack", TIMEOUT_S, id=id)


def text_of(client: WsClient, request_id: str) -> str:
    """The answer's text as a client assembles it: a snapshot replaces the text so far."""
    text = ""
    for frame in client.frames:
        if frame.get("request_id") != request_id:
            continue
        if frame.get("type") == "snapshot":
            text = frame["content"]
        elif frame.get("type") == "response":
            text += frame["content"]
    return text


def contiguous(client: WsClient) -> bool:
    numbers = [f["seq"] for f in client.frames]
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))


async def history(node: Node, thread: str, agent: str = "slow") -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        response = await http.get(f"/api/projects/p1/agents/{agent}/threads/{thread}/messages")
    response.raise_for_status()
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def rows(node: Node, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of the cluster's PostgreSQL database, read directly (not through a node)."""
    conn = await asyncpg.connect(pg_url(node.database, "postgresql"), timeout=5)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def fence(node: Node, *clients: WsClient) -> None:
    """A broadcast made now is logged after anything already sent: once each client has it,
    a second report (or end) would have arrived too."""
    content = unique("fence")
    async with httpx.AsyncClient(base_url=node.http) as http:
        assert (await http.post("/api/broadcast", json={"content": content})).status_code == 200
    for client in clients:
        await client.until_type("broadcast", TIMEOUT_S, content=content)
