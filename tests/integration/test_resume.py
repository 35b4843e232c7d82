"""Resume cases as a table: what a reconnecting client receives, frame by frame."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.engines import ENGINES
from tests.support.server import RunningServer
from tests.support.waiting import eventually


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Everything here holds on one node (memory) and on the several-node engine (Redis)."""
    return str(request.param)


WORDS = " ".join(f"word{i}" for i in range(60))
KEY = ConversationKey("p1", "slow")


def slow_project(delay_ms: int = 15) -> dict[str, Any]:
    return {
        "projects": [
            {
                "id": "p1",
                "agents": [{"name": "slow", "backend": "echo", "options": {"delay_ms": delay_ms}}],
            }
        ]
    }


async def _start_answer(server: RunningServer, client_id: str, pieces_before_cut: int) -> WsClient:
    """Connect, ask for WORDS, read ``pieces_before_cut`` pieces; returns the open client."""
    client = await WsClient.open(server.ws(f"/ws/chat/{client_id}"))
    await client.recv()
    await client.chat(WORDS, agent="slow", project="p1", id="a1")
    for _ in range(pieces_before_cut):
        await client.until_type("response")
    return client


async def _observer(server: RunningServer) -> WsClient:
    """A second client subscribed to the same conversation, to know when things happened."""
    observer = await WsClient.open(server.ws("/ws/chat/observer"))
    await observer.recv()
    await observer.send({"type": "subscribe", "project_id": "p1", "agent_name": "slow"})
    await observer.until_type("subscribed")
    return observer


def _text_of(frames: list[dict[str, Any]]) -> str:
    text = ""
    for frame in frames:
        if frame.get("type") == "snapshot":
            text = frame["content"]
        elif frame.get("type") == "response":
            text += frame["content"]
    return text


def _position(client: WsClient) -> int:
    return max(f["seq"] for f in client.frames)


async def _reconnect(server: RunningServer, client_id: str, query: str) -> WsClient:
    client = await WsClient.open(server.ws(f"/ws/chat/{client_id}?{query}"))
    return client


async def test_resume_at_head_replays_nothing(server_factory: ServerFactory) -> None:
    server = await server_factory(**slow_project(0))
    client = await _start_answer(server, "head", 0)
    await client.answer("a1")
    seq, epoch = _position(client), client.frames[0]["epoch"]
    await client.close()
    again = await _reconnect(server, "head", f"last_seq={seq}&epoch={epoch}")
    welcome = await again.recv()
    assert welcome["resumed"] is True and welcome["seq"] == seq == welcome["last_seq"]
    await again.send({"type": "ping", "ts": 1})
    pong = await again.recv()  # the very next frame: nothing was replayed before it
    assert pong["type"] == "pong" and pong["seq"] == seq + 1
    await again.close()


async def test_resume_mid_answer_gets_exactly_the_tail(server_factory: ServerFactory) -> None:
    server = await server_factory(**slow_project())
    client = await _start_answer(server, "mid", 5)
    seq, epoch = _position(client), client.frames[0]["epoch"]
    before = _text_of(client.frames)
    client.connection.transport.abort()  # abrupt: no close handshake
    again = await _reconnect(server, "mid", f"last_seq={seq}&epoch={epoch}")
    welcome = await again.recv()
    assert welcome["resumed"] is True and welcome["seq"] == seq
    end = await again.until_type("end", request_id="a1")
    after = [f for f in again.frames if f["type"] != "welcome"]
    assert [f["seq"] for f in after] == list(range(seq + 1, end["seq"] + 1))
    assert before + _text_of(after) == WORDS
    assert sum(1 for f in after if f["type"] == "end") == 1
    await again.close()


async def test_resume_after_the_answer_finished_while_away(
    server_factory: ServerFactory, engine: str
) -> None:
    server = await server_factory(**slow_project(5))
    observer = await _observer(server)
    client = await _start_answer(server, "away", 3)
    seq, epoch = _position(client), client.frames[0]["epoch"]
    before = _text_of(client.frames)
    await client.close()
    await observer.until_type("end", request_id="a1")  # finished while the client was away
    again = await _reconnect(server, "away", f"last_seq={seq}&epoch={epoch}")
    welcome = await again.recv()
    assert welcome["resumed"] is True
    await again.until_type("end", request_id="a1")
    after = again.frames[1:]
    assert before + _text_of(after) == WORDS
    assert [f["type"] for f in after].count("end") == 1
    pieces = len([f for f in after if f["type"] == "response"])
    if engine == "memory":
        assert pieces < len(WORDS.split()) - 3  # merged while nobody read them
    else:
        assert pieces == len(_text_of(after).split())  # the shared log keeps every piece
    await again.send({"type": "ping"})
    assert (await again.until_type("pong"))["seq"] == after[-1]["seq"] + 1
    await again.close()
    await observer.close()


