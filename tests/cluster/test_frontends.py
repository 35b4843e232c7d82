"""AI SDK and AG-UI streams across nodes: an answer streamed by one node is resumed, followed
and stopped through another, as behind a load balancer without sticky sessions."""

from __future__ import annotations

import json

import pytest

from tests.cluster.clients import TIMEOUT_S, history, unique, words
from tests.cluster.nodes import Node
from tests.frontends.conftest import node_packages, run_node  # noqa: F401 - the fixture
from tests.frontends.test_ag_ui import AgUiSocket, content_of, run_input

pytestmark = pytest.mark.usefixtures("node_packages")


def api(node: Node) -> str:
    return f"{node.http}/api/ai-sdk/p1/slow/chat"


async def test_ai_sdk_answer_cut_on_one_node_resumes_whole_on_another(nodes: list[Node]) -> None:
    a, b, _ = nodes
    chat_id, text = unique("c"), words("w", 60)
    result = await run_node(
        "ai_sdk.mjs",
        {
            "mode": "resume",
            "api": api(a),
            "resumeApi": api(b),
            "chatId": chat_id,
            "text": text,
            "cutAfter": 5,
            "messageId": unique("u"),
        },
        timeout=TIMEOUT_S,
    )
    assert text.startswith(result["before"]) and result["before"] != text
    assert result["text"] == text
    saved = await history(a, chat_id)
    assert [(m["role"], m["content"], m["status"]) for m in saved] == [
        ("user", text, "complete"),
        ("assistant", text, "complete"),
    ]


async def test_ai_sdk_delete_on_a_third_node_stops_the_resumed_stream(nodes: list[Node]) -> None:
    a, _, c = nodes
    chat_id, text = unique("c"), words("w", 80)
    result = await run_node(
        "ai_sdk.mjs",
        {
            "mode": "stop",
            "api": api(a),
            "resumeApi": api(c),
            "chatId": chat_id,
            "text": text,
            "cutAfter": 3,
            "stopAfter": 3,
            "messageId": unique("u"),
        },
        timeout=TIMEOUT_S,
    )
    assert result["deleteStatus"] == 200
    assert result["chunks"][-1] == {"type": "abort"}
    answer = (await history(a, chat_id))[-1]
    assert answer["status"] == "cancelled"
    assert answer["content"] == result["text"] and text.startswith(answer["content"])


async def test_ag_ui_socket_cut_on_one_node_reconnects_on_another(nodes: list[Node]) -> None:
    a, b, _ = nodes
    thread, run_id, text = unique("t"), unique("run"), words("w", 60)
    first = await AgUiSocket.open(a, "slow", f"?threadId={thread}")
    await first.until("RUN_FINISHED", timeout=TIMEOUT_S)
    await first.connection.send(json.dumps(run_input(thread, run_id, text)))
    await first.until("TEXT_MESSAGE_CONTENT", count=5, timeout=TIMEOUT_S)
    first.connection.transport.abort()

    again = await AgUiSocket.open(b, "slow", f"?threadId={thread}")
    finished = await again.until("RUN_FINISHED", timeout=TIMEOUT_S)
    assert finished["runId"] == run_id
    assert again.events[1]["type"] == "MESSAGES_SNAPSHOT"
    assert content_of(again.events, f"{run_id}-answer") == text
    verified = await run_node("ag_ui.mjs", {"mode": "verify", "events": again.events})
    assert verified["verified"] == len(again.events)
    await again.connection.close()
