"""Delegated tasks across nodes: the report reaches every subscriber of the project, on any
node, exactly once, and is saved in the delegating conversation's history exactly once."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cluster.clients import (
    TIMEOUT_S,
    chat,
    connect,
    fence,
    rows,
    subscribe,
    text_of,
    unique,
    words,
)
from tests.cluster.nodes import LEASE_S, REAP_S, Node
from tests.support.client import WsClient


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


async def report_rows(node: Node, task_id: str) -> list[tuple[Any, ...]]:
    saved = await rows(
        node,
        "SELECT m.content, m.author, c.agent_name, c.thread_id FROM messages m "
        "JOIN conversations c ON c.id = m.conversation_id "
        "WHERE m.role = 'report' AND m.request_id = $1",
        task_id,
    )
    return [tuple(row) for row in saved]


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
    await fence(c, watcher, asker)
    for client in (watcher, asker):
        assert len(reports(client, task_id)) == 1
    assert await report_rows(a, task_id) == [(task, "worker", "desk", thread)]
    (status,) = await rows(a, "SELECT status, result FROM tasks WHERE id = $1", task_id)
    assert tuple(status) == ("complete", task)
    for client in (watcher, asker):
        await client.close()


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
async def test_a_task_whose_node_stops_fails_and_is_reported_once(
    nodes: list[Node], stop: str
) -> None:
    a, b, c = nodes
    thread, task = unique("t"), words("long", 400)  # the worker echoes it, 20 ms a word
    watcher = await connect(a, unique("watcher"))
    await subscribe(watcher, None)
    asker = await connect(b, unique("asker"))
    task_id = await delegate(asker, thread, task, "d1")  # runs on b, where it was delegated
    await subscribe(watcher, f"task-{task_id}", agent="worker")
    for _ in range(5):
        await watcher.until_type("response", TIMEOUT_S, request_id=task_id)

    # Killed, another node fails it once the lease expires; stopped, b drains (DRAIN_S, too
    # short for the task), cuts it and reports it on its way out.
    killed = stop == "kill -9"
    await (b.kill() if killed else b.stop())
    report = await watcher.until_type("auto_report", LEASE_S + 10 * REAP_S + 10, task_id=task_id)
    why = "the node running it (node-b)" if killed else "the gateway is shutting down: node node-b"
    assert report["content"].startswith(f"[worker] task failed: {why}")
    assert (report["origin_agent"], report["thread_id"]) == ("desk", thread)
    # The task's answer ended first (the watcher follows its conversation too).
    ended = [
        (f["type"], f.get("code") or f.get("finish_reason"))
        for f in watcher.frames
        if f["type"] in ("error", "end") and f.get("request_id") == task_id
    ]
    if killed:
        assert ended == [("error", "agent_failed"), ("end", "error")]
    else:
        assert ended == [("error", "shutting_down"), ("end", "cancelled")]
    await fence(c, watcher)
    assert len(reports(watcher, task_id)) == 1

    (status,) = await rows(a, "SELECT status, result FROM tasks WHERE id = $1", task_id)
    assert tuple(status) == ("failed", report["content"])
    assert await report_rows(a, task_id) == [(report["content"], "worker", "desk", thread)]
    # The task's own answer is saved as failed, with exactly the text that was streamed.
    (answer,) = await rows(
        a,
        "SELECT content, status FROM messages WHERE request_id = $1 AND role = 'assistant'",
        task_id,
    )
    received = text_of(watcher, task_id)
    assert tuple(answer) == (received, "failed" if killed else "cancelled")
    assert task.startswith(received) and received
    await watcher.close()
