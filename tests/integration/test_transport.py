"""The uvicorn-specific writer and its fallback to plain ASGI ``send``: both stream exactly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dari.transport import DirectSocket
from tests.conftest import ServerFactory
from tests.support.client import WsClient

WORDS = " ".join(f"t{i}" for i in range(200))


@pytest.mark.parametrize(
    ("ws_backend", "direct"),
    [("websockets-sansio", True), ("websockets", False)],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # uvicorn's legacy websockets protocol
async def test_every_server_protocol_streams_the_exact_answer(
    server_factory: ServerFactory, ws_backend: str, direct: bool
) -> None:
    server = await server_factory(server={"ws_backend": ws_backend})
    client = await WsClient.open(server.ws("/ws/chat/transport"))
    await client.recv()
    await client.chat(WORDS, id="t1")
    await client.until_type("start", request_id="t1")
    connection = server.gateway.hub.clients["transport"].connection
    assert connection is not None
    # The direct path on the protocol it knows; the ASGI send everywhere else.
    assert connection.writes_directly is direct
    text, end = await client.answer("t1", timeout=30)
    assert text == WORDS and end["finish_reason"] == "stop"
    seqs = [f["seq"] for f in client.frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    await client.close()


class _Protocol:
    """A protocol object with only some of what the direct writer needs."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

    async def send(self, message: Any) -> None:  # pragma: no cover - never called
        raise AssertionError


def test_an_unknown_server_or_protocol_falls_back_to_asgi_send() -> None:
    assert DirectSocket.for_send(None) is None
    assert DirectSocket.for_send(lambda message: None) is None
    # Not uvicorn's protocol class, even with the same attributes.
    lookalike = _Protocol(
        conn=object(),
        transport=object(),
        writable=asyncio.Event(),
        disconnected=False,
        close_sent=False,
    )
    assert DirectSocket.for_send(lookalike.send) is None