async def test_expired_window_gives_snapshot_then_live(server_factory: ServerFactory) -> None:
    server = await server_factory(**slow_project(20), replay={"max_frames": 4})
    observer = await _observer(server)
    client = await _start_answer(server, "expired", 3)
    seq, epoch = _position(client), client.frames[0]["epoch"]
    await client.close()
    # Pieces merge while the client is away, so fill its window with frames that do not:
    # operator broadcasts. Once six have been logged, seq + 1 is gone.
    async with httpx.AsyncClient(base_url=server.http) as http:
        for n in range(6):
            response = await http.post("/api/broadcast", json={"content": f"notice {n}"})
            assert response.json()["delivered"] >= 2
    again = await _reconnect(server, "expired", f"last_seq={seq}&epoch={epoch}")
    welcome = await again.recv()
    assert welcome["resumed"] is False and welcome["reason"] == "expired"
    snapshot = await again.recv()
    assert snapshot["type"] == "snapshot" and snapshot["request_id"] == "a1"
    assert snapshot["seq"] == welcome["seq"] + 1 and WORDS.startswith(snapshot["content"])
    await again.until_type("end", request_id="a1")
    assert _text_of(again.frames) == WORDS  # nothing missing, nothing doubled
    assert not any(f["type"] == "broadcast" for f in again.frames)  # expired with the window
    seqs = [f["seq"] for f in again.frames[1:]]
    assert seqs == list(range(welcome["seq"] + 1, welcome["seq"] + 1 + len(seqs)))
    await again.close()
    await observer.close()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("last_seq=abc", "invalid_last_seq"),
        ("last_seq=-1", "invalid_last_seq"),
        ("last_seq=1e3", "invalid_last_seq"),
        ("last_seq=999999", "ahead"),
        ("last_seq=1&epoch=not-this-one", "epoch_changed"),
    ],
)
async def test_unusable_last_seq_starts_fresh_and_says_why(
    server: RunningServer, query: str, reason: str
) -> None:
    first = await WsClient.open(server.ws("/ws/chat/fresh"))
    await first.recv()
    await first.send({"type": "ping"})
    await first.until_type("pong")
    await first.close()
    again = await _reconnect(server, "fresh", query)
    welcome = await again.recv()
    assert welcome["resumed"] is False and welcome["reason"] == reason
    assert welcome["seq"] == welcome["last_seq"] == 1  # continues from the head
    await again.send({"type": "ping"})
    assert (await again.until_type("pong"))["seq"] == 2
    await again.close()


async def test_unknown_client_with_last_seq_is_told_there_is_no_log(server: RunningServer) -> None:
    client = await _reconnect(server, "never-seen", "last_seq=5")
    welcome = await client.recv()
    assert welcome["resumed"] is False and welcome["reason"] == "no_log" and welcome["seq"] == 0
    await client.close()


async def test_reconnect_before_any_frame_resumes_from_zero(server: RunningServer) -> None:
    # Cut right after welcome, before anything was logged: nothing was missed, so it resumes.
    client = await _reconnect(server, "quiet", "last_seq=0")
    welcome = await client.recv()
    assert welcome["resumed"] is True and welcome["seq"] == 0 and "reason" not in welcome
    await client.close()


# One node restarting on its own store; on the Redis engine a stopped node's answers and tasks
# are ended by another node's reaper (tests/cluster: kill -9 and restarts).
@pytest.mark.parametrize("engine", ["memory"])
async def test_server_restart_mid_answer_marks_it_failed(server_factory: ServerFactory) -> None:
    server = await server_factory(**slow_project(30))
    client = await _start_answer(server, "restart", 3)
    seq, epoch = _position(client), client.frames[0]["epoch"]
    await server.stop()
    await client.closed_with()
    history = await _history_after_restart(server_factory)
    assert history[-1].role == "assistant" and history[-1].status == "failed"
    assert WORDS.startswith(history[-1].content)
    restarted = await server_factory(**slow_project(30))
    again = await _reconnect(restarted, "restart", f"last_seq={seq}&epoch={epoch}")
    welcome = await again.recv()
    assert welcome["resumed"] is False and welcome["reason"] in ("epoch_changed", "no_log")
    await again.close()


