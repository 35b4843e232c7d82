"""dari.client against the real server: reconnect, resend, dead links, final closes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from dari.client import ClientClosed, DariClient
from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.proxy import ChaosProxy
from tests.support.waiting import eventually

SLOW: dict[str, Any] = {
    "projects": [
        {"id": "p1", "agents": [{"name": "slow", "backend": "echo", "options": {"delay_ms": 15}}]}
    ]
}
WORDS = " ".join(f"v{i}" for i in range(80))


async def _proxied(server_factory: ServerFactory, **overrides: Any) -> tuple[Any, ChaosProxy]:
    server = await server_factory(**{**SLOW, **overrides})
    proxy = ChaosProxy(server.port)
    await proxy.start()
    return server, proxy


def _client(proxy: ChaosProxy, client_id: str, **options: Any) -> DariClient:
    options.setdefault("backoff_initial", 0.02)
    options.setdefault("backoff_max", 0.1)
    return DariClient(f"ws://127.0.0.1:{proxy.port}", client_id, **options)


async def _first_piece(client: DariClient, request_id: str) -> None:
    await eventually(lambda: bool(client.answers.get(request_id).text))


async def test_reconnects_and_resumes_mid_answer(server_factory: ServerFactory) -> None:
    server, proxy = await _proxied(server_factory)
    states: list[str] = []
    async with _client(proxy, "py1", on_state=lambda state, code: states.append(state)) as client:
        request_id = await client.chat(WORDS, agent_name="slow", project_id="p1")
        await _first_piece(client, request_id)
        assert proxy.cut("py1", "rst_client") == 1
        answer = await client.answer(request_id, timeout=30)
        assert answer.text == WORDS and answer.finish_reason == "stop"
        assert client.connects == 2 and "reconnecting" in states
    saved = await server.gateway.store.history(ConversationKey("p1", "slow"), 2)
    assert saved[-1].content == WORDS
    await proxy.stop()


async def test_chat_lost_on_the_way_is_resent_and_answered_once(
    server_factory: ServerFactory,
) -> None:
    server, proxy = await _proxied(server_factory)
    async with _client(proxy, "py2") as client:
        proxy.freeze("py2")  # the chat frame vanishes
        request_id = await client.chat("lost then found", agent_name="slow", project_id="p1")
        proxy.cut("py2", "fin_client")
        answer = await client.answer(request_id, timeout=30)
        assert answer.text == "lost then found"
    history = await server.gateway.store.history(ConversationKey("p1", "slow"), 10)
    assert [(m.role, m.request_id) for m in history] == [
        ("user", request_id),
        ("assistant", request_id),
    ]
    await proxy.stop()


async def test_ack_lost_on_the_way_back_runs_the_chat_exactly_once(
    server_factory: ServerFactory,
) -> None:
    server, proxy = await _proxied(server_factory)
    async with _client(proxy, "py3") as client:
        proxy.freeze("py3", downstream_only=True)  # the server gets the chat; the ack is lost
        request_id = await client.chat("once only", agent_name="slow", project_id="p1")
        key = ConversationKey("p1", "slow")
        store = server.gateway.store

        async def stored() -> bool:
            return bool(await store.history(key, 1))

        await eventually(stored)
        proxy.cut("py3", "rst_server")
        answer = await client.answer(request_id, timeout=30)
        assert answer.text == "once only"
    history = await server.gateway.store.history(ConversationKey("p1", "slow"), 10)
    assert [m.role for m in history] == ["user", "assistant"]
    await proxy.stop()


async def test_missing_pong_is_a_dead_link(server_factory: ServerFactory) -> None:
    _, proxy = await _proxied(server_factory)
    async with _client(proxy, "py4", ping_interval=0.2, pong_timeout=0.3) as client:
        proxy.freeze("py4")
        await eventually(lambda: client.connects >= 2)
        request_id = await client.chat("alive again", agent_name="slow", project_id="p1")
        assert (await client.answer(request_id, timeout=30)).text == "alive again"
    await proxy.stop()


async def test_replaced_connection_does_not_fight_back(server_factory: ServerFactory) -> None:
    _, proxy = await _proxied(server_factory)
    first = _client(proxy, "twin")
    await first.__aenter__()
    async with _client(proxy, "twin") as second:
        with pytest.raises(ClientClosed) as closed:
            async for _ in first.frames():
                pass
        assert closed.value.code == 4409
        assert first.state == "offline"
        request_id = await second.chat("still here", agent_name="slow", project_id="p1")
        assert (await second.answer(request_id, timeout=30)).text == "still here"
    await first.close()
    await proxy.stop()


async def test_no_reconnect_after_4401(server_factory: ServerFactory) -> None:
    _, proxy = await _proxied(
        server_factory, auth={"mode": "jwt", "secret": "s" * 48, "algorithms": ["HS256"]}
    )
    client = _client(proxy, "nobody")
    with pytest.raises(ClientClosed) as closed:
        await client.__aenter__()
    assert closed.value.code == 4401
    assert proxy.accepted == 1 and client.connects == 0 and client.state == "offline"
    await client.close()
    await proxy.stop()


async def test_a_4409_soon_after_a_handshake_that_got_no_welcome_is_not_taken_as_final(
    server_factory: ServerFactory,
) -> None:
    """A handshake the client gave up on can reach a server after its newer one (a slow
    proxy) and replace it. That 4409 is no other tab: the client takes its place back."""
    port = free_port()
    client = _client_at(port, "late")
    opening = asyncio.create_task(client.__aenter__())
    await eventually(lambda: client.state == "reconnecting")  # refused: no welcome
    await server_factory(port=port, **SLOW)
    await opening
    assert client.connects == 1
    # The handshake that got no welcome lands now, later than the newer one.
    late = await WsClient.open(f"ws://127.0.0.1:{port}/ws/chat/late")
    assert (await late.recv())["type"] == "welcome"
    assert await late.closed_with() == 4409  # replaced again by the client, which came back
    await eventually(lambda: client.connects == 2 and client.state == "connected")
    request_id = await client.chat("still here", agent_name="slow", project_id="p1")
    assert (await client.answer(request_id, timeout=30)).text == "still here"
    await client.close()


def _client_at(port: int, client_id: str) -> DariClient:
    return DariClient(
        f"ws://127.0.0.1:{port}", client_id, backoff_initial=0.05, backoff_max=0.1, open_timeout=2
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
