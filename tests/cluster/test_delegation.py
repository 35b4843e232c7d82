"""Delegated tasks across nodes: the report reaches every subscriber of the project, on any
node, exactly once, and is saved in the delegating conversation's history exactly once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.clients import TIMEOUT_S, chat, connect, rows, subscribe, unique, words
from tests.cluster.nodes import Node, cluster
from tests.support.client import WsClient


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    async with cluster(tmp_path, 3, delay_ms=20) as started:
        yield started


def reports(client: WsClient, task_id: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f["type"] == "auto_report" and f["task_id"] == task_id]


async def delegate(client: WsClient, thread: str, task: str, id: str) -> str:
    """Ask the offline agent to hand ``task`` to the worker; the task's id."""
    await chat(client, f"/delegate worker {task}", thread, id, agent="desk")
    text, end = await client.answer(id, TIMEOUT_S)
    assert end["finish_reason"] == "stop"
    found = re.search(r"\bt-[0-9a-f]{12}\b", text)
    assert found, text
    return found.group(0)


async def test_a_task_delegated_on_one_node_is_reported_once_to_subscribers_on_every_node(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    thread, task = unique("t"), words("task", 15)
    watcher = await connect(a, unique("watcher"))
    await subscribe(watcher, None)  # the whole project, from another node
    asker = await connect(b, unique("asker"))  # subscribed by chatting, on the delegating node
    task_id = await delegate(asker, thread, task, "d1")

    for client in (watcher, asker):
        report = await client.until_type("auto_report", TIMEOUT_S, task_id=task_id)
        assert report["content"] == task and report["agent_name"] == "worker"
        assert (report["project_id"], report["origin_agent"]) == ("p1", "desk")
        assert report["thread_id"] == thread
    # A broadcast made after the report is logged after anything the report caused: once it
    # is in, a second report would be too.
    async with httpx.AsyncClient(base_url=c.http) as http:
        assert (await http.post("/api/broadcast", json={"content": "fence"})).status_code == 200
    for client in (watcher, asker):
        await client.until_type("broadcast", TIMEOUT_S, content="fence")
        assert len(reports(client, task_id)) == 1

    saved = await rows(
        a,
        "SELECT m.content, m.author, c.agent_name, c.thread_id FROM messages m "
        "JOIN conversations c ON c.id = m.conversation_id "
        "WHERE m.role = 'report' AND m.request_id = $1",
        task_id,
    )
    assert [tuple(row) for row in saved] == [(task, "worker", "desk", thread)]
    (status,) = await rows(a, "SELECT status, result FROM tasks WHERE id = $1", task_id)
    assert tuple(status) == ("complete", task)
    for client in (watcher, asker):
        await client.close()
