"""The primary dialect over real sockets: streaming, ordering, cancel, errors, history."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from dari.protocol.errors import StoreUnavailable
from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.client import WsClient, seqs
from tests.support.engines import ENGINES
from tests.support.server import RunningServer


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Everything here holds on one node (memory) and on the several-node engine (Redis)."""
    return str(request.param)


SLOW_ECHO = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                {"name": "echo", "backend": "echo"},
                {"name": "slow", "backend": "echo", "options": {"delay_ms": 30}},
                {"name": "stopped", "backend": "echo", "running": False},
                {
                    "name": "rejecter",
                    "backend": "echo",
                    "policy": "reject",
                    "options": {"delay_ms": 30},
                },
                {
                    "name": "interrupter",
                    "backend": "echo",
                    "policy": "interrupt",
                    "options": {"delay_ms": 30},
                },
            ],
        }
    ]
}


async def test_seed_client_gets_start_pieces_end(server: RunningServer) -> None:
    client = await WsClient.open(server.ws("/ws/chat/abc"))
    welcome = await client.recv()
    assert welcome["type"] == "welcome" and welcome["resumed"] is False
    await client.send(
        {
            "type": "chat",
            "message": "안녕하세요",
            "agent_name": "집사",
            "project_id": "project_001",
            "images": [],
        }
    )
    ack = await client.until_type("ack")
    text, end = await client.answer(ack["request_id"])
    kinds = [f["type"] for f in client.frames if f.get("request_id") == ack["request_id"]]
    assert kinds[0] == "ack" and kinds[1] == "start" and kinds[-1] == "end"
    assert kinds.count("response") >= 5  # streamed in pieces, not in one go
    assert "안녕하세요" in text and end["finish_reason"] == "stop"
    # seq is contiguous from 1
    assert (
        seqs(client.frames)
        == list(range(1, len(client.frames) + 1 - 1 + 1))[: len(seqs(client.frames))]
    )
    assert seqs(client.frames)[0] == 1
    await client.close()


async def test_answer_text_equals_saved_history(server: RunningServer) -> None:
    client = await WsClient.open(server.ws("/ws/chat/c1"))
    await client.recv()
    message = "  one two\tthree  four\n five  "
    await client.chat(message, id="m1")
    text, end = await client.answer("m1")
    assert text == message and end["finish_reason"] == "stop"
    async with httpx.AsyncClient(base_url=server.http) as http:
        body = (
            await http.get("/api/projects/project_001/agents/echo/threads/main/messages")
        ).json()
    assert [(m["role"], m["content"], m["status"]) for m in body["messages"]] == [
        ("user", message, "complete"),
        ("assistant", message, "complete"),
    ]
    await client.close()


async def test_fifty_clients_each_get_their_own_answer(server: RunningServer) -> None:
    async def one(i: int) -> tuple[str, str]:
        client = await WsClient.open(server.ws(f"/ws/chat/many-{i}"))
        await client.recv()
        expected = " ".join(f"c{i}w{j}" for j in range(20))
        await client.chat(expected, id=f"q{i}", thread_id=f"t{i}")
        text, _ = await client.answer(f"q{i}", timeout=30)
        await client.close()
        return expected, text

    results = await asyncio.gather(*(one(i) for i in range(50)))
    for expected, text in results:
        assert text == expected


async def test_back_to_back_chats_answer_in_order_never_interleaved(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**SLOW_ECHO)
    client = await WsClient.open(server.ws("/ws/chat/order"))
    await client.recv()
    for n in range(3):
        await client.chat(f"first{n} second{n} third{n}", agent="slow", project="p1", id=f"o{n}")
    await client.until_type("end", request_id="o2", timeout=20)
    answer_frames = [f for f in client.frames if f.get("type") in ("start", "response", "end")]
    order = [f["request_id"] for f in answer_frames]
    # each request's frames form one contiguous block, in the order sent
    blocks = [rid for i, rid in enumerate(order) if i == 0 or order[i - 1] != rid]
    assert blocks == ["o0", "o1", "o2"]
    acks = [f for f in client.frames if f["type"] == "ack"]
    assert [a["queued"] for a in acks] == [0, 1, 2]
    await client.close()


