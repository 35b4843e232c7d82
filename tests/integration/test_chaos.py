"""Connections cut at random moments, both ways, cleanly and abruptly: nothing lost or doubled.

Real Python clients talk to a real server through a proxy that keeps cutting them while the
echo agent streams long answers slowly. For every answer, the text each client assembled must
equal the text in the database, byte for byte, with contiguous seq and no duplicate frame.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from dari.client import DariClient
from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.engines import ENGINES
from tests.support.proxy import CUT_KINDS, ChaosProxy


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Everything here holds on one node (memory) and on the several-node engine (Redis)."""
    return str(request.param)


CLIENTS = 20
ANSWERS_PER_CLIENT = 10
MIN_CUTS_PER_ANSWER = 3


async def _consume(
    client: DariClient, seen: list[dict[str, Any]], welcomed: asyncio.Event
) -> None:
    async for frame in client.frames():
        seen.append(frame)
        if frame["type"] == "welcome":
            welcomed.set()


async def _cut_until(
    proxy: ChaosProxy,
    client_id: str,
    done: asyncio.Event,
    welcomed: asyncio.Event,
    rng: random.Random,
) -> int:
    """Cut the client's connections at random moments until ``done``; returns the cut count.
    After a cut, the next one waits until the client is back (its ``welcome``): cutting
    reconnects that have not finished only piles up handshakes on a busy machine, which then
    makes every answer, and so the run, longer."""
    cuts = 0
    while not done.is_set():
        waiting = asyncio.ensure_future(welcomed.wait())
        ending = asyncio.ensure_future(done.wait())
        await asyncio.wait({waiting, ending}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        ending.cancel()
        if done.is_set():
            break
        # chaos timing, not synchronisation: when to cut is the random input
        await asyncio.sleep(rng.uniform(0.03, 0.12))
        welcomed.clear()
        if proxy.cut(client_id, rng.choice(CUT_KINDS)):
            cuts += 1
        else:
            welcomed.set()  # nothing was cut (between connections): no welcome to wait for
    return cuts


def _check_sequence(frames: list[dict[str, Any]]) -> None:
    """After each welcome, seq continues from welcome.seq by exactly one, never repeating."""
    position: int | None = None
    seen: set[int] = set()
    for frame in frames:
        if frame["type"] == "welcome":
            assert frame["resumed"] is True or position is None, frame
            position = frame["seq"]
            continue
        assert position is not None
        assert frame["seq"] == position + 1, (position, frame)
        assert frame["seq"] not in seen
        seen.add(frame["seq"])
        position = frame["seq"]


@pytest.mark.parametrize("gather_ms", [0, 30], ids=["each-piece", "gathered"])
async def test_random_cuts_lose_and_double_nothing(
    server_factory: ServerFactory, gather_ms: int
) -> None:
    """Also with pieces held back (the agent's stream_gather_ms): a cut while pieces wait
    loses none of them and sends none twice."""
    agent = {
        "name": "slow",
        "backend": "echo",
        "stream_gather_ms": gather_ms,
        "options": {"delay_ms": 6},
    }
    server = await server_factory(
        projects=[{"id": "chaos", "agents": [agent]}],
        limits={"rate_per_s": 1000, "rate_burst": 1000},
    )
    proxy = ChaosProxy(server.port)
    await proxy.start()
    rng = random.Random(20261121)
    results: list[tuple[str, str, str, int]] = []  # (client, request id, text, cuts)

    async def one_client(index: int) -> None:
        client_id = f"chaos-{index}"
        client = DariClient(
            f"ws://127.0.0.1:{proxy.port}",
            client_id,
            backoff_initial=0.02,
            backoff_max=0.1,
            ping_interval=5,
        )
        frames: list[dict[str, Any]] = []
        async with client:
            welcomed = asyncio.Event()
            consumer = asyncio.create_task(_consume(client, frames, welcomed))
            for n in range(ANSWERS_PER_CLIENT):
                words = " ".join(f"c{index}a{n}w{i}" for i in range(rng.randint(120, 160)))
                request_id = await client.chat(
                    words, agent_name="slow", project_id="chaos", thread_id=client_id
                )
                done = asyncio.Event()
                cutting = asyncio.create_task(_cut_until(proxy, client_id, done, welcomed, rng))
                answer = await client.answer(request_id, timeout=120)
                done.set()
                cuts = await cutting
                assert answer.finish_reason == "stop"
                results.append((client_id, request_id, answer.text, cuts))
            consumer.cancel()
        _check_sequence(frames)

    await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    await proxy.stop()

    assert len(results) == CLIENTS * ANSWERS_PER_CLIENT
    store = server.gateway.store
    for client_id, request_id, text, cuts in results:
        assert cuts >= MIN_CUTS_PER_ANSWER, (request_id, cuts)
        history = await store.history(ConversationKey("chaos", "slow", client_id), 100)
        saved = [m for m in history if m.request_id == request_id]
        assert [m.role for m in saved] == ["user", "assistant"]
        assert saved[1].status == "complete"
        assert text.encode() == saved[1].content.encode() == saved[0].content.encode()
