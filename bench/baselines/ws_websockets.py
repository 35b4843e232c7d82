"""Baseline: a bare ``websockets`` asyncio server that streams an echo answer token by token.

On ``{"type": "chat", "message": ...}`` it sends ``start``, one ``response`` frame per word
(paced at ``--delay-ms`` on an absolute schedule), then ``end``. This is the least a hand-rolled
gateway does; dari is compared against it. ``{"type": "broadcast", "content": ...}`` is sent on
to every open socket with ``websockets.broadcast`` (the fan-out scenario).
Run: ``python ws_websockets.py --port 8801``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

PIECE = re.compile(r"\s*\S+\s*")


async def stream(ws: ServerConnection, text: str, interval: float) -> None:
    await ws.send(orjson.dumps({"type": "start"}).decode())
    t0 = time.monotonic()
    for n, piece in enumerate(PIECE.findall(text) or [text]):
        # Piece n is due at t0 + (n+1)*interval, like dari's echo agent (a pause before each
        # piece), on an absolute schedule so slow sends do not slow the source; sleep(0) when
        # late, as a real upstream read would yield.
        await asyncio.sleep(max(0.0, t0 + (n + 1) * interval - time.monotonic()))
        frame = {"type": "response", "content": piece, "seq": n}
        await ws.send(orjson.dumps(frame).decode())
    await ws.send(orjson.dumps({"type": "end"}).decode())


async def main(host: str, port: int, interval: float) -> None:
    peers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        peers.add(ws)
        try:
            async for raw in ws:
                msg = orjson.loads(raw)
                if msg.get("type") == "chat":
                    await stream(ws, msg["message"], interval)
                elif msg.get("type") == "broadcast":
                    # Fan-out with the library's own helper: one encoding, no await per socket.
                    frame = {"type": "broadcast", "content": msg["content"]}
                    broadcast(peers, orjson.dumps(frame).decode())
        finally:
            peers.discard(ws)

    # compression=None: permessage-deflate costs ~30% throughput (PERF-NOTES).
    async with serve(handler, host, port, compression=None, backlog=4096) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port, args.delay_ms / 1000))