async def test_cancel_mid_answer_saves_partial_text(server_factory: ServerFactory) -> None:
    server = await server_factory(**SLOW_ECHO)
    client = await WsClient.open(server.ws("/ws/chat/cancel"))
    await client.recv()
    words = " ".join(f"w{i}" for i in range(200))
    await client.chat(words, agent="slow", project="p1", id="long")
    await client.until(lambda f: f.get("type") == "response" and f.get("request_id") == "long")
    await client.send({"type": "cancel", "request_id": "long"})
    text, end = await client.answer("long")
    assert end["finish_reason"] == "cancelled"
    assert 0 < len(text) < len(words) and words.startswith(text)
    history = await server.gateway.store.history(
        ConversationKey("p1", "slow"),
        10,
    )
    assert history[-1].status == "cancelled" and history[-1].content == text
    await client.close()


async def test_an_answer_whose_row_cannot_be_written_says_so_and_the_socket_goes_on(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On one node the agent starts before its row is written: if the write fails, the text
    # has gone out but is not kept, and the client learns it before the end.
    store = server.gateway.store
    real_begin = store.begin_answer

    def failing_begin(key: ConversationKey, request_id: str, node_id: str) -> asyncio.Future[int]:
        failed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        failed.set_exception(StoreUnavailable("the disk is full"))
        return failed

    monkeypatch.setattr(store, "begin_answer", failing_begin)
    client = await WsClient.open(server.ws("/ws/chat/unsaved"))
    await client.recv()
    await client.chat("kept nowhere", id="lost", thread_id="unsaved")
    text, end = await client.answer("lost")
    errors = [f for f in client.frames if f["type"] == "error" and f.get("request_id") == "lost"]
    told = [(e["code"], e["message"]) for e in errors]
    if server.gateway.runner.queue.begins_with_row:
        # Several nodes: the row comes first (a reaper saves into it), so nothing streamed.
        assert text == "" and told == [("agent_failed", "the disk is full")]
    else:
        assert text == "kept nowhere"
        assert told == [("internal", "the answer could not be saved: the disk is full")]
    assert end["finish_reason"] == "error"
    key = ConversationKey("project_001", "echo", "unsaved")
    assert [(m.role, m.content) for m in await store.history(key, 10)] == [("user", "kept nowhere")]

    monkeypatch.setattr(store, "begin_answer", real_begin)  # the store is back
    await client.chat("kept now", id="kept", thread_id="unsaved")
    text, end = await client.answer("kept")
    assert text == "kept now" and end["finish_reason"] == "stop"
    history = await store.history(key, 10)
    assert [(m.role, m.content) for m in history][-1] == ("assistant", "kept now")
    await client.close()


async def test_history_survives_restart(server_factory: ServerFactory) -> None:
    first = await server_factory()
    client = await WsClient.open(first.ws("/ws/chat/h"))
    await client.recv()
    await client.chat("remember me", id="h1")
    await client.answer("h1")
    await client.close()
    await first.stop()
    second = await server_factory()
    client = await WsClient.open(second.ws("/ws/chat/h"))
    await client.recv()
    await client.send(
        {"type": "history", "project_id": "project_001", "agent_name": "echo", "thread_id": "main"}
    )
    history = await client.until_type("history")
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "remember me"),
        ("assistant", "remember me"),
    ]
    await client.close()


async def test_start_and_stop_change_what_a_chat_gets(server: RunningServer) -> None:
    client = await WsClient.open(server.ws("/ws/chat/ss"))
    await client.recv()
    async with httpx.AsyncClient(base_url=server.http) as http:
        stopped = await http.post("/api/projects/project_001/agents/echo/stop")
        assert stopped.json()["running"] is False
        await client.chat("hello", id="s1")
        error = await client.until_type("error")
        assert error["code"] == "agent_not_running" and error["request_id"] == "s1"
        started = await http.post("/api/projects/project_001/agents/echo/start")
        assert started.json()["running"] is True
    await client.chat("hello again", id="s2")
    text, _ = await client.answer("s2")
    assert text == "hello again"
    await client.close()


