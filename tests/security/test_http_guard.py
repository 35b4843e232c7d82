"""Connection guards at the HTTP layer, with raw sockets against a real server: a request whose
line or headers stall is closed within server.header_timeout_s (slowloris), and connections
past the per-IP or global cap get 503 and are closed. Both are counted in /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect

from tests.conftest import ServerFactory
from tests.support.server import RunningServer
from tests.support.waiting import eventually

HEADER_TIMEOUT_S = 0.6


def refusals(code: str) -> float:
    return REGISTRY.get_sample_value("dari_refusals_total", {"code": code}) or 0.0


class Raw:
    """A plain TCP connection to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: RunningServer) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_until_closed(self, timeout: float) -> bytes:
        """Everything the server sends until it closes; TimeoutError if it does not."""
        received = b""
        async with asyncio.timeout(timeout):
            while chunk := await self.reader.read(4096):
                received += chunk
        return received

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def opened() -> AsyncIterator[list[Raw]]:
    sockets: list[Raw] = []
    yield sockets
    for raw in sockets:
        raw.close()


async def get_health(server: RunningServer) -> bytes:
    raw = await Raw.open(server)
    try:
        await raw.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return await raw.read_until_closed(5)
    finally:
        raw.close()


# --- header timeout ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "partial",
    [b"GET / HTTP/1.1\r\nHost: x", b"GET /ws/chat/abc HTT", b""],
    ids=["headers_unfinished", "request_line_unfinished", "nothing_sent"],
)
async def test_a_stalled_request_is_closed_within_the_header_timeout(
    server_factory: ServerFactory, partial: bytes
) -> None:
    server = await server_factory(server={"header_timeout_s": HEADER_TIMEOUT_S})
    before = refusals("408")
    raw = await Raw.open(server)
    started = time.monotonic()
    await raw.send(partial)
    answer = await raw.read_until_closed(HEADER_TIMEOUT_S + 3)
    elapsed = time.monotonic() - started
    raw.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and elapsed >= HEADER_TIMEOUT_S * 0.8
    assert refusals("408") == before + 1


async def test_a_stall_in_the_next_request_of_a_kept_alive_connection_is_closed(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(server={"header_timeout_s": HEADER_TIMEOUT_S})
    raw = await Raw.open(server)
    await raw.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = await raw.reader.readuntil(b'{"status":"ok"}')
    assert first.startswith(b"HTTP/1.1 200 ")
    await raw.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
    assert (await raw.read_until_closed(HEADER_TIMEOUT_S + 3)).startswith(b"HTTP/1.1 408 ")
    raw.close()


async def test_complete_requests_and_open_websockets_outlive_the_header_timeout(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(server={"header_timeout_s": HEADER_TIMEOUT_S})
    async with connect(server.ws("/ws/chat/long-lived"), compression=None) as ws:
        await ws.recv()  # welcome
        # Nothing comes, and the socket is not closed, well past the header timeout.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(HEADER_TIMEOUT_S * 2):
                await ws.recv()
        await ws.send('{"type": "ping", "ts": "still-here"}')
        async with asyncio.timeout(5):
            assert "still-here" in str(await ws.recv())
    assert (await get_health(server)).startswith(b"HTTP/1.1 200 ")


# --- connection caps ---------------------------------------------------------------------------


async def test_past_the_per_ip_cap_a_connection_gets_503_until_one_closes(
    server_factory: ServerFactory, opened: list[Raw]
) -> None:
    server = await server_factory(server={"max_connections_per_ip": 3})
    before = refusals("503")
    async with connect(server.ws("/ws/chat/counted"), compression=None) as ws:
        await ws.recv()  # an upgraded socket holds its slot
        opened.extend([await Raw.open(server), await Raw.open(server)])
        await opened[0].send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await opened[0].reader.readuntil(b'{"status":"ok"}')  # the server has seen all three
        refused = await get_health(server)
        assert refused.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in refused
        assert refusals("503") == before + 1
    # The WebSocket closed: its slot is free again.
    await eventually(lambda: _answers_200(server), timeout=5)


async def _answers_200(server: RunningServer) -> bool:
    return (await get_health(server)).startswith(b"HTTP/1.1 200 ")


async def test_past_the_global_cap_a_connection_gets_503(
    server_factory: ServerFactory, opened: list[Raw]
) -> None:
    server = await server_factory(server={"max_connections": 2})
    opened.extend([await Raw.open(server), await Raw.open(server)])
    for raw in opened:
        await raw.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await raw.reader.readuntil(b'{"status":"ok"}')
    assert (await get_health(server)).startswith(b"HTTP/1.1 503 ")
    opened.pop().close()
    await eventually(lambda: _answers_200(server), timeout=5)


async def test_a_refused_connection_is_logged_without_secrets(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await server_factory(server={"max_connections": 1})
    holder = await Raw.open(server)
    await holder.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await holder.reader.readuntil(b'{"status":"ok"}')
    with caplog.at_level("INFO", logger="dari.refusals"):
        raw = await Raw.open(server)
        await raw.send(b"GET /ws/chat/x?token=s3cret-token HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await raw.read_until_closed(5)).startswith(b"HTTP/1.1 503 ")
        raw.close()
    holder.close()
    (record,) = [r for r in caplog.records if r.name == "dari.refusals"]
    assert record.levelname == "INFO" and "503" in record.getMessage()
    assert "s3cret-token" not in record.getMessage()
    with contextlib.suppress(Exception):
        await holder.writer.wait_closed()