async def _history_after_restart(server_factory: ServerFactory) -> list[Any]:
    server = await server_factory(**slow_project(30))
    history = await server.gateway.store.history(KEY, 10)
    await server.stop()
    return history


# One node restarting on its own store; on the Redis engine a stopped node's answers and tasks
# are ended by another node's reaper (tests/cluster: kill -9 and restarts).
@pytest.mark.parametrize("engine", ["memory"])
async def test_answers_left_streaming_by_a_crash_are_failed_at_start(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**slow_project())
    store = server.gateway.store
    await store.accept_chat(
        user_id="u", client_message_id=None, request_id="crashed", key=KEY, message="m", images=[]
    )
    message_id = await store.begin_answer(KEY, "crashed", server.gateway.runner.node_id)
    await store.save_answer(message_id, "half an ans", "streaming", [])
    # A crash leaves the row streaming; the next start with the same node id fails it.
    server.task.cancel()
    server.server.should_exit = True
    with pytest.raises(asyncio.CancelledError):
        await server.task
    restarted = await server_factory(**slow_project())
    history = await restarted.gateway.store.history(KEY, 10)
    assert [(m.request_id, m.status, m.content) for m in history if m.role == "assistant"] == [
        ("crashed", "failed", "half an ans")
    ]


async def test_a_backlog_beyond_the_lag_limit_is_replayed_in_one_connection(
    server_factory: ServerFactory,
) -> None:
    # 5,000 unmergeable frames missed: more than max_lag_frames (2,000 by default), less than
    # the replay window (10,000). Catching up is not falling behind: no 1013 on the way.
    steps = 5000
    server = await server_factory(
        projects=[
            {
                "id": "p1",
                "agents": [
                    {
                        "name": "steps",
                        "backend": "python",
                        "options": {"entrypoint": "tests.support.agents:step_storm"},
                    }
                ],
            }
        ]
    )
    assert server.gateway.settings.limits.max_lag_frames < steps
    observer = await WsClient.open(server.ws("/ws/chat/watch"))
    await observer.recv()
    await observer.send({"type": "subscribe", "project_id": "p1", "agent_name": "steps"})
    await observer.until_type("subscribed")
    client = await WsClient.open(server.ws("/ws/chat/away"))
    welcome = await client.recv()
    await client.chat(str(steps), agent="steps", project="p1", id="s1")
    ack = await client.until_type("ack")
    await client.close()  # away for the whole answer
    await observer.until_type("end", request_id="s1", timeout=30)

    again = await _reconnect(server, "away", f"last_seq={ack['seq']}&epoch={welcome['epoch']}")
    assert (await again.recv())["resumed"] is True
    end = await again.until_type("end", request_id="s1", timeout=30)
    replayed = [f for f in again.frames if "seq" in f and f["type"] != "welcome"]
    assert [f["seq"] for f in replayed] == list(range(ack["seq"] + 1, end["seq"] + 1))
    assert [f["content"] for f in replayed if f["type"] == "step"] == [
        f"step {i}" for i in range(steps)
    ]
    await again.send({"type": "ping"})
    assert (await again.until_type("pong"))["seq"] == end["seq"] + 1  # still open
    await again.close()
    await observer.close()


async def test_the_first_piece_is_saved_at_once(server_factory: ServerFactory) -> None:
    """A crash right after the first piece must not leave an empty row for text people saw:
    the first checkpoint comes with the first piece, not one interval later."""
    server = await server_factory(**slow_project(200), store={"checkpoint_s": 60})
    client = await WsClient.open(server.ws("/ws/chat/first"))
    await client.recv()
    await client.chat(WORDS, agent="slow", project="p1", id="a1")
    first = await client.until_type("response")
    store = server.gateway.store

    async def saved() -> list[tuple[str, str]]:
        history = await store.history(KEY, 10)
        return [(m.status, m.content) for m in history if m.role == "assistant"]

    async def checkpointed() -> bool:
        rows = await saved()
        return len(rows) == 1 and rows[0][1] != ""

    await eventually(checkpointed, 10)
    ((status, content),) = await saved()
    assert status == "streaming"
    assert content.startswith(first["content"]) and WORDS.startswith(content)
    await client.close()
