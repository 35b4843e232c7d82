"""Baseline: a bare ``picows`` server (Cython WebSocket framing) with the same streaming.

Callbacks receive frames; each chat runs as a task that sends ``start``, one ``response`` per
word paced at ``--delay-ms``, then ``end``. ``{"type": "broadcast", "content": ...}`` is sent on
to every open socket (the fan-out scenario). Run: ``python ws_picows.py --port 8803``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

PIECE = re.compile(r"\s*\S+\s*")
TEXT = WSMsgType.TEXT


async def stream(transport: WSTransport, text: str, interval: float) -> None:
    transport.send(TEXT, orjson.dumps({"type": "start"}))
    t0 = time.monotonic()
    for n, piece in enumerate(PIECE.findall(text) or [text]):
        # Due at t0 + (n+1)*interval (absolute); sleep(0) when late: no loop hogging.
        await asyncio.sleep(max(0.0, t0 + (n + 1) * interval - time.monotonic()))
        if transport.is_disconnected:
            return
        transport.send(TEXT, orjson.dumps({"type": "response", "content": piece, "seq": n}))
    transport.send(TEXT, orjson.dumps({"type": "end"}))


class ChatListener(WSListener):  # type: ignore[misc]
    def __init__(
        self, interval: float, tasks: set[asyncio.Task[None]], peers: set[WSTransport]
    ) -> None:
        self.interval = interval
        self.tasks = tasks
        self.peers = peers

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.peers.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.peers.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != TEXT:
            return
        msg = orjson.loads(frame.get_payload_as_bytes())
        if msg.get("type") == "chat":
            task = asyncio.get_running_loop().create_task(
                stream(transport, msg["message"], self.interval)
            )
            self.tasks.add(task)  # keep a reference until done
            task.add_done_callback(self.tasks.discard)
        elif msg.get("type") == "broadcast":
            # Fan-out: one encoded frame to every open socket.
            payload = orjson.dumps({"type": "broadcast", "content": msg["content"]})
            for peer in list(self.peers):
                peer.send(TEXT, payload)


async def main(host: str, port: int, interval: float) -> None:
    tasks: set[asyncio.Task[None]] = set()
    peers: set[WSTransport] = set()

    def factory(request: WSUpgradeRequest) -> ChatListener:
        return ChatListener(interval, tasks, peers)

    server = await ws_create_server(factory, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8803)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port, args.delay_ms / 1000))
