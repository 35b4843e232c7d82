"""A TCP proxy on loopback that cuts or freezes connections on command.

Cuts come in four kinds: a clean TCP close (FIN) or a reset (RST), towards the client or
towards the server. Freezing stops forwarding in both directions without closing anything, as
a dead network path would.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from dataclasses import dataclass, field

CUT_KINDS = ("fin_client", "rst_client", "fin_server", "rst_server")
_CLIENT_ID = re.compile(rb"GET /ws/chat/([A-Za-z0-9._:-]+)")


@dataclass(eq=False)
class _Pair:
    client_id: str
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    frozen: asyncio.Event = field(default_factory=asyncio.Event)  # set = forwarding stopped
    downstream_only: bool = False  # freeze only server -> client
    paused: asyncio.Event = field(default_factory=asyncio.Event)  # set = stop reading the server


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ChaosProxy:
    """With several ``target_ports``, each new connection goes to the next one in turn (a load
    balancer without sticky sessions: a reconnecting client lands on another node)."""

    def __init__(self, target_port: int, *more_ports: int) -> None:
        self.target_port = target_port
        self.target_ports = [target_port, *more_ports]
        self.pairs: set[_Pair] = set()
        self.accepted = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for pair in list(self.pairs):
            self._close(pair, "fin_client")
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            first = await reader.read(65536)
            port = self.target_ports[self.accepted % len(self.target_ports)]
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.transport.abort()
            return
        match = _CLIENT_ID.search(first)
        pair = _Pair(match.group(1).decode() if match else "", writer, up_writer)
        self.pairs.add(pair)
        up_writer.write(first)
        pair.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, pair, upstream=True)),
            asyncio.create_task(self._pump(up_reader, writer, pair, upstream=False)),
        ]
        await asyncio.wait(pair.tasks, return_when=asyncio.FIRST_COMPLETED)
        self._close(pair, "fin_client")

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: _Pair,
        *,
        upstream: bool,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while True:
                if not upstream and pair.paused.is_set():
                    # A reader that stopped reading: the server's TCP send buffer fills up.
                    await asyncio.Event().wait()
                data = await reader.read(65536)
                if not data:
                    return
                if pair.frozen.is_set() and (not upstream or not pair.downstream_only):
                    continue  # a dead path: bytes vanish
                writer.write(data)
                await writer.drain()

    def _close(self, pair: _Pair, kind: str) -> None:
        if pair not in self.pairs:
            return
        self.pairs.discard(pair)
        first, second = (
            (pair.client, pair.upstream)
            if kind.endswith("client")
            else (pair.upstream, pair.client)
        )
        if kind.startswith("rst"):
            _reset(first)
        else:
            first.close()
        second.close()
        for task in pair.tasks:
            task.cancel()

    def connections(self, client_id: str) -> list[_Pair]:
        return [pair for pair in self.pairs if pair.client_id == client_id]

    def cut(self, client_id: str, kind: str) -> int:
        """Cut every live connection of ``client_id``; returns how many were cut."""
        pairs = self.connections(client_id)
        for pair in pairs:
            self._close(pair, kind)
        self.cuts += len(pairs)
        return len(pairs)

    def freeze(self, client_id: str, *, downstream_only: bool = False) -> int:
        """Drop bytes silently (both ways, or only server -> client)."""
        pairs = self.connections(client_id)
        for pair in pairs:
            pair.downstream_only = downstream_only
            pair.frozen.set()
        return len(pairs)

    def pause_reading(self, client_id: str) -> int:
        """Stop reading what the server sends to this client, as a stalled reader would."""
        pairs = self.connections(client_id)
        for pair in pairs:
            pair.paused.set()
        return len(pairs)