async def test_every_error_code_keeps_the_connection_usable(server_factory: ServerFactory) -> None:
    server = await server_factory(**SLOW_ECHO, limits={"max_message_bytes": 4096, "queue_size": 1})
    client = await WsClient.open(server.ws("/ws/chat/errs"))
    await client.recv()
    cases: list[tuple[str | bytes | dict[str, object], str]] = [
        ("{not json", "bad_request"),
        ("[1, 2]", "bad_request"),
        ({"type": "teleport"}, "bad_request"),
        ({"message": "no type"}, "bad_request"),
        ({"type": "chat", "message": 5, "agent_name": "echo", "project_id": "p1"}, "bad_request"),
        ({"type": "chat", "agent_name": "echo", "project_id": "p1"}, "bad_request"),
        (b"\x00\x01binary", "bad_request"),
        (
            {"type": "chat", "message": "x" * 5000, "agent_name": "echo", "project_id": "p1"},
            "too_large",
        ),
        (
            {"type": "chat", "message": "hi", "agent_name": "echo", "project_id": "nope"},
            "project_not_found",
        ),
        (
            {"type": "chat", "message": "hi", "agent_name": "ghost", "project_id": "p1"},
            "agent_not_found",
        ),
        (
            {"type": "chat", "message": "hi", "agent_name": "stopped", "project_id": "p1"},
            "agent_not_running",
        ),
        (
            {
                "type": "chat",
                "message": "hi",
                "agent_name": "echo",
                "project_id": "p1",
                "images": ["data:text/html;base64,PGI+"],
            },
            "bad_request",
        ),
        ({"type": "cancel", "request_id": "never-sent"}, "not_found"),
    ]
    for frame, code in cases:
        await client.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))
        error = await client.until_type("error")
        assert error["code"] == code, (frame, error)
        # still usable: a ping gets its pong
        await client.send({"type": "ping", "ts": 7})
        pong = await client.until_type("pong")
        assert pong["ts"] == 7
    # queue_full: one running + one waiting fill a queue of size 1
    for n in range(3):
        await client.chat("a b c d e f", agent="slow", project="p1", id=f"qf{n}")
    error = await client.until_type("error")
    assert error["code"] == "queue_full" and error["request_id"] == "qf2"
    # reject policy: a second chat while answering is refused
    await client.chat("a b c d e f g h", agent="rejecter", project="p1", id="rj1")
    await client.chat("x", agent="rejecter", project="p1", id="rj2")
    error = await client.until_type("error", request_id="rj2")
    assert error["code"] == "queue_full"
    text, _ = await client.answer("rj1")
    assert text == "a b c d e f g h"
    await client.close()


async def test_interrupt_policy_cancels_the_running_answer(server_factory: ServerFactory) -> None:
    server = await server_factory(**SLOW_ECHO)
    client = await WsClient.open(server.ws("/ws/chat/intr"))
    await client.recv()
    await client.chat(" ".join(["x"] * 100), agent="interrupter", project="p1", id="i1")
    await client.until(lambda f: f.get("type") == "response" and f["request_id"] == "i1")
    await client.chat("new question", agent="interrupter", project="p1", id="i2")
    _, first_end = await client.answer("i1")
    text, second_end = await client.answer("i2")
    assert first_end["finish_reason"] == "cancelled"
    assert second_end["finish_reason"] == "stop" and text == "new question"
    await client.close()


async def test_second_dialect_streams_tokens_then_done(server_factory: ServerFactory) -> None:
    server = await server_factory(**SLOW_ECHO, default_project="p1")
    client = await WsClient.open(server.ws("/api/chat/ws/thread-7"))
    await client.send({"message": "tokens in order", "agent_name": "slow"})
    done = await client.until(lambda f: f.get("event_type") == "done")
    tokens = [f["data"]["token"] for f in client.frames if f.get("event_type") == "token"]
    assert tokens == ["tokens ", "in ", "order"]  # paced pieces: one event each
    assert done["data"]["finish_reason"] == "stop"
    await client.send("{broken")
    error = await client.until(lambda f: f.get("event_type") == "error")
    assert error["data"]["code"] == "bad_request"
    history = await server.gateway.store.history(
        ConversationKey("p1", "slow", "thread-7"),
        10,
    )
    assert [m.content for m in history] == ["tokens in order", "tokens in order"]
    await client.close()
