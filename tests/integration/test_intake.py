"""New chats taken in while many answers stream without pausing (intake priority): every
answer stays exact, and every chat's intake is let go, whatever became of the chat."""

from __future__ import annotations

import pytest

from dari.protocol.frames import Frame
from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.engines import ENGINES
from tests.support.waiting import eventually

AGENTS = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                {"name": "echo", "backend": "echo"},  # unpaced: keeps the loop busy
                {"name": "interrupter", "backend": "echo", "policy": "interrupt"},
                {"name": "stopped", "backend": "echo", "running": False},
            ],
        }
    ]
}
WORDS = 400


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _message(tag: str) -> str:
    return " ".join(f"{tag}-{i}" for i in range(WORDS))


async def _answer(client: WsClient, request_id: str) -> tuple[str, Frame]:
    """An answer's text and ``end``, whether the end came already or is still to come."""

    def its_end(frame: Frame) -> bool:
        return frame.get("type") == "end" and frame.get("request_id") == request_id

    if not any(its_end(frame) for frame in client.frames):
        await client.until(its_end, timeout=60)
    end = next(frame for frame in client.frames if its_end(frame))
    text = "".join(
        f.get("content", "")
        for f in client.frames
        if f.get("request_id") == request_id and f.get("type") == "response"
    )
    return text, end


async def test_chats_arriving_among_busy_answers_all_end_exact_and_intake_drains(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**AGENTS)
    clients = [await WsClient.open(server.ws(f"/ws/chat/busy-{i}")) for i in range(12)]
    for client in clients:
        await client.recv()  # welcome

    # Rounds of chats (each client's in threads of its own) while the earlier rounds still
    # stream: each is taken in ahead of them.
    for round_ in range(3):
        for i, client in enumerate(clients):
            tag = f"r{round_}c{i}"
            await client.chat(_message(tag), project="p1", thread_id=f"c{i}-t{round_}", id=tag)
    # One refused (agent stopped), one resent (a duplicate), one cut by an interrupt.
    odd = clients[0]
    await odd.chat("nobody", agent="stopped", project="p1", id="refused")
    await odd.chat(_message("r0c0"), project="p1", thread_id="c0-t0", id="r0c0")
    await odd.chat(_message("cut"), agent="interrupter", project="p1", id="cut")
    await odd.chat("after", agent="interrupter", project="p1", id="after")

    for round_ in range(3):
        for i, client in enumerate(clients):
            tag = f"r{round_}c{i}"
            text, end = await _answer(client, tag)
            assert (text, end["finish_reason"]) == (_message(tag), "stop")
    refusals = [f for f in odd.frames if f.get("type") == "error"]
    assert [(f.get("request_id"), f["code"]) for f in refusals] == [("refused", "agent_not_running")]
    acks = [f for f in odd.frames if f.get("type") == "ack" and f.get("request_id") == "r0c0"]
    assert [a["duplicate"] for a in acks] == [False, True]
    _, cut_end = await _answer(odd, "cut")
    text, after_end = await _answer(odd, "after")
    assert cut_end["finish_reason"] == "cancelled"
    assert (text, after_end["finish_reason"]) == ("after", "stop")

    await eventually(lambda: server.gateway.runner.intake.pending == 0)
    for client in clients:
        await client.close()
